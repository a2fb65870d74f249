"""The one HTTP layer the Twilio client and every HTTP sink share.

- :mod:`poller.http.transport`: the user agent, HTTP Basic, the pooled transport (unless one is
  injected: tests pass ``httpx.MockTransport``), the shared ``httpx.AsyncClient``, and the one
  translation of what a transport raises into :class:`~poller.http.failures.NoAnswer`;
- :mod:`poller.http.body`: one bounded read of an answer's body (chunks, a byte cap, gzip and
  deflate inflated within the cap);
- :mod:`poller.http.status`: what a status means (2xx, redirect, 429, 4xx, 5xx, ...) and
  ``Retry-After``.

The layer raises only its own failures (:mod:`poller.http.failures`); the Twilio client turns
them into ``SourceError``s and the sinks into ``DeliveryError``s, with their own messages.
"""

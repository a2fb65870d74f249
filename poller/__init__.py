"""twilio-proxy-poller: every Twilio Proxy Interaction, delivered."""

from poller.http.tls import defer_aiohttp_ca_loads

__version__ = "0.1.0"

# Here, before any module of the package can import aiohttp (see poller.http.tls).
defer_aiohttp_ca_loads()

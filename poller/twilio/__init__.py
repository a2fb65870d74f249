"""The Twilio Proxy API client: HTTP, paging, rate limit, errors, typed records."""

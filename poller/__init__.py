"""twilio-proxy-poller: every Twilio Proxy Interaction, delivered."""

__version__ = "0.1.0"

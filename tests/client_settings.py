"""The settings a test's ProxyClient reads (what ``TwilioConfig`` gives the real one)."""

from __future__ import annotations

from dataclasses import dataclass

BASE = "https://proxy.twilio.com"
ACCOUNT = "AC" + "0" * 32
TOKEN = "token-" + "f" * 26


@dataclass(frozen=True)
class ClientSettings:
    base_url: str = BASE
    page_size: int = 50
    max_requests_per_second: float = 1000.0
    max_concurrency: int = 8
    timeout_seconds: float = 5.0
    retry_deadline_seconds: float = 60.0
    account_sid: str = ACCOUNT
    auth_token: str = TOKEN

    @property
    def credentials(self) -> tuple[str, str]:
        return self.account_sid, self.auth_token

"""Who may see and steer the dashboard: whoever holds `WA_DASHBOARD_TOKEN`.

A person opens the link `/ui/login?token=...` (what `make run` prints) or types the token
into the login form, and gets a cookie (HttpOnly, SameSite=Strict, so other sites cannot
post actions with it); a script sends `Authorization: Bearer <token>`. The cookie holds an
HMAC of the token, not the token. Without a configured token the dashboard is off.

The JSON endpoints that name sessions and phone numbers (/nodes, /sessions) ask for the
same token (api.py); the probe and the scrape endpoints (/healthz, /metrics) stay open:
Kubernetes and Prometheus call them from inside the cluster.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import HTTPException, Request, status
from pydantic import SecretStr

COOKIE = "wa_dashboard"


class Gate:
    def __init__(self, token: SecretStr) -> None:
        self._token = token.get_secret_value().encode()

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def cookie_value(self) -> str:
        return hmac.new(self._token, b"wa-dashboard-cookie", hashlib.sha256).hexdigest()

    def accepts_token(self, token: str | None) -> bool:
        return self.enabled and token is not None and hmac.compare_digest(token.encode(), self._token)

    def allows(self, request: Request) -> bool:
        if not self.enabled:
            return False
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.accepts_token(bearer.strip()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.cookie_value().encode())

    def check_page(self, request: Request) -> None:
        """A page: without the token, to the login form (the page comes back after it)."""
        self._check_enabled()
        if not self.allows(request):
            raise HTTPException(status.HTTP_303_SEE_OTHER, headers={"Location": f"/ui/login?next={request.url.path}"})

    def check_data(self, request: Request) -> None:
        """Fragments, live streams and actions: 401 without the token (a page that asks, its
        login having expired, is sent to the login form: htmx follows HX-Redirect)."""
        self._check_enabled()
        if not self.allows(request):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "log in to the dashboard first (/ui/login)",
                headers={"HX-Redirect": "/ui/login"},
            )

    def _check_enabled(self) -> None:
        if not self.enabled:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "the dashboard is off: set WA_DASHBOARD_TOKEN to turn it on"
            )

"""Who may see the dashboard and who may act through it: HTTP basic auth
(any user name, the password compared in constant time), the CSRF token
every action form carries, and the same-origin check on actions."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from urllib.parse import urlsplit

from werkzeug.wrappers import Request

log = logging.getLogger("greenq.web")

REALM = "greenq"


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine: the only
    addresses `greenq web` serves on without a password."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class Guard:
    """The app's gate. `password` None: no login (loopback use); `secret`:
    the CSRF token, shared by every process that serves the same dashboard
    (a pre-fork server's workers); None draws one for this process."""

    def __init__(self, password: str | None, secret: str | None = None) -> None:
        if password is not None and not isinstance(password, str):
            raise TypeError(f"password must be a str or None, not {type(password).__name__}")
        if password == "":
            raise ValueError("password must not be empty (None: no password)")
        if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
            raise ValueError("secret must be a str of at least 16 characters (None: a random one)")
        self._password = password.encode() if password is not None else None
        self.csrf_token = secret if secret is not None else secrets.token_urlsafe(32)

    @property
    def needs_login(self) -> bool:
        return self._password is not None

    def logged_in(self, request: Request) -> bool:
        """Whether the request may see anything at all."""
        if self._password is None:
            return True
        given = request.authorization
        if given is None or given.type != "basic" or given.password is None:
            return False
        # compare_digest on bytes: the time taken does not tell how much matched.
        return hmac.compare_digest(given.password.encode(), self._password)

    def action_refusal(self, request: Request) -> str | None:
        """Why a POST may not act (a cross-site request), or None when it may."""
        token = request.form.get("csrf", "")
        if not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            return "the form's security token is missing or wrong (reload the page and try again)"
        # The token is the defence; the origin check catches a leaked token
        # used from another site. Browsers send Origin on every POST, so a
        # request with neither header is not a browser's form.
        origin = request.headers.get("Origin")
        if origin is None:
            referer = request.headers.get("Referer")
            if referer is None:
                return "the request has neither Origin nor Referer"
            parts = urlsplit(referer)
            origin = f"{parts.scheme}://{parts.netloc}"
        if origin.rstrip("/") != request.host_url.rstrip("/"):
            log.warning("refused a cross-site action from %r", origin[:200])
            return "the request comes from another site"
        return None

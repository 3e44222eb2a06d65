"""Reviewer authentication for the console, separate from the OTLP receivers' tokens.

A reviewer is known by one of:

- a token from ``console.auth.tokens`` or ``console.auth.tokens_file`` (``reviewer: token`` per line, the token
  plain or ``sha256:<hex>``; the same file format and checks as the receivers' tokens file), presented once at
  ``POST /login`` (which opens a session) or on every request as ``Authorization: Bearer <token>``;
- the header ``console.auth.trusted_header`` set by an SSO proxy, believed only when the connection comes from one
  of ``console.auth.trusted_proxies``;
- on a loopback console without configured credentials, the one-time login token made at start.

Sessions live in memory (a restart signs everyone out): a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie
(``Secure`` under TLS) that expires after ``console.session_ttl``. Each session has its own CSRF token, required by
``POST /logout``; ``POST /login`` checks a double-submit CSRF cookie. Tokens are compared by SHA-256 digest in
constant time and never logged, echoed or put in a URL.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from collector.configtypes import Duration
from collector.console.settings import ConsoleAuthConfig
from collector.receivers.auth import (
    AuthTokenConfig,
    InvalidToken,
    ReceiverAuthConfig,
    TokenAuthenticator,
    token_digest,
)

SESSION_COOKIE = "ccbridge_console"
CSRF_COOKIE = "ccbridge_console_csrf"
MAX_SESSIONS = 10_000


@dataclass
class Session:
    reviewer: str
    expires: float
    csrf: str


class ReviewerAuth:
    """Who a console request comes from: bearer token, session cookie or trusted proxy header."""

    def __init__(
        self,
        cfg: ConsoleAuthConfig,
        *,
        session_ttl: float,
        one_time_token: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.session_ttl = session_ttl
        self.clock = clock
        self.tokens: TokenAuthenticator | None = None
        if cfg.tokens or cfg.tokens_file:
            # the receivers' token checker, fed the console's own token list: same file format, hashing and reload
            self.tokens = TokenAuthenticator(
                ReceiverAuthConfig(
                    tokens=[AuthTokenConfig(t.token, t.reviewer) for t in cfg.tokens],
                    tokens_file=cfg.tokens_file,
                    reload_interval=Duration(5.0),
                )
            )
        self.proxies = cfg.proxy_networks()
        self.one_time: str | None = secrets.token_urlsafe(32) if one_time_token else None
        self._one_time_digest = token_digest(self.one_time) if self.one_time else None
        self.sessions: dict[str, Session] = {}

    # -- tokens ---------------------------------------------------------------------------------------------------

    def reviewer_of_token(self, token: str) -> str | None:
        """The reviewer a console token names, or None. The one-time token is not accepted here."""
        if self.tokens is None:
            return None
        try:
            return self.tokens.identify(token)
        except InvalidToken:
            return None

    def redeem_one_time(self, token: str) -> bool:
        """True (once) for the one-time login token; it is void afterwards."""
        if self._one_time_digest is None:
            return False
        if hmac.compare_digest(self._one_time_digest, token_digest(token)):
            self._one_time_digest = None
            self.one_time = None
            return True
        return False

    def login(self, token: str) -> str | None:
        """The reviewer for a login with ``token`` (a reviewer token or the one-time token), or None."""
        reviewer = self.reviewer_of_token(token)
        if reviewer is not None:
            return reviewer
        if self.redeem_one_time(token):
            return "local"
        return None

    # -- proxy header ---------------------------------------------------------------------------------------------

    def reviewer_from_proxy(self, remote: str | None, value: str | None) -> str | None:
        """The trusted header's user name when the peer is a trusted proxy; None otherwise."""
        if not self.cfg.trusted_header or not remote or not value:
            return None
        try:
            addr = ipaddress.ip_address(remote)
        except ValueError:
            return None
        if not any(addr in net for net in self.proxies):
            return None
        name = value.strip()
        if not name or len(name) > 256 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            return None
        return name

    # -- sessions -------------------------------------------------------------------------------------------------

    def open_session(self, reviewer: str) -> tuple[str, Session]:
        self._expire()
        while len(self.sessions) >= MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))
        sid = secrets.token_urlsafe(32)
        session = Session(reviewer, self.clock() + self.session_ttl, secrets.token_urlsafe(24))
        self.sessions[sid] = session
        return sid, session

    def session(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self.sessions.get(sid)
        if s is None:
            return None
        if s.expires <= self.clock():
            self.sessions.pop(sid, None)
            return None
        return s

    def close_session(self, sid: str | None) -> None:
        if sid:
            self.sessions.pop(sid, None)

    def _expire(self) -> None:
        now = self.clock()
        for sid in [k for k, s in self.sessions.items() if s.expires <= now]:
            del self.sessions[sid]

    # -- CSRF -----------------------------------------------------------------------------------------------------

    @staticmethod
    def new_login_csrf() -> str:
        """A fresh double-submit token for the sign-in form (also set as a cookie scoped to ``/login``)."""
        return secrets.token_urlsafe(24)

    @staticmethod
    def check_login_csrf(cookie: str | None, form: str) -> bool:
        return bool(cookie) and bool(form) and hmac.compare_digest(cookie.encode(), form.encode())

    @staticmethod
    def same(expected: str, given: str) -> bool:
        return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())

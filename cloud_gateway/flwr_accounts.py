"""Operators' sessions for Flower's CLI (``flwr login``): a device-code login approved by a
signed-in operator on the web page, then access and refresh tokens.

The CLI asks for a login and gets a device code (its secret) and a short user code (shown on
the page it opens); an operator signed in to the web interface approves the user code; the
CLI's next poll with its device code gets the tokens, once. Every code and token is random,
kept only as its SHA-256 hash, expires, and can be revoked; the operator token never leaves
the gateway. Sessions live in this gateway's memory: a restarted gateway has none (the CLI
logs in again), and behind several gateways a CLI must reach the one it logged in with.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
"""Letters a person reads back without confusion (no vowels: no words, no 0/O or 1/I)."""
USER_CODE_LENGTH = 8
MAX_PENDING = 256
MAX_SESSIONS = 1024


class LoginRefused(Exception):
    """A login, a token or a code that is unknown, expired or revoked."""


def digest(secret: str) -> str:
    """What is kept of a code or token: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_user_code() -> str:
    """A short code shown to the operator, e.g. ``KMTR-QXBD``."""
    letters = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
    return f"{letters[:4]}-{letters[4:]}"


def normal_user_code(text: str) -> str:
    """A user code as typed (any case, with or without its dash) in its one spelling."""
    letters = "".join(c for c in text.upper() if c.isalpha())
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == USER_CODE_LENGTH else ""


@dataclass(frozen=True)
class PendingLogin:
    """What ``flwr login`` is given to start with."""

    device_code: str
    user_code: str
    expires_in: int


@dataclass(frozen=True)
class Tokens:
    """A session's tokens, handed to the CLI once."""

    access_token: str
    refresh_token: str


@dataclass
class _Pending:
    user_code: str
    expires_at: float
    approved: bool = False


@dataclass
class _Session:
    session_id: str
    created_at: float
    access_hash: str
    access_expires_at: float
    refresh_hash: str
    refresh_expires_at: float


@dataclass(frozen=True)
class SessionView:
    """A session as operators see it (never a token)."""

    session_id: str
    created_at: float
    expires_at: float


@dataclass
class FlowerAccounts:
    """Pending logins and sessions (thread-safe; ``clock`` in seconds, for tests)."""

    login_ttl_s: int = 600
    access_ttl_s: int = 3600
    refresh_ttl_s: int = 7 * 24 * 3600
    clock: Callable[[], float] = time.time
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _sessions: dict[str, _Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _prune(self, now: float) -> None:
        self._pending = {k: v for k, v in self._pending.items() if v.expires_at > now}
        self._sessions = {k: v for k, v in self._sessions.items()
                          if v.refresh_expires_at > now}

    def begin(self) -> PendingLogin:
        """A new pending login; LoginRefused when too many wait already."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            if len(self._pending) >= MAX_PENDING:
                raise LoginRefused("too many logins are waiting for approval; try again later")
            device_code = secrets.token_urlsafe(32)
            taken = {p.user_code for p in self._pending.values()}
            user_code = new_user_code()
            while user_code in taken:
                user_code = new_user_code()
            self._pending[digest(device_code)] = _Pending(user_code, now + self.login_ttl_s)
        return PendingLogin(device_code, user_code, self.login_ttl_s)

    def approve(self, user_code: str) -> None:
        """An operator approves the pending login showing ``user_code``."""
        wanted = normal_user_code(user_code)
        now = self.clock()
        with self._lock:
            self._prune(now)
            for pending in self._pending.values():
                if wanted and hmac.compare_digest(pending.user_code, wanted):
                    pending.approved = True
                    return
        raise LoginRefused("no login is waiting with that code (it may have expired)")

    def poll(self, device_code: str) -> Tokens | None:
        """The CLI's poll: its tokens once approved (then the login is gone), None while it
        waits; LoginRefused for a code that is unknown or expired."""
        now = self.clock()
        key = digest(device_code)
        with self._lock:
            self._prune(now)
            pending = self._pending.get(key)
            if pending is None:
                raise LoginRefused("this login is unknown or expired; run flwr login again")
            if not pending.approved:
                return None
            del self._pending[key]
            return self._open(now, secrets.token_hex(8))

    def _open(self, now: float, session_id: str) -> Tokens:
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.created_at)
            del self._sessions[oldest.session_id]
        tokens = Tokens(secrets.token_urlsafe(32), secrets.token_urlsafe(32))
        self._sessions[session_id] = _Session(
            session_id, now, digest(tokens.access_token), now + self.access_ttl_s,
            digest(tokens.refresh_token), now + self.refresh_ttl_s)
        return tokens

    def refresh(self, refresh_token: str) -> Tokens:
        """New tokens for a session's refresh token (both old tokens stop working)."""
        now = self.clock()
        wanted = digest(refresh_token)
        with self._lock:
            self._prune(now)
            for session in self._sessions.values():
                if hmac.compare_digest(session.refresh_hash, wanted):
                    del self._sessions[session.session_id]
                    return self._open(now, session.session_id)
        raise LoginRefused("this session is unknown, expired or revoked; run flwr login")

    def session_of(self, access_token: str) -> str | None:
        """The session an access token belongs to, if it is valid now."""
        now = self.clock()
        wanted = digest(access_token)
        with self._lock:
            for session in self._sessions.values():
                if (hmac.compare_digest(session.access_hash, wanted)
                        and session.access_expires_at > now):
                    return session.session_id
        return None

    def sessions(self) -> list[SessionView]:
        """Every live session, oldest first."""
        now = self.clock()
        with self._lock:
            self._prune(now)
            return [SessionView(s.session_id, s.created_at, s.refresh_expires_at)
                    for s in sorted(self._sessions.values(), key=lambda s: s.created_at)]

    def revoke(self, session_id: str | None = None) -> int:
        """Refuse one session's tokens (all sessions' without an id) at once; how many."""
        with self._lock:
            if session_id is None:
                count = len(self._sessions)
                self._sessions.clear()
                return count
            return 1 if self._sessions.pop(session_id, None) is not None else 0

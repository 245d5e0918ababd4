"""JWT authentication for the websocket handshake, and the Origin check against cross-site hijacking.

Tokens are verified before the websocket is accepted. Algorithms are pinned by configuration ('none'
is never accepted), `exp` and `sub` are required, `aud`/`iss` are checked when configured.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt

from realtime.config import Settings
from realtime.errors import AuthError, ConfigError

TOKEN_COOKIE = "access_token"
TOKEN_QUERY = "access_token"
MAX_TOKEN_LEN = 8192
ADMIN_ROLE = "admin"
_SYMMETRIC = {"HS256", "HS384", "HS512"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end: the token's subject and whether it carries the admin role."""

    user: str
    admin: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict)


def load_or_create_secret(state_dir: Path) -> str:
    """The dev signing secret: kept in state_dir/jwt_secret (mode 0600) so `token` and `serve` agree."""
    path = state_dir / "jwt_secret"
    if path.is_file():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)
    return secret


class TokenAuthority:
    """Verifies tokens for the server and issues them for the `token` command and tests."""

    def __init__(self, settings: Settings) -> None:
        self.algorithms = list(settings.jwt_algorithms)
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        symmetric = all(a in _SYMMETRIC for a in self.algorithms)
        if symmetric:
            secret = settings.jwt_secret or load_or_create_secret(settings.state_dir)
            if len(secret.encode()) < 32:
                raise ConfigError("REALTIME_JWT_SECRET must be at least 32 bytes for HMAC tokens")
            self._verify_key: Any = secret
            self._sign_key: Any = secret
        else:
            if any(a in _SYMMETRIC for a in self.algorithms):
                raise ConfigError("REALTIME_JWT_ALGORITHMS mixes HMAC and public-key algorithms")
            if settings.jwt_public_key_file is None:
                raise ConfigError("REALTIME_JWT_PUBLIC_KEY_FILE is required for public-key algorithms")
            self._verify_key = settings.jwt_public_key_file.read_text()
            self._sign_key = None

    def verify(self, token: str) -> Principal:
        if not token or len(token) > MAX_TOKEN_LEN:
            raise AuthError("missing or oversized token")
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid token") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip() or len(sub) > 256:
            raise AuthError("invalid token subject")
        roles = claims.get("roles")
        admin = claims.get("role") == ADMIN_ROLE or (isinstance(roles, list) and ADMIN_ROLE in roles)
        return Principal(user=sub, admin=admin, claims=claims)

    def issue(self, user: str, *, ttl: float = 3600.0, admin: bool = False, now: float | None = None) -> str:
        if self._sign_key is None:
            raise ConfigError("this server only verifies public-key tokens; it cannot issue them")
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {"sub": user, "iat": issued, "exp": issued + int(ttl)}
        if admin:
            claims["role"] = ADMIN_ROLE
        if self.audience:
            claims["aud"] = self.audience
        if self.issuer:
            claims["iss"] = self.issuer
        return jwt.encode(claims, self._sign_key, algorithm=self.algorithms[0])


def token_from_request(headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """Bearer header first, then the cookie, then the query parameter (browsers cannot set headers)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return cookies.get(TOKEN_COOKIE) or query.get(TOKEN_QUERY) or None


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin (a program, not a browser) is fine; a browser Origin must be same-host or allow-listed."""
    if origin is None:
        return True
    if "*" in allowed:
        return True
    origin = origin.strip().rstrip("/").lower()
    if origin in {a.rstrip("/").lower() for a in allowed}:
        return True
    if origin == "null" or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in {"http", "https"} and parts.netloc == host.strip().lower()

"""API keys with scopes, stored hashed, and the security headers of every response.

A key is a random token the client sends in ``X-API-Key``. The server keeps only its SHA-256
(``sha256:<hex>``): keys are 32 random bytes, so a fast hash is enough (there is nothing to brute-force
that a slow hash would protect) and checking one costs a hash and a dict lookup, not a scrypt per request.
``avrec keys new --scopes write`` makes a key and prints the ``[[serve.api_keys]]`` entry to paste.

Scopes: ``read`` (GET endpoints; only enforced with ``serve.read_requires_key``), ``write`` (feedback,
items) and ``admin`` (reload, promote, rollback). ``admin`` includes ``write``, and ``write`` includes
``read``. The old single ``serve.api_key`` / ``AVREC_API_KEY`` (plain text) still works and has every
scope; ``avrec keys hash`` turns it into an entry of ``serve.api_keys`` so the plain key can leave the
config.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from avrec.errors import ConfigError

SCOPES = ("read", "write", "admin")
#: what each scope includes
IMPLIES = {"read": {"read"}, "write": {"read", "write"}, "admin": {"read", "write", "admin"}}
HASH_PREFIX = "sha256:"

#: the web page and the dashboard load only their own scripts and styles; images may come from anywhere
#: over https (posters in item metadata)
DEFAULT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
#: Swagger UI and ReDoc (fastapi-offline) start from an inline script
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")


def hash_key(key: str) -> str:
    """The stored form of an API key: ``sha256:`` and the hex digest."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (32 bytes, URL-safe)."""
    return "avk_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKey:
    """One configured key: its name (for logs and rate limits), hash, scopes and optional own rate."""

    name: str
    hash: str
    scopes: frozenset[str]
    rate: float | None = None

    def allows(self, scope: str) -> bool:
        return any(scope in IMPLIES[s] for s in self.scopes)


def parse_keys(entries: list[Any], where: str = "serve.api_keys") -> dict[str, ApiKey]:
    """Hash → key of the ``[[serve.api_keys]]`` entries (``name``, ``hash``, ``scopes``, optional ``rate``);
    one :class:`~avrec.errors.ConfigError` naming the entry and field that is wrong."""
    out: dict[str, ApiKey] = {}
    for n, entry in enumerate(entries):
        at = f"{where}[{n}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: expected a table with name, hash and scopes, not {entry!r}")
        unknown = sorted(set(entry) - {"name", "hash", "scopes", "rate"})
        if unknown:
            raise ConfigError(f"{at}.{unknown[0]}: unknown field (expected name, hash, scopes, rate)")
        digest = str(entry.get("hash", ""))
        if not digest.startswith(HASH_PREFIX) or len(digest) != len(HASH_PREFIX) + 64:
            raise ConfigError(f"{at}.hash: expected 'sha256:' and 64 hex digits (make one with `avrec keys new` "
                              f"or `avrec keys hash`), not {digest[:20]!r}")
        scopes = entry.get("scopes", ["read"])
        if isinstance(scopes, str):
            scopes = [s.strip() for s in scopes.split(",") if s.strip()]
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise ConfigError(f"{at}.scopes: {bad[0] if bad else 'nothing'!r} is not a scope; use some of "
                              f"{', '.join(SCOPES)}")
        rate = entry.get("rate")
        if rate is not None and (not isinstance(rate, (int, float)) or rate < 0):
            raise ConfigError(f"{at}.rate: expected requests per second (a number ≥ 0), not {rate!r}")
        name = str(entry.get("name") or f"key{n}")
        if digest in out:
            raise ConfigError(f"{at}.hash: the same key as {out[digest].name!r}")
        out[digest] = ApiKey(name, digest, frozenset(scopes), None if rate is None else float(rate))
    return out


class KeyRing:
    """The configured keys and the check of a request's ``X-API-Key`` against a route's scope."""

    def __init__(self, keys: dict[str, ApiKey], legacy: str | None, insecure_dev: bool) -> None:
        self.keys = keys
        self.legacy = legacy  # the plain-text serve.api_key / AVREC_API_KEY: every scope
        self.insecure_dev = insecure_dev

    @property
    def configured(self) -> bool:
        return bool(self.keys) or self.legacy is not None

    def identify(self, given: str | None) -> ApiKey | None:
        """The key ``given`` is, or None (no key or an unknown one)."""
        if not given:
            return None
        if self.legacy is not None and hmac.compare_digest(given.encode(), self.legacy.encode()):
            return ApiKey("api_key", "", frozenset({"admin"}))
        return self.keys.get(hash_key(given))

    def problem(self, given: str | None, scope: str) -> tuple[int, str] | None:
        """Why a request needing ``scope`` with ``X-API-Key: given`` is refused, as (status, message)."""
        return self.check(self.identify(given) if self.configured else None, scope)

    def check(self, key: ApiKey | None, scope: str) -> tuple[int, str] | None:
        """:meth:`problem` for a key already identified (the middleware hashes a key once per request)."""
        if not self.configured:
            if self.insecure_dev:
                return None
            return 403, ("writes are disabled: no API key is configured (set AVREC_API_KEY or serve.api_keys, "
                         "or start a local demo with --insecure-dev)")
        if key is None:
            return 401, "missing or wrong X-API-Key header"
        if not key.allows(scope):
            return 403, f"the API key {key.name!r} lacks the {scope!r} scope (it has {', '.join(sorted(key.scopes))})"
        return None


def security_headers(csp: str, frame_options: str = "DENY") -> list[tuple[bytes, bytes]]:
    """The headers added to every response (raw ASGI form)."""
    headers = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", frame_options.encode()),
               (b"referrer-policy", b"no-referrer"), (b"cross-origin-opener-policy", b"same-origin")]
    if csp:
        headers.append((b"content-security-policy", csp.encode()))
    return headers

"""Service settings: ``avrec serve`` flags and the ``[serve]`` table of a config file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from avrec.errors import ConfigError
from avrec.policies.base import PolicyConfig
from avrec.policies.rewards import RewardConfig
from avrec.serve.rerank import RerankConfig
from avrec.serve.security import DEFAULT_CSP, SCOPES, KeyRing, parse_keys
from avrec.serve.store import DEFAULT_RATING_THRESHOLD

#: the lists a policy may choose (``explore_endpoints``)
ENDPOINTS = ("recommend", "similar", "search")
#: the largest ``k`` a request may ask for
MAX_K = 1000
#: 32 MiB: 10,000 catalogue items of about 3 kB of JSON each (title, genres, tags, people, an overview)
DEFAULT_MAX_BODY_BYTES = 32 * 2**20


@dataclass
class ServeConfig:
    """Service settings (``avrec serve`` flags and the ``[serve]`` table of a config file).

    ``api_key``: a plain-text key with every scope (``AVREC_API_KEY`` wins when set); kept for existing
    configs, ``api_keys`` is the hashed form (:mod:`avrec.serve.security`).
    ``api_keys``: ``[[serve.api_keys]]`` entries ``{name, hash = "sha256:…", scopes = [read|write|admin], rate}``
    (``avrec keys new`` makes one). ``read_requires_key``: GET endpoints need a key with the read scope too.
    ``insecure_dev``: accept writes without a key when none is configured (local demos only).
    ``rate_limit``: requests a second per API key (per client address without one; 0: no limit), with
    bursts up to ``rate_burst`` (0: twice the rate); 429 with ``Retry-After`` above it.
    ``request_timeout``: seconds a request may run before a 504 (0: no limit).
    ``cors_origins``: origins allowed to call the API from a browser (CORS; empty: same origin only).
    ``security_headers``: send nosniff, X-Frame-Options DENY, Referrer-Policy and ``content_security_policy``.
    ``watch_interval``: seconds between checks of the model folder for a new model (0 disables).
    ``search``: build the natural-language search index (at start-up, in the background).
    ``encoder``: text encoder for search when the model has no ``encode_query``.
    ``personal_weight``: weight of the user's model scores when /search is personalised.
    ``query_cache``: query vectors /search keeps (the same text is encoded once; 0: none).
    ``search_wait``: seconds a request waits for the search index being built before a 503.
    ``max_body_bytes``: the largest request body accepted (413 above it; 0 disables the limit). The
    default fits the largest batch, 10,000 items with long overviews in one ``POST /items``.
    ``policy``: the exploration policy of /recommend (greedy, epsilon, softmax, linucb, thompson) and
    ``exploration`` its settings (:class:`~avrec.policies.base.PolicyConfig`; its ``name`` is ``policy``).
    ``explore_endpoints``: which lists the policy chooses (``recommend``, ``similar``, ``search``; the others
    are greedy). Linear policies learn from /recommend impressions only.
    ``log_impressions``: log every served list in the store (:mod:`avrec.serve.impressions`).
    ``flush_impressions``: fsync every impression commit before the answer (off: committed before the
    answer, flushed to disk by the next feedback commit or checkpoint; feedback is always flushed).
    ``warm_pools``: how many of the model's users (most active first) get their /recommend candidates
    built in the background when a model is loaded, so their first request is answered from the cache
    (:mod:`avrec.serve.warm`; 0: none).
    ``rewards``: the reward of each feedback event (:class:`~avrec.policies.rewards.RewardConfig`).
    ``examination_decay``: slot j is examined with probability decay^(j-1) (position bias).
    ``rules``, ``profiles``, ``user_profiles``, ``default_profile``: content rules enforced on every
    endpoint (:mod:`avrec.pipeline.rules`, :mod:`avrec.serve.rules`): base rules, named profiles a request
    picks with ``profile=NAME``, the profile of each user id, and a profile for every request.
    ``rerank``: the popularity penalty and calibrated re-ranking of /recommend lists
    (:class:`~avrec.serve.rerank.RerankConfig`; off by default).
    ``disallowed_terms``: words masked in explanations and summaries and refused in generated rewrites
    (None: the default list of :mod:`avrec.explain.guard`; an empty list: none).
    """

    api_key: str | None = None
    api_keys: list[dict] = field(default_factory=list)
    read_requires_key: bool = False
    insecure_dev: bool = False
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    request_timeout: float = 30.0
    cors_origins: list[str] = field(default_factory=list)
    security_headers: bool = True
    content_security_policy: str = DEFAULT_CSP
    rating_threshold: float = DEFAULT_RATING_THRESHOLD
    watch_interval: float = 2.0
    search: bool = True
    encoder: str = "default"
    cache_dir: str | None = None
    personal_weight: float = 0.3
    query_cache: int = 4096
    search_wait: float = 120.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    policy: str = "greedy"
    exploration: PolicyConfig = field(default_factory=PolicyConfig)
    explore_endpoints: list[str] = field(default_factory=lambda: ["recommend"])
    log_impressions: bool = True
    flush_impressions: bool = False
    warm_pools: int = 4096
    rewards: RewardConfig = field(default_factory=RewardConfig)
    examination_decay: float = 0.85
    rules: dict = field(default_factory=dict)
    profiles: dict = field(default_factory=dict)
    user_profiles: dict = field(default_factory=dict)
    default_profile: str = ""
    rerank: RerankConfig = field(default_factory=RerankConfig)
    disallowed_terms: list[str] | None = None

    def __post_init__(self) -> None:
        bad = [e for e in self.explore_endpoints if e not in ENDPOINTS]
        if bad:
            raise ConfigError(f"serve.explore_endpoints: {bad[0]!r} is not one of {', '.join(ENDPOINTS)}")
        for name in ("warm_pools", "query_cache"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"serve.{name}: must be 0 (off) or more, not {getattr(self, name)}")
        for name in ("rate_limit", "rate_burst", "request_timeout"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"serve.{name}: must be 0 (off) or more, not {getattr(self, name)}")
        parse_keys(self.api_keys)  # one clear error at start-up for a malformed entry

    def effective_api_key(self) -> str | None:
        """The plain key (``AVREC_API_KEY`` or ``api_key``); without one, the first hashed key's hash, so a
        caller asking "is a key configured?" gets a truthy answer. None when no key is configured."""
        plain = os.environ.get("AVREC_API_KEY") or self.api_key or None
        if plain is None and self.api_keys:
            return str(self.api_keys[0].get("hash"))
        return plain

    def keyring(self) -> KeyRing:
        """The configured keys, built again only when the settings change (a request only hashes and looks up)."""
        plain = os.environ.get("AVREC_API_KEY") or self.api_key or None
        stamp = (plain, self.insecure_dev, id(self.api_keys), len(self.api_keys))
        cached = self.__dict__.get("_keyring")
        if cached is None or cached[0] != stamp:
            cached = self.__dict__["_keyring"] = (stamp, KeyRing(parse_keys(self.api_keys), plain, self.insecure_dev))
        return cached[1]

    def key_problem(self, given: str | None, scope: str = "write") -> tuple[int, str] | None:
        """Why a request needing ``scope`` (one of :data:`~avrec.serve.security.SCOPES`) with
        ``X-API-Key: given`` is refused, as (status, message); None when it may go on."""
        assert scope in SCOPES, scope
        return self.keyring().problem(given, scope)

"""API keys: loaded once, kept only as SHA-256 digests, compared in constant time.

A keys file (YAML or JSON) holds ``keys: [{name, key | key_sha256, models, priority, limits, budget,
team}]`` and, optionally, ``teams: [{name, budget}]``: spend budgets in USD per day or month
(``serve/budgets.py`` keeps them).
Plaintext keys are hashed as they are read and never kept. API keys are long random tokens, so
one SHA-256 is the right digest (as for other bearer tokens); a slow password hash would only
add latency to every request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from router.admission import Priority
from router.errors import AuthenticationError, ConfigError
from serve.config import AuthConfig, Frozen

log = logging.getLogger("tiergate.auth")

ENV_FILE = "TIERGATE_API_KEYS_FILE"
ENV_INLINE = "TIERGATE_API_KEYS"


class KeyLimits(Frozen):
    requests_per_minute: int | None = Field(default=None, ge=1)
    requests_per_day: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)


NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class SpendBudget(Frozen):
    """A spend limit in USD per period, for one key or one team of keys."""

    usd: float = Field(gt=0, le=1e9, description="USD that may be spent per period, at the pool's prices")
    period: Literal["day", "month"] = Field(default="day", description="the budget resets at midnight (day) or "
                                            "at midnight of the 1st (month), in timezone")
    timezone: str = Field(default="UTC", description="IANA time zone the period is counted in, e.g. Europe/Paris")
    zero_cost_models: bool = Field(default=False, description="once the budget is exhausted, models priced 0 "
                                   "(in and out) still answer; otherwise every request is refused until the reset")
    pacing: bool = Field(default=True, description="while spend runs ahead of even pace through the period, "
                         "lower the pool's default quality floor so routing prefers cheaper models")
    pace_full_at: float = Field(default=0.1, gt=0, le=1, description="ahead of even pace by this fraction of the "
                                "budget, the pool's default quality floor is dropped entirely (in between, in "
                                "proportion)")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Paris") from None
        return value


class Team(Frozen):
    name: str = Field(pattern=NAME)
    budget: SpendBudget


class ApiKey(Frozen):
    name: str = Field(pattern=NAME)
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    models: tuple[str, ...] = ("*",)
    priority: Priority = Priority.NORMAL
    limits: KeyLimits = KeyLimits()
    budget: SpendBudget | None = Field(default=None, description="this key's own spend budget")
    team: str | None = Field(default=None, pattern=NAME, description="a team in the file's teams: its budget is "
                             "shared by all its keys (and kept beside the key's own)")

    @model_validator(mode="before")
    @classmethod
    def _hash_plaintext(cls, data: object) -> object:
        if isinstance(data, dict) and "key" in data:
            data = dict(data)
            key = str(data.pop("key"))
            if len(key) < 16:
                raise ValueError("API keys must be at least 16 characters")
            data["key_sha256"] = digest(key)
        return data

    def allowed_models(self) -> frozenset[str] | None:
        return None if "*" in self.models else frozenset(self.models)


class KeyFile(Frozen):
    keys: tuple[ApiKey, ...] = Field(min_length=1)
    teams: tuple[Team, ...] = ()

    @model_validator(mode="after")
    def _budgets_are_unambiguous(self) -> KeyFile:
        teams = [t.name for t in self.teams]
        repeated = sorted({n for n in teams if teams.count(n) > 1})
        if repeated:
            raise ValueError(f"team names must be unique; repeated: {', '.join(repeated)}")
        unknown = sorted({k.team for k in self.keys if k.team is not None and k.team not in teams})
        if unknown:
            raise ValueError(f"keys name unknown team(s) {', '.join(unknown)}; teams: {', '.join(teams) or 'none'}")
        # spend is counted per key name: two budgeted keys of one name would share one budget
        budgeted = [k.name for k in self.keys if k.budget is not None or k.team is not None]
        names = [k.name for k in self.keys]
        shared = sorted({n for n in budgeted if names.count(n) > 1})
        if shared:
            raise ValueError(f"keys with a budget or a team need unique names; repeated: {', '.join(shared)}")
        return self

    def team(self, name: str | None) -> Team | None:
        return next((t for t in self.teams if t.name == name), None)


ANONYMOUS = ApiKey(name="anonymous", key_sha256="0" * 64)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _parse(text: str, source: str) -> KeyFile:
    try:
        data = yaml.safe_load(text)
        if isinstance(data, list):
            data = {"keys": data}
        return KeyFile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as err:
        raise ConfigError(f"invalid API keys in {source}: {err}") from None


def load_keys(config: AuthConfig, environ: Mapping[str, str] | None = None) -> KeyFile | None:
    """The configured keys, or None when auth is explicitly disabled."""
    env = os.environ if environ is None else environ
    if not config.enabled:
        log.warning("AUTHENTICATION IS DISABLED by configuration (auth.enabled: false): anyone who can reach "
                    "this gateway can use every model. Do not expose it beyond localhost.")
        return None
    path = env.get(ENV_FILE) or config.keys_file
    if env.get(ENV_INLINE):
        return _parse(env[ENV_INLINE], f"${ENV_INLINE}")
    if path:
        try:
            return _parse(Path(path).read_text(), path)
        except OSError as err:
            raise ConfigError(f"cannot read API keys file {path}: {err}") from None
    raise ConfigError(f"auth is enabled but no API keys are configured: set auth.keys_file, ${ENV_FILE} or "
                      f"${ENV_INLINE}, or disable auth explicitly with auth.enabled: false")


class Authenticator:
    def __init__(self, keys: KeyFile | None) -> None:
        self.enabled = keys is not None
        self.keys = keys  # the file as parsed (its teams and budgets are read by serve/budgets.py)
        self._keys = [(bytes.fromhex(k.key_sha256), k) for k in (keys.keys if keys else ())]

    def authenticate(self, headers: Mapping[str, str]) -> ApiKey:
        if not self.enabled:
            return ANONYMOUS
        raw = headers.get("authorization") or ""
        scheme, _, token = raw.partition(" ")
        token = token.strip()
        if not token and headers.get("x-api-key"):
            scheme, token = "bearer", headers["x-api-key"].strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
        offered = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found = None
        for stored, key in self._keys:  # compare against every key: time does not depend on which matched
            if hmac.compare_digest(stored, offered):
                found = key
        if found is None:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        return found

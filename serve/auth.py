"""API keys: loaded once, kept only as SHA-256 digests, compared in constant time.

A keys file (YAML or JSON) holds ``keys: [{name, key | key_sha256, models, priority, limits}]``.
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

import yaml
from pydantic import Field, ValidationError, model_validator

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


class ApiKey(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    models: tuple[str, ...] = ("*",)
    priority: Priority = Priority.NORMAL
    limits: KeyLimits = KeyLimits()

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

"""API keys: hashed at load, constant-time lookup, explicit opt-out only."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from router.admission import Priority
from router.errors import AuthenticationError, ConfigError
from serve.auth import ANONYMOUS, ApiKey, Authenticator, KeyFile, digest, load_keys
from serve.config import AuthConfig

KEYS = """
keys:
  - {name: alice, key: alice-key-0123456789, priority: high}
  - {name: bob, key_sha256: %s, models: [small]}
""" % digest("bob-key-0123456789ab")


def test_plaintext_keys_are_hashed_and_dropped(tmp_path):
    f = tmp_path / "keys.yaml"
    f.write_text(KEYS)
    keys = load_keys(AuthConfig(keys_file=str(f)), environ={})
    alice = keys.keys[0]
    assert alice.key_sha256 == digest("alice-key-0123456789")
    assert "alice-key-0123456789" not in repr(keys) and "alice-key-0123456789" not in str(keys.model_dump())
    assert alice.priority is Priority.HIGH and alice.allowed_models() is None
    assert keys.keys[1].allowed_models() == frozenset({"small"})


def test_authenticate():
    auth = Authenticator(KeyFile.model_validate({"keys": [{"name": "a", "key": "a-key-0123456789xyz"}]}))
    assert auth.authenticate({"authorization": "Bearer a-key-0123456789xyz"}).name == "a"
    assert auth.authenticate({"x-api-key": "a-key-0123456789xyz"}).name == "a"
    with pytest.raises(AuthenticationError, match="missing"):
        auth.authenticate({})
    with pytest.raises(AuthenticationError, match="missing"):
        auth.authenticate({"authorization": "Basic abc"})
    with pytest.raises(AuthenticationError, match="invalid"):
        auth.authenticate({"authorization": "Bearer a-key-0123456789xyZ"})


def test_auth_is_on_unless_disabled_explicitly(caplog):
    with pytest.raises(ConfigError, match="no API keys are configured"):
        load_keys(AuthConfig(), environ={})
    with caplog.at_level(logging.WARNING, logger="tiergate.auth"):
        assert load_keys(AuthConfig(enabled=False), environ={}) is None
    assert "AUTHENTICATION IS DISABLED" in caplog.text
    assert Authenticator(None).authenticate({}) is ANONYMOUS


def test_keys_from_environment(tmp_path):
    inline = "- {name: env, key: env-key-0123456789ab}"
    assert load_keys(AuthConfig(), environ={"TIERGATE_API_KEYS": inline}).keys[0].name == "env"
    f = tmp_path / "k.yaml"
    f.write_text(KEYS)
    assert len(load_keys(AuthConfig(), environ={"TIERGATE_API_KEYS_FILE": str(f)}).keys) == 2


def test_bad_key_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_keys(AuthConfig(keys_file=str(tmp_path / "none.yaml")), environ={})
    with pytest.raises(ConfigError, match="at least 16"):
        load_keys(AuthConfig(), environ={"TIERGATE_API_KEYS": "- {name: s, key: short}"})
    with pytest.raises(ValidationError, match="key_sha256"):
        ApiKey(name="x", key_sha256="nothex")

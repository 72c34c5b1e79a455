"""Reading what a request asks for from its headers (serve/api/requests.py)."""

from __future__ import annotations

import pytest

from router.admission import Priority
from router.errors import InvalidRequestError
from serve.api.requests import priority_from


def test_the_priority_header_lowers_the_key_s_priority_only():
    assert priority_from(Priority.NORMAL, {}) is Priority.NORMAL
    assert priority_from(Priority.NORMAL, {"x-tiergate-priority": " Low "}) is Priority.LOW
    assert priority_from(Priority.NORMAL, {"x-tiergate-priority": "high"}) is Priority.NORMAL


def test_an_unknown_priority_is_a_clear_400_naming_the_header():
    with pytest.raises(InvalidRequestError, match="must be one of high, normal, low") as err:
        priority_from(Priority.HIGH, {"x-tiergate-priority": "urgent"})
    assert err.value.param == "x-tiergate-priority"

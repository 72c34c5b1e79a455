"""The Ray Serve options ``tiergate serve`` adds to its environment, and that the operator's own values win."""

from __future__ import annotations

from serve.serve_options import serve_env


def test_throughput_mode_and_haproxy_when_a_binary_exists():
    assert serve_env({}, haproxy=True) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}


def test_without_haproxy_only_throughput_mode():
    assert serve_env({"PATH": "/bin"}, haproxy=False) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def test_the_operator_s_values_win():
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    assert serve_env(env, haproxy=True) == {}

"""The Ray Serve options ``tiergate serve`` adds to its environment, and that the operator's own values win."""

from __future__ import annotations

import socket
from itertools import count

from serve.serve_options import free_port, serve_env


def test_throughput_mode_and_haproxy_on_its_own_ports_when_a_binary_exists():
    ports = count(50001)
    assert serve_env({}, haproxy=True, pick_port=lambda: next(ports)) == {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_METRICS_PORT": "50001", "RAY_SERVE_HAPROXY_STATS_PORT": "50002"}


def test_haproxy_ports_the_operator_named_are_kept():
    env = {"RAY_SERVE_HAPROXY_STATS_PORT": "8404"}
    added = serve_env(env, haproxy=True)
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in added
    assert int(added["RAY_SERVE_HAPROXY_METRICS_PORT"]) > 0


def test_haproxy_the_operator_turned_on_gets_free_ports_too():
    added = serve_env({"RAY_SERVE_ENABLE_HA_PROXY": "1"}, haproxy=True)
    assert set(added) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_HAPROXY_METRICS_PORT",
                          "RAY_SERVE_HAPROXY_STATS_PORT"}


def test_the_picked_port_is_free_while_serve_s_fixed_default_is_taken():
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        taken = held.getsockname()[1]
        port = free_port()
        assert port != taken
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))  # bindable: nothing else holds it


def test_without_haproxy_only_throughput_mode():
    assert serve_env({"PATH": "/bin"}, haproxy=False) == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def test_the_operator_s_values_win():
    env = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    assert serve_env(env, haproxy=True) == {}

"""Every dashboard panel query and every rule expression, run by a real Prometheus server that
scrapes tiergate metrics: each must parse and return data.

Two targets: a local HTTP server serving the real metric classes fed by generated traffic
(drift, brittleness and gateway metrics all present), and the real gateway on the CPU pool (e2e).
vLLM panels read vLLM's own metrics, which neither target has (the CPU pool runs llama.cpp):
they are checked to parse, and their data is checked where a vLLM engine runs.
"""

from __future__ import annotations

import time

import httpx
import pytest

from serve.telemetry.embedder import SentenceTransformerEmbedder

from tests.deploy.metrics_target import SyntheticGateway, serve
from tests.deploy.prom_server import PrometheusServer
from tests.deploy.queries import Query, all_queries, dashboard_queries, panels_without_unit, rule_queries


def test_committed_dashboards_match_the_builder():
    import subprocess
    import sys

    from tests.deploy.promtool import ROOT

    pytest.importorskip("grafana_foundation_sdk", reason="the dashboard builder needs grafana-foundation-sdk (dev extra)")
    result = subprocess.run([sys.executable, str(ROOT / "deploy" / "grafana" / "build.py"), "--check"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_dashboards_have_units_and_a_datasource_variable():
    import json

    from tests.deploy.queries import DASHBOARDS

    assert {p.stem for p in DASHBOARDS} == {"tiergate-overview", "tiergate-latency", "tiergate-drift",
                                            "tiergate-brittleness", "tiergate-vllm"}
    assert panels_without_unit() == []
    for path in DASHBOARDS:
        text = path.read_text()
        board = json.loads(text)
        assert [v["name"] for v in board["templating"]["list"]][:1] == ["datasource"]
        for panel in board["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert "instance=" not in text and "localhost" not in text and "127.0.0.1" not in text
    queries = [q.expr for q in dashboard_queries()]
    for spelling in ("vllm:num_requests_running", "ray_vllm_num_requests_running",
                     "vllm:time_to_first_token_seconds_bucket", "ray_vllm_time_to_first_token_seconds_bucket"):
        assert any(spelling in q for q in queries), spelling


def _check_all(prom: PrometheusServer, queries: list[Query], required: list[Query], deadline_s: float) -> None:
    for q in queries:  # every query parses (Prometheus answers 400 bad_data otherwise)
        prom.query(q.expr)
    pending = list(required)
    deadline = time.monotonic() + deadline_s
    while pending and time.monotonic() < deadline:
        pending = [q for q in pending if not prom.query(q.expr)["result"]]
        if pending:
            time.sleep(1)
    assert not pending, "no data for:\n" + "\n".join(f"  {q.where}: {q.expr}" for q in pending)


def _data_queries(queries: list[Query]) -> list[Query]:
    """What must return data: panels and recording rules as they are; for an alert, each metric
    or recorded series it reads (an alert's own expression is empty while all is well)."""
    out = []
    for q in queries:
        if q.vllm_only:
            continue
        if q.kind == "alert":
            out.extend(Query(f"{q.where} input {m}", f'count({{__name__="{m}"}})', "alert-input")
                       for m in sorted(q.metrics))
        else:
            out.append(q)
    return out


def test_every_query_against_generated_traffic(tmp_path):
    gateway = SyntheticGateway()
    server, threads = serve(gateway)
    prom = PrometheusServer(tmp_path, [f"127.0.0.1:{server.server_port}"])
    try:
        prom.wait_ready()
        queries = all_queries()
        assert len([q for q in queries if q.kind == "panel"]) >= 50
        _check_all(prom, queries, _data_queries(queries), deadline_s=90)
        (target,) = prom.targets_up()
        assert target["health"] == "up" and target["labels"]["job"] == "tiergate"
        # the rules see the generated drift: the 15m prompt-length windows score above threshold
        drifted = prom.query('tiergate_drift_score{feature="prompt_tokens",method="wasserstein"} '
                             '> tiergate_drift_threshold')["result"]
        assert drifted, "generated traffic with longer prompts should score above the drift threshold"
        assert float(prom.query("tiergate:calibration_ece:1d")["result"][0]["value"][1]) > 0
    finally:
        prom.close()
        gateway.stop()
        server.shutdown()
        server.server_close()


def _chat(client: httpx.Client, model: str, i: int) -> None:
    r = client.post("/chat/completions", json={"model": model, "max_tokens": 8, "temperature": 0,
                                               "messages": [{"role": "user", "content": f"Say the number {i}."}]})
    assert r.status_code == 200, r.text


def _exported(base_url: str) -> set[str]:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line.startswith("tiergate_")}


def _scrape(tmp_path, base_url: str) -> PrometheusServer:
    host_port = base_url.split("://", 1)[1].split("/", 1)[0]
    prefix = base_url.split(host_port, 1)[1]
    prom = PrometheusServer(tmp_path, [host_port], metrics_path=f"{prefix}/metrics")
    prom.wait_ready()
    return prom


@pytest.mark.e2e
def test_every_query_against_the_live_gateway(tmp_path, gateway):
    """The real gateway on the CPU pool under real requests: every query parses; those reading
    only metrics this gateway exports return data."""
    prom = _scrape(tmp_path, gateway.base_url)
    try:
        with httpx.Client(base_url=gateway.api, timeout=120) as client:
            for i, model in enumerate(("auto", "auto", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "auto")):
                _chat(client, model, i)
                time.sleep(1.5)  # spread requests over scrapes so rates see increases
            assert client.post("/chat/completions", json={"model": "no-such-model", "messages": [
                {"role": "user", "content": "hi"}]}).status_code == 404
        exported = _exported(gateway.base_url)
        prom.wait_for("tiergate_requests_total", timeout=30)
        queries = all_queries()
        required = [q for q in _data_queries(queries)
                    if all(m in exported or ":" in m for m in q.metrics)
                    and not any(m.startswith("tiergate:") and not _recorded_from_exported(m, exported)
                                for m in q.metrics)]
        assert len(required) >= 25
        _check_all(prom, queries, required, deadline_s=60)
    finally:
        prom.close()


SMALL, LARGE = "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"
EVERY_REQUEST = {"rate": 1.0, "max_per_minute": 600, "burst": 100, "max_cost_usd_per_hour": None, "max_in_flight": 8}
DRIFT_WINDOW_S = 8
# Queries that cannot return data from this gateway, each with the reason:
EXEMPT: dict[str, str] = {}  # every query must return data (embedding drift included)


MONITOR_KEY = "monitor-key-0123456789"


def _monitored_pool(reference: str, keys_file: str) -> dict:
    import yaml

    from tests.conftest import CPU_POOL

    pool = yaml.safe_load(CPU_POOL.read_text())
    pool["name"] = "monitored"
    # one key with a (roomy) spend budget, so that the budget panels have a standing to show
    pool["auth"] = {"enabled": True, "keys_file": keys_file}
    pool["monitoring"] = {
        # one short tumbling window, so that windows close (and are scored) within the test; it
        # keeps the label 15m that the drift alert selects
        "drift": {"reference": reference, "windows": [{"name": "15m", "seconds": DRIFT_WINDOW_S}], "min_samples": 2,
                  "calibration_chunks": 50},
        "brittleness": {"shadow": EVERY_REQUEST, "probe": EVERY_REQUEST},
    }
    return pool


@pytest.fixture
def monitored(tmp_path, serve_cluster):
    """The CPU pool with drift and brittleness monitoring on, beside the main app; removed after."""
    from ray import serve

    from serve.telemetry.features import counts_for_drift, row_from_record
    from serve.telemetry.reference import Reference
    from serve.telemetry.synthetic import TrafficShape, records

    ref = tmp_path / "reference.json"
    rows = [row_from_record(r) for r in records(TrafficShape(models=(SMALL, LARGE)), 400, seed=1,
                                                        embed=SentenceTransformerEmbedder().embed) if counts_for_drift(r)]
    Reference.build(rows, source="generated traffic").save(ref)
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"keys: [{{name: monitor, key: {MONITOR_KEY}, budget: {{usd: 1000, period: month}}}}]\n")
    app = serve_cluster.deploy("monitored", {"pool_config": _monitored_pool(str(ref), str(keys))}, "/monitored")
    try:
        yield app
    finally:
        serve.delete("monitored")


@pytest.mark.e2e
def test_every_query_against_the_live_gateway_with_monitoring(tmp_path, monitored):
    """With drift and brittleness monitoring on (a short drift window, every request shadowed and
    probed), every query parses and every non-vLLM query returns data from the live gateway,
    rule expressions included, except the exemptions in ``EXEMPT`` (each with its reason).
    Long-window rules (``[1d]``, ``[7d]``, ``[3d]``) need no exemption: ``rate``/``increase`` over
    a long range return data as soon as the range holds two samples."""
    prom = _scrape(tmp_path, monitored.base_url)
    try:
        with httpx.Client(base_url=monitored.api, timeout=120,
                          headers={"authorization": f"Bearer {MONITOR_KEY}"}) as client:
            # pinned to the cheap model (shadowed by the strongest, probed), routed, pinned to the
            # strongest (probed only), and one unknown model (a 404 for the error panels)
            for i, model in enumerate((SMALL, "auto", SMALL, LARGE, SMALL)):
                _chat(client, model, i)
            assert client.post("/chat/completions", json={"model": "no-such-model", "messages": [
                {"role": "user", "content": "hi"}]}).status_code == 404
        # a drift window closes at the next multiple of DRIFT_WINDOW_S; shadow and probe calls
        # run after the answers: wait for all of them on /metrics
        deadline = time.monotonic() + 90
        needed = {"tiergate_drift_score", "tiergate_shadow_requests_total", "tiergate_probe_requests_total",
                  "tiergate_calibration_requests_total"}
        extra = 0
        while not needed <= _exported(monitored.base_url) and time.monotonic() < deadline:
            # a drift window scores only with min_samples answers in it: if the five above fell into
            # windows of one each (a slow first answer from the large model), keep a little traffic coming
            with httpx.Client(base_url=monitored.api, timeout=120,
                              headers={"authorization": f"Bearer {MONITOR_KEY}"}) as client:
                _chat(client, SMALL, 10 + extra)
            extra += 1
            time.sleep(2)
        assert needed <= _exported(monitored.base_url)
        queries = all_queries()
        data = _data_queries(queries)
        required = [q for q in data if not any(k in q.expr for k in EXEMPT)]
        assert len(data) - len(required) <= 2, "exemptions must stay few: " + repr(
            [q.where for q in data if q not in required])
        assert len(required) >= 100
        _check_all(prom, queries, required, deadline_s=60)
    finally:
        prom.close()


def _recorded_from_exported(series: str, exported: set[str]) -> bool:
    """Whether the recording rule ``series`` reads only metrics the gateway exports."""
    for q in rule_queries():
        if q.where == series:
            return all(m in exported or (m.startswith("tiergate:") and _recorded_from_exported(m, exported))
                       for m in q.metrics)
    return False

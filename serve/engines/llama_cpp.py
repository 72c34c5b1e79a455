"""The llama.cpp engine: quantized GGUF models on the CPU.

One ``Llama`` per replica. It is not thread-safe, so generations run one at a time on a
dedicated worker thread, off the event loop; tokens travel to the async side through an
``asyncio.Queue``. Requests queue in that thread's executor, so the next generation starts the
moment the last one ends, without waiting for the event loop (which may be busy writing answers)
to hand the engine over. Closing the stream sets a flag that the worker checks between tokens,
so a client that goes away stops generation within one token; a request that never started is
skipped.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
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
    Message,
    TokenLogprob,
)
from serve.engines.structured import request_grammar
from serve.engines.tools import CLOSE, ToolChunks, template_has_tool_format, template_messages, template_tools
from serve.weights import resolve_weights

_DONE = object()


class _Job:
    """One request's place in the worker's queue; ``started`` and ``skipped`` change under the engine's count lock."""

    __slots__ = ("cancelled", "started", "skipped")

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.started = False
        self.skipped = False


class LlamaCppArgs(EngineArgs):
    n_threads: int = Field(default=1, ge=1, le=256)
    n_batch: int = Field(default=256, ge=1)
    use_mmap: bool = True
    top_k: int = Field(default=0, ge=0, description="0 disables top-k")
    cache_dir: str | None = Field(default=None, description="where assembled weights are written")


def render_transcript(messages: tuple[Message, ...]) -> str:
    """A plain transcript prompt for base (completion) models that have no chat template."""
    lines = [f"{m.role.capitalize()}: {m.content}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


class _StopScanner:
    """Holds back text that may be the start of a stop string; reports a completed stop."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buf = self.pending + text
        if not self.stops:
            self.pending = ""
            return buf, False
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return buf[: min(hits)], True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), 0, -1):
                if buf.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class LlamaCppEngine(Engine):
    Args = LlamaCppArgs

    def __init__(self, model: ModelConfig, args: LlamaCppArgs) -> None:
        self.model = model
        self.args = args
        self._llm: Any = None
        self._formatter: Any = None
        self._tool_format = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{model.name}")
        self._counts = threading.Lock()  # the worker thread and the event loop both update the two counts
        self._waiting = 0
        self._running = 0
        self._load_error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._llm is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load)
        except Exception as err:  # surfaced through health() and start()
            self._load_error = f"{type(err).__name__}: {err}"
            raise EngineError(f"model {self.model.name} failed to load: {err}") from err

    def _load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        assert self.model.weights is not None
        cache = Path(self.args.cache_dir).expanduser() if self.args.cache_dir else None
        path = resolve_weights(self.model.weights, cache)
        llm = Llama(
            model_path=str(path), n_ctx=self.model.context_length, n_threads=self.args.n_threads,
            n_threads_batch=self.args.n_threads, n_batch=self.args.n_batch,
            use_mmap=self.args.use_mmap, verbose=False,
            last_n_tokens_size=self.model.context_length,  # penalties see the whole generation
        )
        template = llm.metadata.get("tokenizer.chat_template")
        if self.model.prompt_format == "chat_template" and template:
            eos = llm.detokenize([llm.token_eos()]).decode("utf-8", "ignore")
            bos = llm.detokenize([llm.token_bos()]).decode("utf-8", "ignore") if llm.token_bos() >= 0 else ""
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            self._tool_format = template_has_tool_format(template)
        self._llm = llm

    async def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._llm = None

    async def health(self) -> EngineHealth:
        if self._llm is not None:
            return EngineHealth(ready=True, detail="loaded")
        return EngineHealth(ready=False, detail=self._load_error or "loading")

    def load(self) -> EngineLoad:
        return EngineLoad(running=self._running, waiting=self._waiting)

    # ------------------------------------------------------------------ prompts
    def _prompt_text(self, request: GenerationRequest) -> tuple[str, tuple[str, ...]]:
        if request.prompt is not None:
            return request.prompt, ()
        assert request.messages is not None
        if request.tools is not None or any(m.role == "tool" or m.tool_calls for m in request.messages):
            if not self._tool_format:
                raise InvalidRequestError(f"model {self.model.name} has no tool-call format in its chat template",
                                          param="tools", code="unsupported_capability")
        if self._formatter is not None:
            try:
                out = self._formatter(messages=template_messages(request.messages),
                                      tools=template_tools(request.tools))
            except ValueError as err:  # the template's raise_exception, e.g. bad role order
                raise InvalidRequestError(f"messages rejected by {self.model.name}'s chat template: {err}",
                                          param="messages") from None
            return out.prompt, tuple(s for s in (out.stop or ()) if s)
        return render_transcript(request.messages), ("\nUser:",)

    def _tokenize(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    async def count_tokens(self, request: GenerationRequest) -> int:
        self._require_ready()
        text, _ = self._prompt_text(request)
        return len(self._tokenize(text))

    def _require_ready(self) -> None:
        if self._llm is None:
            raise EngineNotReadyError(f"model {self.model.name} is still loading")

    # ------------------------------------------------------------------ generation
    def _check_bias(self, request: GenerationRequest) -> None:
        n_vocab = self._llm.n_vocab()
        bad = [t for t, _ in request.sampling.logit_bias if t >= n_vocab]
        if bad:
            raise InvalidRequestError(f"logit_bias: token id {bad[0]} is not in {self.model.name}'s vocabulary "
                                      f"({n_vocab} tokens)", param="logit_bias", code="invalid_value")

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self._require_ready()
        self._check_bias(request)
        text, template_stops = self._prompt_text(request)
        grammar = request_grammar(request)
        tools = ToolChunks(request.tools) if request.tools is not None else None
        if request.tools is not None and request.tools.choice == "auto" and not request.tools.parallel:
            template_stops += (CLOSE,)  # one call at most: stop after it (the parser takes an unclosed block)
        tokens = self._tokenize(text)
        n_ctx = self.model.context_length
        if len(tokens) >= n_ctx:
            raise ContextLengthError(
                f"this model's maximum context length is {n_ctx} tokens; the prompt has {len(tokens)}",
                param="messages" if request.messages is not None else "prompt",
                code="context_length_exceeded",
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        job = _Job()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        with self._counts:
            self._waiting += 1
        future = loop.run_in_executor(
            self._executor, self._generate, job, tokens, request, template_stops, grammar, emit)

        def never_ran(done: asyncio.Future[None]) -> None:  # the executor was shut down (stop) with it queued
            if done.cancelled():
                queue.put_nowait(EngineError(f"model {self.model.name} stopped before this request ran"))

        future.add_done_callback(never_ran)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield tools.chunk(item) if tools is not None else item
            await future
        finally:
            job.cancelled.set()
            with self._counts:
                started = job.started
                if not started:  # still queued: the worker skips it, and it no longer waits
                    job.skipped = True
                    self._waiting -= 1
            if started and not future.done():
                # the worker stops within one token; a cancellation is never swallowed (errors came
                # through the queue already)
                await asyncio.shield(future)

    def _generate(self, job: _Job, tokens: list[int], request: GenerationRequest, template_stops: tuple[str, ...],
                  grammar: str | None, emit: Callable[[Any], None]) -> None:
        with self._counts:
            if job.skipped:
                return
            job.started = True
            self._waiting -= 1
            self._running += 1
        try:
            self._generate_inner(tokens, request, template_stops, grammar, emit, job.cancelled)
        except Exception as err:  # noqa: BLE001 - crossing the thread boundary
            known = isinstance(err, (EngineError, InvalidRequestError))
            emit(err if known else EngineError(f"{self.model.name}: {err}"))
        finally:
            with self._counts:
                self._running -= 1
            emit(_DONE)

    def _grammar(self, text: str | None) -> Any:
        """A LlamaGrammar for ``text``, checked by llama.cpp's own parser first (a bad one would crash it)."""
        if text is None:
            return None
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        probe = llama_cpp.llama_sampler_init_grammar(self._llm._model.vocab, text.encode("utf-8"), b"root")
        if not probe:
            raise InvalidRequestError("the response format could not be compiled into a grammar",
                                      param="response_format", code="invalid_schema")
        llama_cpp.llama_sampler_free(probe)
        return LlamaGrammar.from_string(text, verbose=False)

    @staticmethod
    def _bias_processor(bias: tuple[tuple[int, float], ...]) -> Any:
        if not bias:
            return None
        from llama_cpp import LogitsProcessorList

        ids = np.array([t for t, _ in bias], dtype=np.intc)
        values = np.array([b for _, b in bias], dtype=np.single)

        def add_bias(_input_ids: Any, scores: np.ndarray) -> np.ndarray:
            scores[ids] += values
            return scores

        return LogitsProcessorList([add_bias])

    def _generate_inner(self, tokens: list[int], request: GenerationRequest, template_stops: tuple[str, ...],
                        grammar_text: str | None, emit: Callable[[Any], None], cancelled: threading.Event) -> None:
        import llama_cpp

        llm = self._llm
        sp = request.sampling
        max_new = max(0, min(sp.max_tokens, self.model.context_length - len(tokens)))
        if sp.seed is not None:
            llm.set_seed(sp.seed)
        scanner = _StopScanner(tuple(sp.stop) + template_stops)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab
        n_vocab = llm.n_vocab()
        prompt_tokens = len(tokens)
        produced = 0
        finish = "length"
        gen = llm.generate(tokens, top_k=self.args.top_k if sp.top_k is None else sp.top_k, top_p=sp.top_p,
                           min_p=sp.min_p, temp=sp.temperature, repeat_penalty=sp.repetition_penalty,
                           presence_penalty=sp.presence_penalty, frequency_penalty=sp.frequency_penalty,
                           logits_processor=self._bias_processor(sp.logit_bias),
                           grammar=self._grammar(grammar_text), reset=True)
        try:
            while produced < max_new:
                if cancelled.is_set():
                    finish = "cancelled"
                    break
                token = next(gen)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                produced += 1
                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
                lp = self._logprob(llm, logits, token, sp.top_logprobs)
                piece = decoder.decode(llm.detokenize([token], special=False))
                out, hit = scanner.feed(piece)
                emit(Chunk(text=out, logprobs=(lp,), prompt_tokens=prompt_tokens, completion_tokens=produced))
                if hit:
                    finish = "stop"
                    break
            else:
                finish = "length"
        finally:
            gen.close()
        tail = "" if finish == "stop" else scanner.flush() + decoder.decode(b"", final=True)
        emit(Chunk(text=tail, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=produced))

    @staticmethod
    def _logprob(llm: Any, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
        m = float(logits.max())
        logz = m + float(np.log(np.exp(logits - m).sum()))
        text = llm.detokenize([token], special=False).decode("utf-8", "replace")
        pairs: tuple[tuple[str, float], ...] = ()
        if top > 0:
            idx = np.argpartition(logits, -top)[-top:]
            idx = idx[np.argsort(-logits[idx])]
            pairs = tuple((llm.detokenize([int(i)], special=False).decode("utf-8", "replace"),
                           float(logits[i]) - logz) for i in idx)
        return TokenLogprob(token=text, logprob=float(logits[token]) - logz, top=pairs)

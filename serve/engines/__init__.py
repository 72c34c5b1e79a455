"""Engines by name. Imports are lazy so that a CPU install never imports vLLM."""

from __future__ import annotations

import importlib

from router.errors import RegistryError
from serve.config import ModelConfig
from serve.engines.base import (
    Chunk,
    Engine,
    EngineArgs,
    EngineHealth,
    EngineLoad,
    GenerationRequest,
    Message,
    SamplingParams,
    TokenLogprob,
    parse_engine_args,
)

ENGINES: dict[str, str] = {
    "llama_cpp": "serve.engines.llama_cpp:LlamaCppEngine",
    "vllm": "serve.engines.vllm:VllmEngine",
    "fake": "serve.engines.fake:FakeEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The engine class registered under ``name``; an unknown name lists the valid ones."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise RegistryError(f"unknown engine {name!r}; valid engines: {', '.join(sorted(ENGINES))}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_engine(model: ModelConfig) -> Engine:
    """The engine for one pool model, its ``engine_args`` validated by that engine's own model."""
    cls = engine_class(model.engine)
    return cls(model, parse_engine_args(cls, model.engine_args))  # type: ignore[call-arg]


__all__ = [
    "ENGINES", "Chunk", "Engine", "EngineArgs", "EngineHealth", "EngineLoad", "GenerationRequest",
    "Message", "SamplingParams", "TokenLogprob", "build_engine", "engine_class",
]

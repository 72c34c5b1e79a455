"""Live outcomes: one JSON line per shadow comparison, the input of ``tiergate calibrate --refresh``.

A line says which model answered, the quality the gateway predicted for it, the request class
and whether its answer agreed with the shadow (strongest) model's; never the API key, and the
prompt only when ``include_prompt_text`` is set. Requests whose predicted quality came from a
measured class accuracy (tools, json_schema) are marked so, and the refresh leaves them out.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve.telemetry.jsonl import JsonLines


class OutcomesConfig(BaseModel):
    """``monitoring.outcomes`` in a pool config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, description="JSON-lines file to append to; off without one")
    include_prompt_text: bool = Field(default=False, description="store the prompt too (privacy: off by default)")
    max_bytes: int = Field(default=256 << 20, ge=1024, description="stop recording once the file is this large")


class OutcomeRecorder:
    """Appends one JSON line per live outcome (flushed at once: a refresh may read it any time)."""

    def __init__(self, config: OutcomesConfig) -> None:
        if config.path is None:
            raise ValueError("OutcomeRecorder needs config.path")
        self.config = config
        self.file = JsonLines(config.path, config.max_bytes, flush_each=True)

    def record(self, *, model: str, shadow_model: str, route_class: str, quality_class: str | None,
               predicted_quality: float | None, agree: bool, similarity: float, prompt: str | None) -> bool:
        line: dict[str, Any] = {"time": round(time.time(), 3), "source": "shadow", "model": model,
                                "reference_model": shadow_model, "route_class": route_class or "none",
                                "quality_class": quality_class, "predicted_quality": predicted_quality,
                                "outcome": 1 if agree else 0, "similarity": round(float(similarity), 4)}
        if self.config.include_prompt_text and prompt is not None:
            line["prompt"] = prompt
        return self.file.append(line)

    def close(self) -> None:
        self.file.close()

"""Live outcomes: one JSON line per shadow comparison, the input of ``tiergate calibrate --refresh``.

A line says which model answered, the quality the gateway predicted for it, the request class
and whether its answer agreed with the shadow (strongest) model's; never the API key, and the
prompt only when ``include_prompt_text`` is set. Requests whose predicted quality came from a
measured class accuracy (tools, json_schema) are marked so, and the refresh leaves them out.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OutcomesConfig(BaseModel):
    """``monitoring.outcomes`` in a pool config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, description="JSON-lines file to append to; off without one")
    include_prompt_text: bool = Field(default=False, description="store the prompt too (privacy: off by default)")
    max_bytes: int = Field(default=256 << 20, ge=1024, description="stop recording once the file is this large")


class OutcomeRecorder:
    """Appends one JSON line per live outcome; thread-safe; stops at ``max_bytes``."""

    def __init__(self, config: OutcomesConfig) -> None:
        if config.path is None:
            raise ValueError("OutcomeRecorder needs config.path")
        self.config = config
        self.path = Path(config.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self.path.stat().st_size
        self.written = 0
        self.dropped = 0

    def record(self, *, model: str, shadow_model: str, route_class: str, quality_class: str | None,
               predicted_quality: float | None, agree: bool, similarity: float, prompt: str | None) -> bool:
        line: dict[str, Any] = {"time": round(time.time(), 3), "source": "shadow", "model": model,
                                "reference_model": shadow_model, "route_class": route_class or "none",
                                "quality_class": quality_class, "predicted_quality": predicted_quality,
                                "outcome": 1 if agree else 0, "similarity": round(float(similarity), 4)}
        if self.config.include_prompt_text and prompt is not None:
            line["prompt"] = prompt
        data = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            if self._size + len(data) > self.config.max_bytes:
                self.dropped += 1
                return False
            self._file.write(data)
            self._file.flush()
            self._size += len(data.encode("utf-8"))
            self.written += 1
        return True

    def close(self) -> None:
        with self._lock:
            self._file.close()

"""Records anonymised per-request features to a JSON-lines file, the input of
``tiergate reference build --from FILE``.

A line holds sizes, routing facts, output-health flags and (optionally) the prompt embedding;
never the API key name, and never prompt text unless ``include_prompt_text`` is set explicitly
(and the caller passes the text). Plain Python, meant to live in the telemetry deployment.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from serve.telemetry.records import RequestRecord
from serve.telemetry.features import record_to_dict


class RecorderConfig(BaseModel):
    """The ``monitoring.recorder`` section of a pool config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(default=None, description="JSON-lines file to append to; recording is off without one")
    include_embedding: bool = True
    include_prompt_text: bool = Field(default=False, description="store prompt text too (privacy: off by default)")
    max_bytes: int = Field(default=1 << 30, ge=1024, description="stop recording once the file is this large")


class FeatureRecorder:
    """Appends one JSON line per answered request; thread-safe; stops at ``max_bytes``."""

    def __init__(self, config: RecorderConfig) -> None:
        if config.path is None:
            raise ValueError("FeatureRecorder needs config.path")
        self.config = config
        self.path = Path(config.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self.path.stat().st_size
        self.written = 0
        self.dropped = 0

    def record(self, rec: RequestRecord, prompt_text: str | None = None) -> bool:
        """Write ``rec``; ``prompt_text`` is stored only when the config allows it. False if full."""
        line = record_to_dict(rec, include_embedding=self.config.include_embedding)
        if self.config.include_prompt_text and prompt_text is not None:
            line["prompt"] = prompt_text
        data = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            if self._size + len(data) > self.config.max_bytes:
                self.dropped += 1
                return False
            self._file.write(data)
            self._size += len(data.encode("utf-8"))
            self.written += 1
        return True

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> FeatureRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

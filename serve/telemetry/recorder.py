"""Records anonymised per-request features to a JSON-lines file, the input of
``tiergate reference build --from FILE``.

A line holds sizes, routing facts, output-health flags and (optionally) the prompt embedding;
never the API key name, and never prompt text unless ``include_prompt_text`` is set explicitly
(and the caller passes the text). Plain Python, meant to live in the telemetry deployment.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from serve.telemetry.jsonl import JsonLines
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
        self.file = JsonLines(config.path, config.max_bytes)
        self.path = self.file.path

    @property
    def written(self) -> int:
        return self.file.written

    @property
    def dropped(self) -> int:
        return self.file.dropped

    def record(self, rec: RequestRecord, prompt_text: str | None = None) -> bool:
        """Write ``rec``; ``prompt_text`` is stored only when the config allows it. False if full."""
        line = record_to_dict(rec, include_embedding=self.config.include_embedding)
        if self.config.include_prompt_text and prompt_text is not None:
            line["prompt"] = prompt_text
        return self.file.append(line)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> FeatureRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

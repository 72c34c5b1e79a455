"""An append-only JSON-lines file with a size cap, safe to write from several threads."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any


class JsonLines:
    """Appends one compact JSON line per :meth:`append`; refuses (and counts) lines past ``max_bytes``."""

    def __init__(self, path: str | Path, max_bytes: int, *, flush_each: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.flush_each = flush_each
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")
        self._size = self.path.stat().st_size
        self.written = 0
        self.dropped = 0

    def append(self, line: dict[str, Any]) -> bool:
        data = json.dumps(line, separators=(",", ":")) + "\n"
        size = len(data.encode("utf-8"))
        with self._lock:
            if self._size + size > self.max_bytes:
                self.dropped += 1
                return False
            self._file.write(data)
            if self.flush_each:
                self._file.flush()
            self._size += size
            self.written += 1
        return True

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

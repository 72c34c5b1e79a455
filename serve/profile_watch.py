"""Reload the pool's quality profile when its file changes, without restarting the gateway.

Every ``interval_s`` the watcher looks at the file's size, modification time and inode; when
they change it loads the new profile off the event loop (the encoder may be large), checks it
against the pool's models and hands it to the gateway, which routes the next request on it.
A profile that does not load (a half-copied file, other models) is reported and skipped: the
gateway keeps the one it has until the file changes again. ``tiergate calibrate`` writes
profiles atomically, so a refresh written over the watched file is picked up whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from router.errors import ProfileError
from serve.quality_profile import LoadedQuality, load_quality

log = logging.getLogger("tiergate.profile")

Stamp = tuple[int, int, int]


def _stamp(path: Path) -> Stamp | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class ProfileWatcher:
    def __init__(self, path: str | os.PathLike[str], models: Sequence[str],
                 apply: Callable[[LoadedQuality], None], *, interval_s: float) -> None:
        self.path = Path(path)
        self.models = tuple(models)
        self.apply = apply
        self.interval_s = interval_s
        self._stamp = _stamp(self.path)
        self.sha256 = file_sha256(self.path) if self._stamp else ""
        self.loaded_at = time.time()
        self.reloads = 0
        self.failures = 0
        self.last_error = ""

    async def check(self) -> bool:
        """Load the profile if its file changed; True when a new one is now in use."""
        stamp = _stamp(self.path)
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            loaded = await asyncio.to_thread(load_quality, self.path, self.models)
            sha = await asyncio.to_thread(file_sha256, self.path)
        except (ProfileError, OSError) as err:
            self.failures += 1
            self.last_error = str(err)
            log.error("quality profile %s changed but did not load; keeping the current one: %s", self.path, err)
            return False
        self.apply(loaded)
        self.sha256, self.loaded_at, self.last_error = sha, time.time(), ""
        self.reloads += 1
        log.info("quality profile %s reloaded (sha256 %s)", self.path, sha[:12])
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except Exception as err:  # noqa: BLE001 - the watcher must outlive any one bad file
                log.exception("quality profile watch failed: %s", err)

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.sha256, "loaded_at": round(self.loaded_at, 3),
                "reloads": self.reloads, "failures": self.failures, "last_error": self.last_error}

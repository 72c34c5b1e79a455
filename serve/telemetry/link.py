"""The ingress replica's line to the telemetry deployment: request records and gauges, batched.

Records are buffered and sent every ``flush_interval_s``; a batch the telemetry deployment did
not take goes back to the buffer (the oldest beyond ``max_pending`` are dropped, and logged).
Gauges (in flight, open circuits, state-store errors) are sent when they change, and now and
then regardless, labelled with this replica's id so the collector can combine replicas.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from serve.telemetry.records import RequestRecord

log = logging.getLogger("tiergate.telemetry")

Gauges = Callable[[], dict[str, Any]]


class TelemetryLink:
    gauges_refresh_s = 15.0
    max_pending = 10_000  # request records kept while the telemetry deployment is unreachable

    def __init__(self, telemetry: Any, gauges: Gauges) -> None:
        self.telemetry = telemetry
        self.gauges = gauges
        self.replica = uuid.uuid4().hex[:12]
        self.buffer: list[RequestRecord] = []
        self._sent: dict[str, Any] | None = None
        self._sent_at = 0.0

    def append(self, record: RequestRecord) -> None:
        self.buffer.append(record)

    async def flush(self) -> None:
        """Send the finished requests' records and the gauges, each only when there is news."""
        if self.telemetry is None:
            return
        batch, self.buffer[:] = list(self.buffer), []
        if batch:
            try:
                await self.telemetry.record.remote(batch)
            except BaseException:
                self.buffer[:0] = batch
                excess = len(self.buffer) - self.max_pending
                if excess > 0:
                    del self.buffer[:excess]
                    log.warning("telemetry is unreachable: dropped the %d oldest request records", excess)
                raise
        gauges = self.gauges()
        now = time.monotonic()  # unchanged gauges are re-sent now and then (a restarted telemetry replica)
        if gauges != self._sent or now - self._sent_at > self.gauges_refresh_s:
            await self.telemetry.set_gauges.remote(self.replica, **gauges)
            self._sent, self._sent_at = gauges, now

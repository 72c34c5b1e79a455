"""Quality prediction off the event loop, one worker thread, queued prompts batched."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from router.quality import QualityPredictor


class QualityBatcher:
    """Runs quality prediction on one worker thread, batching the prompts that queue meanwhile.

    Encoders are not thread-safe (tokenizers raise 'Already borrowed' when shared), and one
    batched call costs about as much as a single one, so concurrent requests share it.
    """

    def __init__(self, predictor: QualityPredictor, max_batch: int = 64) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quality")
        self._pending: list[tuple[str, asyncio.Future[dict[str, float]]]] = []
        self._draining = False

    async def predict(self, text: str) -> dict[str, float]:
        if not self.predictor.blocking:  # nothing to take off the loop; a thread hop would only add latency
            return self.predictor.predict([text])[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, float]] = loop.create_future()
        self._pending.append((text, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                texts = [t for t, _ in batch]
                try:
                    results = await loop.run_in_executor(self._executor, self.predictor.predict, texts)
                except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(err)
                    continue
                for (_, fut), result in zip(batch, results):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self._draining = False

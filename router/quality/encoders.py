"""Sentence encoders behind one small interface.

The router does no file I/O: a real encoder is a :class:`LazyEncoder` around a *loader* that
``serve/`` passes in (it reads the weights from disk on first use, never at import). The
:class:`FakeEncoder` hashes words into a fixed-size vector; it exists for unit tests only.
"""

from __future__ import annotations

import abc
import re
import threading
import zlib
from collections.abc import Callable, Sequence

import numpy as np

EncodeFn = Callable[[list[str]], np.ndarray]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Encoder(abc.ABC):
    """Turns prompts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """A stable name, recorded in profiles so that a mismatch is caught at load."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Length of each vector."""

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """An array of shape ``(len(texts), dim)``, rows of unit length."""


class LazyEncoder(Encoder):
    """A real encoder, loaded by ``load()`` the first time it is used (thread-safe).

    ``load`` returns a function from a list of texts to an array; ``max_chars`` truncates
    each prompt first (long prompts cost time and add little to a routing decision).
    """

    def __init__(self, name: str, dim: int, load: Callable[[], EncodeFn], *, max_chars: int | None = None) -> None:
        self._name = name
        self._dim = dim
        self._load = load
        self._fn: EncodeFn | None = None
        self._lock = threading.Lock()
        self.max_chars = max_chars

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def loaded(self) -> bool:
        return self._fn is not None

    def warm(self) -> None:
        """Load now (the gateway calls this at start so the first request pays nothing)."""
        self._get()

    def _get(self) -> EncodeFn:
        if self._fn is None:
            with self._lock:
                if self._fn is None:
                    self._fn = self._load()
        return self._fn

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = [t[: self.max_chars] if self.max_chars else t for t in texts]
        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        out = np.asarray(self._get()(items), dtype=np.float32)
        if out.shape != (len(items), self._dim):
            raise ValueError(f"encoder {self._name} returned shape {out.shape}, expected ({len(items)}, {self._dim})")
        return l2_normalise(out)


_WORD = re.compile(r"\w+")


class FakeEncoder(Encoder):
    """For unit tests: signed feature hashing of lower-cased words. Deterministic, no weights."""

    def __init__(self, dim: int = 32, name: str = "fake-hash") -> None:
        self._dim = dim
        self._name = name
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = zlib.crc32(word.encode())
                out[i, h % self._dim] += 1.0 if (h >> 16) & 1 else -1.0
        out[np.all(out == 0, axis=1), 0] = 1.0  # no words: a fixed unit vector, not zeros
        return l2_normalise(out)

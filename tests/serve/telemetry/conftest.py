"""Fixtures of the telemetry tests: the real packaged MiniLM embedder, loaded once."""

from __future__ import annotations

import pytest

from serve.telemetry.embedder import SentenceTransformerEmbedder


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    embedder = SentenceTransformerEmbedder()
    embedder.embed(["warm up"])
    return embedder

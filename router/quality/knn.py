"""The k-nearest-neighbours quality estimate that routing benchmarks use as a baseline.

P(acceptable) of a model for a prompt = the mean outcome of that model on the ``k`` training
prompts whose embeddings are closest by cosine similarity. Pure numpy.
"""

from __future__ import annotations

import numpy as np

SMALL = 8


def knn_quality(train_emb: np.ndarray, train_outcomes: np.ndarray, query_emb: np.ndarray,
                k: int = 40, batch: int = 512) -> np.ndarray:
    """Array (queries, models) of mean neighbour outcomes; embeddings must be L2-normalised."""
    train = np.asarray(train_emb, dtype=np.float32)
    y = np.asarray(train_outcomes, dtype=np.float64)
    q = np.asarray(query_emb, dtype=np.float32)
    if train.shape[0] != y.shape[0] or train.shape[1] != q.shape[1]:
        raise ValueError("train embeddings, outcomes and query embeddings do not line up")
    kk = min(k, train.shape[0])
    out = np.empty((q.shape[0], y.shape[1]), dtype=np.float64)
    for start in range(0, q.shape[0], batch):
        block = q[start:start + batch]
        # a request's few rows: einsum, single-threaded by construction (BLAS would start threads
        # that fight the engines' for the cores); many rows (replay, calibration): BLAS
        sims = np.einsum("ij,kj->ik", block, train) if block.shape[0] <= SMALL else block @ train.T
        idx = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        out[start:start + batch] = y[idx].mean(axis=1)
    return out

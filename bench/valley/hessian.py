"""The top eigenpairs of the training-loss Hessian (Lanczos on Hessian-vector products) and the
fraction of a direction's squared norm in their span."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from bench.errors import ConfigError
from bench.valley.path import Batches, flat, layout, unflat

if TYPE_CHECKING:
    from torch import nn


def hessian_eigs(model: nn.Module, batches: Batches, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending) and their orthonormal eigenvectors (columns, float64)
    of the Hessian of the mean cross-entropy over `batches` with respect to the model's parameters,
    at its current weights (eval mode: batch norm uses its running statistics)."""
    import torch
    import torch.nn.functional as F
    from scipy.sparse.linalg import LinearOperator, eigsh
    from torch.func import functional_call, grad, jvp

    model.eval()
    w = flat(model)
    names, shapes = layout(model)
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    n = sum(len(y) for _, y in batches)
    if not 0 < k < w.numel():
        raise ConfigError(f"--top-k = {k}: must be in [1, {w.numel() - 1}] (the model has {w.numel()} "
                          "parameters)")

    def hvp(v: np.ndarray) -> np.ndarray:
        v_t = torch.as_tensor(np.asarray(v).ravel(), dtype=w.dtype, device=w.device)
        out = torch.zeros_like(w)
        for x, y in batches:
            def loss(p: torch.Tensor, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                logits = functional_call(model, {**unflat(p, names, shapes), **buffers}, (x,))
                return F.cross_entropy(logits, y, reduction="sum") / n

            out += jvp(grad(loss), (w,), (v_t,))[1]
        return out.double().cpu().numpy()

    op = LinearOperator((w.numel(), w.numel()), matvec=hvp, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(w.numel())
    with warnings.catch_warnings():  # torch.func's first jvp scripts decompositions: torch's own warning
        warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", FutureWarning)
        values, vectors = eigsh(op, k=k, which="LA", v0=v0, tol=1e-6)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


def span_fraction(vectors: np.ndarray, d: np.ndarray) -> float:
    """||P d||^2 / ||d||^2, P the projection on the span of the orthonormal columns of `vectors`."""
    norm2 = float(d @ d)
    return float(np.sum((vectors.T @ d) ** 2) / norm2) if norm2 > 0 else math.nan


def random_fractions(vectors: np.ndarray, draws: int, seed: int = 0) -> np.ndarray:
    """`span_fraction` of `draws` Gaussian directions (any norm: the fraction does not depend on it)."""
    rng = np.random.default_rng(seed)
    return np.array([span_fraction(vectors, rng.standard_normal(vectors.shape[0])) for _ in range(draws)])

"""`valley(A, B)`: the pair's path, barrier and Hessian projection, as a `Valley`."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.errors import ConfigError
from bench.markdown import table
from bench.valley.endpoints import Endpoint, data_order_note, load_endpoint
from bench.valley.hessian import hessian_eigs, random_fractions, span_fraction
from bench.valley.path import barrier, bezier, fit_bezier, flat, line, training_batches, walk

if TYPE_CHECKING:
    from bench.data import Data

POINTS = 21  # points on the path, ends included
TOP_K = 10  # Hessian eigenpairs
HESSIAN_EXAMPLES = 1000  # training examples the Hessian is taken on
RANDOM_DRAWS = 10  # random directions the projection fraction is read against


@dataclass
class Valley:
    """What `valley` measured for one pair (A, B)."""

    a: str  # run ids
    b: str
    notes: list[str] = field(default_factory=list)
    line: pd.DataFrame | None = None  # t, loss, val_top1, test_top1
    curve: pd.DataFrame | None = None
    curve_epochs: int = 0
    eigenvalues: list[float] = field(default_factory=list)
    projections: list[float] = field(default_factory=list)  # per eigenvector, fraction of ||w_A - w_B||^2
    hessian_examples: int = 0
    random: list[float] = field(default_factory=list)  # span fractions of random directions
    distance: float = math.nan  # ||w_A - w_B||
    parameters: int = 0

    @property
    def applicable(self) -> bool:
        return self.line is not None

    @property
    def barrier(self) -> float:
        return barrier(self.line) if self.line is not None else math.nan

    @property
    def curve_barrier(self) -> float:
        return barrier(self.curve) if self.curve is not None else math.nan

    @property
    def fraction(self) -> float:
        return float(sum(self.projections)) if self.projections else math.nan

    def to_dict(self) -> dict[str, Any]:
        def rows(df: pd.DataFrame | None) -> list[dict[str, float]] | None:
            return None if df is None else df.to_dict(orient="records")

        r = np.asarray(self.random)
        return {
            "a": self.a, "b": self.b, "applicable": self.applicable, "notes": self.notes,
            "parameters": self.parameters, "distance": _num(self.distance),
            "barrier": _num(self.barrier), "line": rows(self.line),
            "curve_epochs": self.curve_epochs or None, "curve_barrier": _num(self.curve_barrier),
            "curve": rows(self.curve),
            "hessian_examples": self.hessian_examples, "eigenvalues": self.eigenvalues,
            "projections": self.projections, "fraction": _num(self.fraction),
            "random_fraction_mean": _num(float(r.mean())) if len(r) else None,
            "random_fraction_sd": _num(float(r.std(ddof=1))) if len(r) > 1 else None,
            "random_fractions": self.random,
        }

    def markdown(self) -> str:
        """The path table (one row per point) and the summary (barrier, Hessian projection)."""
        out = [f"A: {self.a}", f"B: {self.b}", *(f"note: {n}" for n in self.notes)]
        if not self.applicable:
            return "\n".join(out)
        header = ["t", "train loss", "val top-1", "test top-1"]
        rows = [[f"{r.t:.3f}", f"{r.loss:.4f}", f"{r.val_top1:.4f}", f"{r.test_top1:.4f}"]
                for r in self.line.itertuples()]
        if self.curve is not None:
            header += ["curve loss", "curve val top-1", "curve test top-1"]
            rows = [[*row, f"{c.loss:.4f}", f"{c.val_top1:.4f}", f"{c.test_top1:.4f}"]
                    for row, c in zip(rows, self.curve.itertuples(), strict=True)]
        out += ["", "Straight path from A (t = 0) to B (t = 1)"
                + (f", and the Bezier curve ({self.curve_epochs} epochs)" if self.curve is not None else "")
                + ":", "", table(rows, header, right=header)]
        r = np.asarray(self.random)
        summary = [["parameters", f"{self.parameters}"],
                   ["distance (L2 norm of w_A - w_B)", f"{self.distance:.4g}"],
                   ["barrier (straight path)", f"{self.barrier:.4g}"]]
        if self.curve is not None:
            summary.append(["barrier (Bezier curve)", f"{self.curve_barrier:.4g}"])
        if self.eigenvalues:
            k = len(self.eigenvalues)
            summary += [
                [f"top-{k} Hessian eigenvalues at B ({self.hessian_examples} examples)",
                 ", ".join(f"{v:.4g}" for v in self.eigenvalues)],
                ["fraction of the squared distance in their span", f"{self.fraction:.4g}"],
                [f"same for random directions ({len(r)} draws: mean ± sd)",
                 f"{r.mean():.4g} ± {r.std(ddof=1) if len(r) > 1 else math.nan:.2g}"],
            ]
        out += ["", table(summary, ["measure", "value"])]
        return "\n".join(out)


def _num(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def valley(run_a: str | Path, run_b: str | Path, points: int = POINTS, top_k: int = TOP_K,
           curve_epochs: int = 0, hessian_examples: int = HESSIAN_EXAMPLES, draws: int = RANDOM_DRAWS,
           train_examples: int | None = None, device: str = "cpu") -> Valley:
    """Load the pair and measure it (see the package docstring). `top_k` 0 skips the Hessian."""
    from bench.run.distributed import resolve_device

    if points < 2:
        raise ConfigError(f"--points = {points}: must be at least 2 (the two end points)")
    dev = resolve_device(device)
    b, data = load_endpoint(run_b, device=dev)
    a, _ = load_endpoint(run_a, data, dev)
    return measure_pair(a, b, data, points, top_k, curve_epochs, hessian_examples, draws, train_examples)


def measure_pair(a: Endpoint, b: Endpoint, data: Data, points: int = POINTS, top_k: int = TOP_K,
                 curve_epochs: int = 0, hessian_examples: int = HESSIAN_EXAMPLES, draws: int = RANDOM_DRAWS,
                 train_examples: int | None = None,
                 eigs: tuple[np.ndarray, np.ndarray] | None = None) -> Valley:
    """`valley` on loaded endpoints (B's model is left as it was: the path is walked on a copy);
    `eigs`: B's eigenpairs already computed (a board reuses one dense run's for every pruner)."""
    for key in ("model", "dataset"):
        if getattr(a.config, key) != getattr(b.config, key):
            raise ConfigError(f"A and B: {key} differs ({getattr(a.config, key)} vs "
                              f"{getattr(b.config, key)}); a valley compares two models of one "
                              "architecture on one data set")
    if a.config.budget.val_fraction != b.config.budget.val_fraction:
        raise ConfigError("A and B: budget.val_fraction differs, so their training sets differ")
    result = Valley(a.run_id, b.run_id, [n for n in (a.note, b.note, data_order_note(a, b)) if n])
    if a.model is None or b.model is None:
        return result
    w_a, w_b = flat(a.model), flat(b.model)
    result.parameters, result.distance = w_a.numel(), float((w_a - w_b).norm())
    train = training_batches(data, b.config.seed, train_examples)
    model = copy.deepcopy(b.model)  # walked along the path: its weights and batch-norm statistics change
    if top_k:
        vals, vecs = eigs if eigs is not None else hessian_eigs(
            model, training_batches(data, b.config.seed, hessian_examples), top_k)
        d = (w_a - w_b).double().cpu().numpy()
        result.eigenvalues = [float(v) for v in vals]
        result.projections = [span_fraction(vecs[:, i : i + 1], d) for i in range(vecs.shape[1])]
        result.random = [float(f) for f in random_fractions(vecs, draws)]
        result.hessian_examples = min(hessian_examples, data.num_train)
    result.line = walk(model, line(w_a, w_b, points), train, data)
    if curve_epochs:
        theta = fit_bezier(model, w_a, w_b, data, b.config, curve_epochs)
        ts = np.linspace(0.0, 1.0, points)
        result.curve = walk(model, [(float(t), bezier(w_a, theta, w_b, float(t))) for t in ts], train, data)
        result.curve_epochs = curve_epochs
    return result

"""`bench valley A B`: is run A's final model in the valley of run B's, and does it differ from it
only in directions that leave the training loss flat? (The gRDA paper's connectivity and
projection evidence, for any pruner.)

A and B are run folders, or selectors of one run each in `--in` (the grammar of `bench compare`:
`grda:c=0.01648,seed=0`). B defaults to the dense run of A's model, data set, seed and budget
(and optimizer family, where the records have one): runs with the same seed share the
initialization and the order of the mini-batches, so the pair is the paper's "fixed batch" pair.

Both final models are compared in the parameter space of the dense model (masks applied: pruned
weights are 0; VD's and STR's reparameterizations are folded into plain weights by the pruner's
`finalize`). Measured:

- the straight path w(t) = w_A + t (w_B - w_A) at `points` evenly spaced t in [0, 1]: training
  loss (mean cross-entropy over the training set, no augmentation, no regularizer) and validation
  and test top-1, batch-norm statistics recomputed from the training set at every point;
- the barrier: max over t of loss(t) - ((1 - t) loss(0) + t loss(1)), 0 for a convex path;
- optionally (`--curve-epochs E`) a quadratic Bezier curve (Garipov et al. 2018)
  (1 - t)^2 w_A + 2 t (1 - t) theta + t^2 w_B whose control point theta is trained for E epochs of
  SGD on the loss at a uniformly drawn t per mini-batch, with the same measurements along it;
- the top-k eigenpairs of the training-loss Hessian at B on a fixed sample of training examples
  (Lanczos: scipy's `eigsh` on Hessian-vector products by `torch.func`), and the fraction of
  ||w_A - w_B||^2 in their span, beside that fraction for random Gaussian directions (its
  expectation is k / number of parameters).

Not applicable (reported, not measured): a model whose final architecture differs from the dense
one (structured pruning). Measured but marked: pairs that do not share the data order (different
seeds or budgets, a pruner that rewinds or trains past the budget), where the projection is not
the paper's fixed-batch comparison.

    bench valley grda:c=0.01648,seed=0 --in runs/digits-mlp
    bench valley runs/x/grda-mlp-digits-s0-... runs/x/dense-mlp-digits-s0-... --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.compare import select
from bench.config import RunConfig
from bench.errors import ConfigError
from bench.io import read_json
from bench.markdown import table

if TYPE_CHECKING:
    import torch
    from torch import nn

    from bench.data import Data

POINTS = 21  # points on the path, ends included
TOP_K = 10  # Hessian eigenpairs
HESSIAN_EXAMPLES = 1000  # training examples the Hessian is taken on
RANDOM_DRAWS = 10  # random directions the projection fraction is read against
BATCH = 512  # evaluation batch size

Batches = list[tuple["torch.Tensor", "torch.Tensor"]]


# ------------------------------------------------------------------------------- loading runs


@dataclass
class Endpoint:
    """One finished run: its folder, config, result record and final model in the dense model's
    parameter space (None when that does not apply; `note` says why)."""

    run_dir: Path
    config: RunConfig
    result: dict[str, Any]
    model: nn.Module | None = None
    note: str | None = None

    @property
    def run_id(self) -> str:
        return str(self.result.get("run_id") or self.run_dir.name)


def read_run(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """A finished run folder's config and result; ConfigError unless it is one with a checkpoint."""
    run_dir = Path(run_dir)
    result = read_json(run_dir / "result.json")
    if not isinstance(result, dict) or not (run_dir / "config.json").is_file():
        raise ConfigError(f"{run_dir}: no readable config.json and result.json; is it a run folder "
                          "(runs/<run_id>)?")
    if result.get("status") != "ok":
        raise ConfigError(f"{run_dir}: the run's status is {result.get('status')!r}; only finished (ok) runs")
    if not (run_dir / "checkpoint.pt").is_file():
        raise ConfigError(f"{run_dir}: no checkpoint.pt, so no final weights")
    return _config(run_dir), result


def load_data(config: RunConfig, device: torch.device) -> Data:
    """The run's data set and validation split, without augmentation (the loss is measured on the
    training examples as they are)."""
    from bench.registry import DATASETS, MODELS

    info = MODELS.get(config.model)
    data = DATASETS.get(config.dataset).load(config.data_dir or "data", device, False, info.input_shapes[0],
                                             (info.classes or (10,))[0])
    return data.holdout(config.budget.val_fraction)


def load_final_model(run_dir: Path, config: RunConfig, data: Data) -> nn.Module:
    """The run's final model as it was evaluated (the pruner's `finalize`: masks applied), eval mode,
    on the run's device (`config.device`). The one place that reads a checkpoint."""
    from bench.run.checkpoint import load_built

    return load_built(run_dir, config.device, data=data)[1]


def load_endpoint(run_dir: str | Path, data: Data | None = None,
                  device: torch.device | None = None) -> tuple[Endpoint, Data]:
    """A run's `Endpoint`, its model loaded into a fresh dense model (architecture differs: `note`)."""
    from bench.registry import MODELS
    from bench.run.distributed import resolve_device

    run_dir = Path(run_dir)
    config, result = read_run(run_dir)
    device = device or resolve_device("cpu")
    data = data or load_data(config, device)
    final = load_final_model(run_dir, config, data)
    dense = MODELS.get(config.model).build(data.num_classes).to(device)
    mine, want = final.state_dict(), dense.state_dict()

    def shape(state: dict[str, Any], key: str) -> str:
        return "x".join(map(str, state[key].shape)) if key in state else "absent"

    differ = [k for k in {**want, **mine} if shape(mine, k) != shape(want, k)]
    if differ:
        k = differ[0]
        return Endpoint(run_dir, config, result, None, f"not applicable: {config.pruner} changes the "
                        f"architecture ({k}: {shape(mine, k)}, dense {shape(want, k)})"), data
    dense.load_state_dict(mine)
    return Endpoint(run_dir, config, result, dense.eval()), data


def data_order_note(a: Endpoint, b: Endpoint) -> str | None:
    """Why A and B did not see the same mini-batches in the same order (None: they did)."""
    from bench.registry import PRUNERS

    whys = []
    if a.config.seed != b.config.seed:
        whys.append(f"seeds differ ({a.config.seed} vs {b.config.seed})")
    if a.config.budget != b.config.budget:
        whys.append("budgets differ")
    for e in (a, b):
        if e.result.get("budget_multiplier") not in (None, 1, 1.0):
            whys.append(f"{e.config.pruner} trains {e.result['budget_multiplier']:g}x the budget's steps")
        if not getattr(PRUNERS.get(e.config.pruner), "same_data_order", True):
            whys.append(f"{e.config.pruner} rewinds its weights and retrains")
    return "data order differs: " + "; ".join(whys) + " (not a fixed-batch pair)" if whys else None


# ------------------------------------------------------------------------------- choosing runs


def _one(runs: pd.DataFrame, selector: str, where: str) -> Path:
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    found = select(ok, selector) if not ok.empty else ok
    if found.empty:
        raise ConfigError(f"{selector!r}: no finished (status ok) run under {where}")
    if len(found) > 1:
        ids = ", ".join(found["run_id"].head(10))
        more = ", ..." if len(found) > 10 else ""
        raise ConfigError(f"{selector!r} matches {len(found)} runs under {where} ({ids}{more}); name one, "
                          "e.g. add seed=0 and the hyperparameters")
    return Path(found["path"].iat[0])


def resolve(selector: str, runs: Callable[[], pd.DataFrame], where: str) -> Path:
    """A run folder: `selector` itself when it is a path, else the one run it selects."""
    path = Path(selector)
    if path.exists():
        if not (path / "result.json").is_file():
            raise ConfigError(f"{selector!r}: not a run folder (no result.json); give a run folder or a "
                              "selector such as grda:c=0.01648,seed=0")
        return path
    return _one(runs(), selector, where)


def dense_partner(a_dir: Path, runs: pd.DataFrame, where: str) -> Path:
    """The dense run of A's model, data set, seed and budget (and optimizer family, where recorded)."""
    config, result = read_run(a_dir)
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    ok = ok[(ok["pruner"] == "dense") & (ok["model"] == config.model) & (ok["dataset"] == config.dataset)
            & (ok["seed"] == config.seed)]
    ok = ok[[_config(Path(p)).budget == config.budget for p in ok["path"]]]
    family = result.get("optimizer_family")
    if family and "optimizer_family" in ok.columns:
        ok = ok[ok["optimizer_family"] == family]
    want = (f"dense run of model {config.model}, data set {config.dataset}, seed {config.seed}, "
            f"A's budget" + (f" and optimizer family {family}" if family else ""))
    if ok.empty:
        raise ConfigError(f"B: no {want} under {where}; train one (bench run --pruner dense --model "
                          f"{config.model} --dataset {config.dataset} --seed {config.seed} and A's budget "
                          "flags) or give B")
    if len(ok) > 1:
        raise ConfigError(f"B: {len(ok)} runs match ({want}: {', '.join(ok['run_id'])}); give B")
    return Path(ok["path"].iat[0])


def _config(run_dir: Path) -> RunConfig:
    config = read_json(run_dir / "config.json")
    if not isinstance(config, dict):
        raise ConfigError(f"{run_dir}: no readable config.json")
    return RunConfig.from_dict({k: v for k, v in config.items() if k not in ("run_id", "config_hash")})


# ------------------------------------------------------------------------------- measuring


def training_batches(data: Data, seed: int, examples: int | None = None, size: int = BATCH) -> Batches:
    """A fixed sample of the training set (its first `examples` in the order of `seed`'s epoch 0;
    None: all of it), in batches of `size`; unaugmented when `data` was loaded that way."""
    out: Batches = []
    left = data.num_train if examples is None else min(examples, data.num_train)
    for x, y in data.train_batches(size, 0, seed):
        if left <= 0:
            break
        out.append((x[:left], y[:left]))
        left -= len(y)
    return out


def _flat(model: nn.Module) -> torch.Tensor:
    from torch.nn.utils import parameters_to_vector

    return parameters_to_vector(model.parameters()).detach().clone()


def recompute_bn(model: nn.Module, batches: Batches) -> None:
    """Batch-norm running statistics recomputed over `batches` (no-op without BN): the mean is the
    exact mean over their examples, the variance the example-weighted mean of the batch variances
    (as Garipov et al.'s `bn_update`)."""
    import torch
    from torch import nn

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
    model.train()
    seen = 0
    with torch.no_grad():
        for x, _ in batches:
            for m in bns:  # weight of this batch in the running average: its share of the examples
                m.momentum = len(x) / (seen + len(x))
            model(x)
            seen += len(x)
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def measure(model: nn.Module, train: Batches, data: Data) -> dict[str, float]:
    """Training loss (mean cross-entropy over `train`) and validation and test top-1 of `model`."""
    import torch
    import torch.nn.functional as F

    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        loss = sum(float(F.cross_entropy(model(x), y, reduction="sum")) for x, y in train)
        out["loss"] = loss / sum(len(y) for _, y in train)
        for split, batches in (("val_top1", data.val_batches(BATCH)),
                               ("test_top1", data.test_batches(BATCH))):
            hits = total = 0
            for x, y in batches:
                hits += int((model(x).argmax(1) == y).sum())
                total += len(y)
            out[split] = hits / total if total else math.nan
    return out


def walk(model: nn.Module, weights: Iterable[tuple[float, torch.Tensor]], train: Batches,
         data: Data) -> pd.DataFrame:
    """`measure` at each (t, flat weights), batch norm recomputed: columns t, loss, val_top1, test_top1."""
    from torch.nn.utils import vector_to_parameters

    rows = []
    for t, w in weights:
        vector_to_parameters(w, model.parameters())
        recompute_bn(model, train)
        rows.append({"t": t, **measure(model, train, data)})
    return pd.DataFrame(rows)


def line(w_a: torch.Tensor, w_b: torch.Tensor, points: int) -> list[tuple[float, torch.Tensor]]:
    """Evenly spaced points of the straight path, the ends exactly w_a and w_b."""
    import torch

    ts = np.linspace(0.0, 1.0, points)
    return [(float(t), torch.lerp(w_a, w_b, float(t))) for t in ts]


def barrier(path: pd.DataFrame) -> float:
    """max over the path of loss(t) minus the chord between the end losses (0: no barrier)."""
    t, loss = path["t"].to_numpy(), path["loss"].to_numpy()
    chord = (1 - t) * loss[0] + t * loss[-1]
    return float(max(0.0, (loss - chord).max()))


def bezier(w_a: torch.Tensor, theta: torch.Tensor, w_b: torch.Tensor, t: float) -> torch.Tensor:
    return (1 - t) ** 2 * w_a + 2 * t * (1 - t) * theta + t**2 * w_b


def fit_bezier(model: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, data: Data, config: RunConfig,
               epochs: int) -> torch.Tensor:
    """The control point of a quadratic Bezier curve from w_a to w_b (Garipov et al. 2018): starts
    at the midpoint, trained by SGD (the run's lr, batch size and momentum, constant lr) on the loss
    at one uniformly drawn t per mini-batch; data order and t draws from the run's seed."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    b = config.budget
    names, shapes = _layout(model)
    buffers = dict(model.named_buffers())
    theta = ((w_a + w_b) / 2).requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=b.lr, momentum=b.momentum)
    g = torch.Generator().manual_seed(config.seed)
    model.train()
    for epoch in range(epochs):
        for x, y in data.train_batches(b.batch_size, epoch, config.seed):
            t = float(torch.rand((), generator=g))
            params = _unflat(bezier(w_a, theta, w_b, t), names, shapes)
            loss = F.cross_entropy(functional_call(model, {**params, **buffers}, (x,)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()
    return theta.detach()


def _layout(model: nn.Module) -> tuple[list[str], list[torch.Size]]:
    named = list(model.named_parameters())
    return [n for n, _ in named], [p.shape for _, p in named]


def _unflat(w: torch.Tensor, names: list[str], shapes: list[torch.Size]) -> dict[str, torch.Tensor]:
    sizes = [math.prod(s) for s in shapes]
    return {n: c.view(s) for n, c, s in zip(names, w.split(sizes), shapes, strict=True)}


def hessian_eigs(model: nn.Module, batches: Batches, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The k largest eigenvalues (descending) and their orthonormal eigenvectors (columns, float64)
    of the Hessian of the mean cross-entropy over `batches` with respect to the model's parameters,
    at its current weights (eval mode: batch norm uses its running statistics)."""
    import torch
    import torch.nn.functional as F
    from scipy.sparse.linalg import LinearOperator, eigsh
    from torch.func import functional_call, grad, jvp

    model.eval()
    w = _flat(model)
    names, shapes = _layout(model)
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
                logits = functional_call(model, {**_unflat(p, names, shapes), **buffers}, (x,))
                return F.cross_entropy(logits, y, reduction="sum") / n

            out += jvp(grad(loss), (w,), (v_t,))[1]
        return out.double().cpu().numpy()

    op = LinearOperator((w.numel(), w.numel()), matvec=hvp, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(w.numel())
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


# ------------------------------------------------------------------------------- the analysis


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
           train_examples: int | None = None, device: str = "cpu",
           eigs: tuple[np.ndarray, np.ndarray] | None = None) -> Valley:
    """Measure the pair (see the module docstring). `top_k` 0 skips the Hessian; `eigs`: B's
    eigenpairs already computed (a board reuses one dense run's for every pruner)."""
    from bench.run.distributed import resolve_device

    if points < 2:
        raise ConfigError(f"--points = {points}: must be at least 2 (the two end points)")
    dev = resolve_device(device)
    b, data = load_endpoint(run_b, device=dev)
    a, _ = load_endpoint(run_a, data, dev)
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
    w_a, w_b = _flat(a.model), _flat(b.model)
    result.parameters, result.distance = w_a.numel(), float((w_a - w_b).norm())
    train = training_batches(data, b.config.seed, train_examples)
    model = b.model
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


# ------------------------------------------------------------------------------- figures


def _figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # files, never windows
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _save(fig: Any, path: str | Path) -> Path:
    """`path` (PNG) and an SVG beside it, each written atomically."""
    import matplotlib.pyplot as plt

    from bench.io import atomic_write

    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, metadata={"Software": None}))
    atomic_write(path.with_suffix(".svg"),
                 lambda f: fig.savefig(f, format="svg", metadata={"Date": None, "Creator": None}))
    plt.close(fig)
    return path


def plot_path(result: Valley, path: str | Path) -> Path:
    """Training loss and validation/test top-1 along the path (and the curve): PNG + SVG."""
    fig, (ax_loss, ax_acc) = _figure(1, 2, figsize=(10, 3.8))
    paths = [("straight", result.line, "-")]
    if result.curve is not None:
        paths.append(("Bezier", result.curve, "--"))
    for name, df, style in paths:
        ax_loss.plot(df["t"], df["loss"], style, marker=".", color="C0", label=name)
        ax_acc.plot(df["t"], df["val_top1"], style, marker=".", color="C1", label=f"{name}: validation")
        ax_acc.plot(df["t"], df["test_top1"], style, marker=".", color="C2", label=f"{name}: test")
    title = f"barrier {result.barrier:.3g}" + (
        f" (Bezier curve: {result.curve_barrier:.3g})" if result.curve is not None else "")
    ax_loss.set(xlabel="t (0: A, 1: B)", ylabel="training loss", title=title)
    ax_acc.set(xlabel="t (0: A, 1: B)", ylabel="top-1")
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"A: {result.a}\nB: {result.b}", fontsize=9)
    return _save(fig, path)


# ------------------------------------------------------------------------------- boards


def board_valley(runs: pd.DataFrame, root: str | Path, points: int = 11, top_k: int = TOP_K,
                 hessian_examples: int = HESSIAN_EXAMPLES, draws: int = RANDOM_DRAWS,
                 confidence: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every finished non-dense run of `runs` (a `bench.results` runs table) against the dense run
    of its seed and budget under `root`: per (pruner, setting) the mean barrier and top-k span
    fraction over seeds with their `confidence` Student-t half-widths, the random directions'
    fraction, and a note where the comparison does not apply. Returns (table, paths): `paths` has
    the straight path of every run (pruner, setting, seed, t, loss, val_top1, test_top1), for
    `plot_board_paths`. The Hessian of each dense run is computed once."""
    from bench.stats import t_halfwidth

    root = Path(root)
    ok = runs[runs["status"] == "ok"] if "status" in runs.columns else runs
    ok = ok.assign(path=[str(_folder(r, root)) for r in ok.to_dict(orient="records")])
    hp = sorted(c for c in ok.columns if c.startswith("hparams."))
    per_run, paths, eig_cache = [], [], {}
    for r in ok[ok["pruner"] != "dense"].to_dict(orient="records"):
        setting = _setting(r, hp)
        base = {"pruner": r["pruner"], "setting": setting, "seed": r["seed"], "sparsity": r.get("sparsity")}
        try:
            b_dir = dense_partner(Path(r["path"]), ok, str(root))
        except ConfigError as e:
            per_run.append({**base, "note": str(e)})
            continue
        if b_dir not in eig_cache and top_k:
            b, data = load_endpoint(b_dir)
            sample = training_batches(data, b.config.seed, hessian_examples)
            eig_cache[b_dir] = hessian_eigs(b.model, sample, top_k)
        v = valley(r["path"], b_dir, points, top_k, hessian_examples=hessian_examples, draws=draws,
                   eigs=eig_cache.get(b_dir))
        per_run.append({**base, "barrier": v.barrier, "fraction": v.fraction,
                        "random_fraction": float(np.mean(v.random)) if v.random else math.nan,
                        "note": "; ".join(v.notes) or None})
        if v.line is not None:
            paths.append(v.line.assign(pruner=r["pruner"], setting=setting, seed=r["seed"]))
    df = pd.DataFrame(per_run)
    cols = ["pruner", "setting", "seeds", "sparsity", "barrier_mean", "barrier_ci", "fraction_mean",
            "fraction_ci", "random_fraction", "note"]
    if df.empty:
        return pd.DataFrame(columns=cols), pd.DataFrame()
    for c in ("barrier", "fraction", "random_fraction", "sparsity"):
        df[c] = pd.to_numeric(df.get(c), errors="coerce")
    g = df.groupby(["pruner", "setting"], sort=True, dropna=False)
    out = g.agg(seeds=("seed", "nunique"), sparsity=("sparsity", "mean"), barrier_mean=("barrier", "mean"),
                barrier_sd=("barrier", "std"), n=("barrier", "count"), fraction_mean=("fraction", "mean"),
                fraction_sd=("fraction", "std"), random_fraction=("random_fraction", "mean"),
                note=("note", lambda s: "; ".join(sorted({x for x in s if isinstance(x, str)})) or None),
                ).reset_index()
    out["barrier_ci"] = t_halfwidth(out["barrier_sd"], out["n"], confidence)
    out["fraction_ci"] = t_halfwidth(out["fraction_sd"], out["n"], confidence)
    return out[cols], (pd.concat(paths, ignore_index=True) if paths else pd.DataFrame())


def _setting(r: dict[str, Any], columns: list[str]) -> str:
    """A run's hyperparameters that differ from its pruner's defaults ("defaults" if none)."""
    from bench.registry import PRUNERS

    try:
        defaults = dataclasses.asdict(PRUNERS.get(r["pruner"]).Hparams())
    except ConfigError:  # a plugin's pruner not loaded here: every value
        defaults = {}
    parts = []
    for c in columns:
        key, value = c.removeprefix("hparams."), r[c]
        if (isinstance(value, float) and math.isnan(value)) or defaults.get(key, object()) == value:
            continue
        parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts) or "defaults"


def _folder(r: dict[str, Any], root: Path) -> Path:
    """A run's folder: its recorded path if it still exists, else `root/<run_id>` or one below it."""
    recorded = Path(str(r.get("path") or ""))
    if recorded.name and (recorded / "result.json").is_file():
        return recorded
    direct = root / str(r["run_id"])
    if direct.is_dir():
        return direct
    found = next(root.rglob(str(r["run_id"])), None)
    if found is None:
        raise ConfigError(f"run {r['run_id']}: no folder under {root}")
    return found


def board_markdown(valleys: pd.DataFrame) -> str:
    """`board_valley`'s table in Markdown: mean ± half-width over seeds, "n/a" with the reason where
    the comparison does not apply."""

    def pm(mean: float, ci: float, fmt: str) -> str:
        if math.isnan(mean):
            return "n/a"
        return format(mean, fmt) + ("" if math.isnan(ci) else f" ± {format(ci, fmt)}")

    rows = [[r.pruner, r.setting, r.seeds, "-" if math.isnan(r.sparsity) else f"{100 * r.sparsity:.1f}%",
             pm(r.barrier_mean, r.barrier_ci, ".3g"), pm(r.fraction_mean, r.fraction_ci, ".3g"),
             "-" if math.isnan(r.random_fraction) else f"{r.random_fraction:.3g}",
             r.note if isinstance(r.note, str) else ""]
            for r in valleys.itertuples(index=False)]
    header = ["pruner", "setting", "seeds", "sparsity", "barrier", "top-k fraction", "random directions",
              "note"]
    return table(rows, header, right=header[2:7])


def plot_board_paths(table: pd.DataFrame, paths: pd.DataFrame, level: float, path: str | Path) -> Path:
    """Training loss along the straight path to the dense run, one line per pruner (its setting
    whose mean sparsity is nearest `level`; mean over seeds): PNG + SVG."""
    from bench.plots import pruner_palette

    if paths.empty:
        raise ConfigError("no measured paths to plot (every comparison was not applicable)")
    palette = pruner_palette(paths["pruner"].unique())
    fig, ax = _figure(figsize=(6.5, 4))
    measured = table.dropna(subset=["barrier_mean"])
    for pruner, rows in measured.groupby("pruner"):
        best = rows.iloc[(rows["sparsity"] - level).abs().argmin()]
        mine = paths[(paths["pruner"] == pruner) & (paths["setting"] == best["setting"])]
        mean = mine.groupby("t")["loss"].mean()
        ax.plot(mean.index, mean.values, marker=".", color=palette[pruner],
                label=f"{pruner} ({100 * best['sparsity']:.1f}% sparse)")
    ax.set(xlabel="t (0: pruned run, 1: dense run of its seed)", ylabel="training loss",
           title=f"Straight path to the dense model, near {100 * level:g}% sparsity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


# ------------------------------------------------------------------------------- CLI


def cmd_valley(args: argparse.Namespace) -> int:
    from bench.results import load
    from bench.validate import check_device_here

    for flag, value, low in (("--points", args.points, 2), ("--top-k", args.top_k, 0),
                             ("--curve-epochs", args.curve_epochs, 0),
                             ("--hessian-examples", args.hessian_examples, 1), ("--draws", args.draws, 2)):
        if value < low:
            raise ConfigError(f"{flag} = {value}: must be at least {low}")
    if args.train_examples is not None and args.train_examples < 1:
        raise ConfigError(f"--train-examples = {args.train_examples}: must be at least 1 (or left out: all)")
    if args.figure and Path(args.figure).suffix != ".png":
        raise ConfigError(f"--figure = {args.figure!r}: must end in .png (an SVG is written beside it)")
    if args.figure and not Path(args.figure).resolve().parent.is_dir():
        raise ConfigError(f"--figure = {args.figure!r}: its folder does not exist")
    check_device_here(args.device)
    where = ", ".join(args.runs_in) if args.runs_in else None
    cache: dict[str, pd.DataFrame] = {}

    def runs(dirs: list[str]) -> pd.DataFrame:
        key = "\0".join(dirs)
        if key not in cache:
            cache[key] = load(*dirs)
            if cache[key].empty:
                raise ConfigError(f"no runs under {', '.join(dirs)} (set --in)")
        return cache[key]

    a = resolve(args.a, lambda: runs(args.runs_in or ["runs"]), where or "runs")
    if args.b:
        b = resolve(args.b, lambda: runs(args.runs_in or ["runs"]), where or "runs")
    else:  # by default, the dense partner is searched beside A
        dirs = args.runs_in or [str(a.parent)]
        b = dense_partner(a, runs(dirs), ", ".join(dirs))
    result = valley(a, b, args.points, args.top_k, args.curve_epochs, args.hessian_examples, args.draws,
                    args.train_examples, args.device)
    if args.figure and result.applicable:
        plot_path(result, args.figure)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(result.markdown())
        if args.figure and result.applicable:
            print(f"\nfigure: {args.figure}")
    if not result.applicable:
        print(f"bench valley: nothing measured: {'; '.join(result.notes)}", file=sys.stderr)
        return 1
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", metavar="A",
                   help="a run folder, or a selector of one run in --in: grda:c=0.01648,seed=0")
    p.add_argument("b", metavar="B", nargs="?",
                   help="the same for the other end (default: the dense run of A's seed and budget)")
    p.add_argument("--in", dest="runs_in", nargs="+", metavar="PATH",
                   help="run folders the selectors (and B's default) search (default: runs; for B's "
                   "default with A a folder: A's parent folder)")
    p.add_argument("--points", type=int, default=POINTS,
                   help=f"points on the path, ends included (default {POINTS})")
    p.add_argument("--top-k", type=int, default=TOP_K,
                   help=f"Hessian eigenpairs at B (default {TOP_K}; 0: no Hessian)")
    p.add_argument("--hessian-examples", type=int, default=HESSIAN_EXAMPLES,
                   help=f"training examples the Hessian is taken on (default {HESSIAN_EXAMPLES})")
    p.add_argument("--draws", type=int, default=RANDOM_DRAWS,
                   help=f"random directions for the projection's baseline (default {RANDOM_DRAWS})")
    p.add_argument("--curve-epochs", type=int, default=0,
                   help="also fit a quadratic Bezier curve for this many epochs (default 0: no curve)")
    p.add_argument("--train-examples", type=int, default=None,
                   help="training examples the loss along the path is measured on (default: all)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    p.add_argument("--figure", default="valley.png",
                   help="where to write the figure: a .png, with an .svg beside it (default valley.png; "
                   "'' for none)")
    p.add_argument("--json", action="store_true", help="the measurements as JSON")
    p.set_defaults(func=cmd_valley)

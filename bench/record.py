"""The run record: every field of a run's `result.json`, its kind and its default, in one place.

The trainer writes a `RunRecord`; `bench status`, `bench gather`, the leaderboard and `bench run`'s
output all take their field names from here. A field is an identity field (what was run), a
metric (what it measured) or provenance (where and with what). Every metric and provenance field
has a default, so a result written before a field existed loads with that default instead of
dropping out of tables; only the identity fields and `status` are required.

A new metric is one new field below (with its default and help), nothing else.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["identity", "metric", "provenance"]
STATUSES = ("ok", "diverged", "failed")  # what a finished attempt records
FINISHED = ("ok", "diverged")  # statuses that are final: re-running returns them


def _f(kind: Kind, help: str, default: Any = None, required: bool = False) -> Any:
    return field(default=default, metadata={"kind": kind, "help": help, "required": required})


@dataclass
class RunRecord:
    """One run's result (`runs/<run_id>/result.json`)."""

    # -- identity: what was run (required in every record) ---------------------------------------
    run_id: str = _f("identity", "<pruner>-<model>-<dataset>-s<seed>-<hash of the non-default config>",
                     "", True)
    config_hash: str = _f("identity", "hash of the whole resolved config", "", True)
    pruner: str = _f("identity", "pruner name", "", True)
    model: str = _f("identity", "model name", "", True)
    dataset: str = _f("identity", "dataset name", "", True)
    seed: int = _f("identity", "the run's seed (initialisation and data order)", 0, True)
    hparams: dict[str, Any] = _f("identity", "the pruner's resolved hyperparameters", None, True)
    budget: dict[str, Any] = _f("identity", "the shared training budget", None, True)
    status: str = _f("identity", "ok | diverged | failed", "", True)

    # -- metrics: what the run measured -------------------------------------------------------
    top1: float | None = _f("metric", "test top-1 accuracy of the final model (fraction)")
    val_top1: float | None = _f("metric", "validation top-1 of the final model (fraction; None: trained "
                                "without a validation split, e.g. a result from before it existed)")
    top5: float | None = _f("metric", "test top-5 accuracy (fraction)")
    sparsity: float | None = _f("metric", "fraction of zero conv/linear weights (removed ones count as zero)")
    sparsity_all: float | None = _f("metric", "fraction of zero parameters, all of them (the gRDA paper's)")
    layer_sparsity: dict[str, float] | None = _f("metric", "per conv/linear layer, its fraction of zeros")
    nonzero_params: int | None = _f("metric", "non-zero parameters of the final model")
    total_params: int | None = _f("metric", "parameters of the final model")
    params_dense: int | None = _f("metric", "parameters of the model before pruning")
    macs_dense: float | None = _f("metric", "conv/linear multiply-accumulates of one forward pass of one "
                                  "example, before pruning")
    macs_sparse: float | None = _f("metric", "the same for the final model, each layer's count weighted by "
                                   "its density (non-zero weights / weights)")
    num_train: int | None = _f("metric", "training examples trained on (the training set less the "
                               "validation split)")
    num_val: int | None = _f("metric", "validation examples (held out of the training set; 0: none)")
    num_test: int | None = _f("metric", "test examples evaluated")
    epochs_completed: int | None = _f("metric", "epochs trained")
    steps: int | None = _f("metric", "optimizer steps taken")
    samples_seen: int | None = _f("metric", "training examples seen")
    train_time_s: float | None = _f("metric", "wall time of the training loop (no evaluation), seconds")
    step_time_ms: float | None = _f("metric", "median time of one training step, milliseconds")
    step_time_iqr_ms: float | None = _f("metric", "interquartile range of the step times, milliseconds")
    loaded: bool | None = _f("metric", "timed on a loaded machine: the 1-minute load average at the start or "
                             "end of training exceeded the machine's core count (times not comparable)")
    peak_memory_bytes: int | None = _f("metric", "CUDA: allocator peak; CPU: process peak resident memory")
    peak_tensor_bytes: int | None = _f("metric", "the training's own peak: CUDA: allocator peak over "
                                       "training; CPU: peak bytes of live tensors over a window of "
                                       "training steps (see README)")
    state_bytes: int | None = _f("metric", "bytes of parameters, gradients, optimizer and pruner state")
    train_macs: float | None = _f("metric", "multiply-accumulates spent training (3x forward per example, at "
                                  "the density each layer computes with; scoring passes included)")
    train_compute_multiplier: float | None = _f("metric", "train_macs / those of one dense run of the budget")
    budget_multiplier: float | None = _f("metric", "optimizer steps run / the budget's (IMP, full budget "
                                         "per round: > 1)")
    resumed: bool | None = _f("metric", "whether the run resumed from a checkpoint")
    # measured inference speed-up of the final model (bench.inference); per backend: below
    speedup_theoretical: float | None = _f("metric", "dense MACs / remaining MACs of one forward pass")
    speedup_best: float | None = _f("metric", "best measured speed-up over dense, throughput batch (>= 1)")
    speedup_best_backend: str | None = _f("metric", "the backend giving speedup_best")
    speedup_best_b1: float | None = _f("metric", "best measured speed-up over dense at batch 1")
    speedup_best_backend_b1: str | None = _f("metric", "the backend giving speedup_best_b1")
    speedup_device: str | None = _f("metric", "device the forward passes were timed on")
    speedup_threads: int | None = _f("metric", "torch threads while timing")
    speedup_batch: int | None = _f("metric", "the throughput batch size (batch 1 is measured too)")
    speedup_repeats: int | None = _f("metric", "timing rounds per backend and batch (medians over them)")
    speedup_reference: str | None = _f("metric", "what `dense` timed: the 'trained' model, or the 'unpruned' "
                                       "architecture when the pruner removed channels in training")
    speedup_check_examples: int | None = _f("metric", "test examples whose logits were compared")
    speedup_time_s: float | None = _f("metric", "wall time of the whole speed-up measurement")
    diverged_epoch: int | None = _f("metric", "the epoch whose loss was NaN or inf (status diverged)")
    error: str | None = _f("metric", "why the run failed (status failed)")

    # -- provenance: where and with what ------------------------------------------------------
    device: str | None = _f("provenance", "the device trained on")
    gpu_type: str | None = _f("provenance", "CUDA device name (None on CPU): compare costs per type")
    gpus: int | None = _f("provenance", "ranks (torch.distributed world size; GPUs on CUDA)")
    precision: str | None = _f("provenance", "fp32 (TF32 on CUDA) | bf16 autocast: the budget's precision")
    torch_version: str | None = _f("provenance", "torch version")
    torchvision_version: str | None = _f("provenance", "torchvision version")
    torch_pruning_version: str | None = _f("provenance", "torch-pruning version (MACs, channel pruning)")
    numpy_version: str | None = _f("provenance", "numpy version")
    git_sha: str | None = _f("provenance", "the harness's git commit")
    git_dirty: bool | None = _f("provenance", "whether the harness's git tree had uncommitted changes")
    slurm_job_id: str | None = _f("provenance", "SLURM job (ARRAYJOB_TASK), if any")
    hostname: str | None = _f("provenance", "machine")
    optimizer: str | None = _f("provenance", "the optimizer the pruner trained with, and its settings")
    optimizer_family: str | None = _f("provenance", "sgd | sgd_momentum | adam: the family of the dense "
                                      "model the run is compared with")
    cpu_model: str | None = _f("provenance", "CPU model name")
    cpu_count: int | None = _f("provenance", "logical CPUs of the machine")
    torch_threads: int | None = _f("provenance", "torch intra-op threads of the run")
    load_avg_before: float | None = _f("provenance", "1-minute load average when training started")
    load_avg_after: float | None = _f("provenance", "1-minute load average when training ended")
    started_at: str | None = _f("provenance", "start, ISO 8601 UTC")
    finished_at: str | None = _f("provenance", "end, ISO 8601 UTC")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        """A record from a result.json: renamed fields take their new names, missing fields their
        defaults; unknown ones are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in renamed(d).items() if k in names})


# Per inference backend (`bench.inference.BACKENDS`, `2:4` written `2to4`), the same fields.
SPEEDUP_BACKENDS = ("dense", "compact", "sparse", "2to4")
_PER_BACKEND = (
    ("status", str, "ok | refused (outputs differ from the trained model's) | not_applicable | failed"),
    ("reason", str, "why not ok; for sparse, the formats used (csr:3,bsr16:1)"),
    ("max_abs_diff", float, "max |logit - trained model's logit| on the checked examples"),
    ("ms_b1", float, "median forward latency at batch 1, ms (when ok)"),
    ("ms", float, "median forward time of a throughput batch, ms (when ok)"),
    ("b1", float, "dense time / this backend's at batch 1 (median of per-round ratios)"),
    ("", float, "dense time / this backend's at the throughput batch (median of per-round ratios)"),
)
RunRecord = dataclasses.make_dataclass(  # type: ignore[misc]
    "RunRecord",
    [(f"speedup_{b}" + (f"_{s}" if s else ""), tp | None, _f("metric", f"{b}: {help}"))
     for b in SPEEDUP_BACKENDS for s, tp, help in _PER_BACKEND],
    bases=(RunRecord,),
)
RunRecord.__doc__ = "One run's result (`runs/<run_id>/result.json`)."

FIELDS: tuple[dataclasses.Field, ...] = dataclasses.fields(RunRecord)


def names(kind: Kind) -> tuple[str, ...]:
    return tuple(f.name for f in FIELDS if f.metadata["kind"] == kind)


IDENTITY = names("identity")
METRICS = names("metric")
PROVENANCE = names("provenance")
REQUIRED = tuple(f.name for f in FIELDS if f.metadata["required"])
DEFAULTS: dict[str, Any] = {f.name: f.default for f in FIELDS}
NESTED = ("hparams", "budget")  # objects, flattened into `hparams.<key>` / `budget.<key>` columns
# fields written under an older name, read under the new one (the values mean the same)
RENAMED = {"flops_dense": "macs_dense", "flops_sparse": "macs_sparse"}


def _json_types(annotation: Any) -> tuple[type, ...]:
    """The JSON value types a field of this annotation may hold (None aside)."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, _UnionType) else ()
    kinds = [a for a in args if a is not type(None)] or [annotation]
    out: list[type] = []
    for k in kinds:
        k = typing.get_origin(k) or k
        out += {float: [int, float], int: [int], bool: [bool], str: [str], dict: [dict]}.get(k, [object])
    return tuple(out)


_UnionType = type(int | None)
TYPES: dict[str, tuple[type, ...]] = {
    name: _json_types(hint) for name, hint in typing.get_type_hints(RunRecord).items()
}


_EXPECTED = {float: "a number", int: "an integer", bool: "true or false", str: "a string", dict: "an object"}


def _type_problem(key: str, value: Any) -> str | None:
    kinds = TYPES[key]
    if value is None and DEFAULTS[key] is None and key not in NESTED:
        return None
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):  # true is no number
        return None
    expected = next(_EXPECTED[k] for k in (float, *kinds) if k in kinds and k in _EXPECTED)
    return f"{key} = {value!r:.60}: expected {expected}"


def problems(record: Any) -> str | None:
    """Why `record` (a parsed result.json) cannot make a row, or None if it can: not an object, a
    status that is not one of STATUSES, a required field missing, or a field of the wrong type."""
    if not isinstance(record, dict):
        return "result.json is not a JSON object"
    status = record.get("status")
    if status not in STATUSES:
        return f"result.json has status {status!r}; valid: {', '.join(STATUSES)}"
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return f"result.json lacks field(s) {', '.join(missing)}"
    bad = [p for k in TYPES if k in record and (p := _type_problem(k, record[k]))]
    if bad:
        return "result.json field(s) of the wrong type: " + "; ".join(bad)
    return None


def renamed(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with fields written under an old name (see RENAMED) under their new one."""
    if not any(old in record for old in RENAMED):
        return record
    out = {RENAMED.get(k, k): v for k, v in record.items() if k not in RENAMED}
    out.update({new: record[old] for old, new in RENAMED.items() if old in record and new not in record})
    return out


def finished(record: Any) -> bool:
    """Whether `record` (a parsed result.json, or None) is a valid, final result: re-running
    returns it instead of training. Anything else (missing, truncated, foreign) is recomputed."""
    return problems(record) is None and record["status"] in FINISHED


def with_defaults(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with every schema field present (a missing one at its default, a renamed one under its
    new name); extra keys kept."""
    return {**DEFAULTS, **renamed(record)}


LOAD_FACTOR = 1.5  # runnable processes per core above which a machine counts as loaded


def is_loaded(before: float | None, after: float | None, cores: int | None) -> bool | None:
    """Whether a run was timed on a loaded machine: a 1-minute load average above LOAD_FACTOR x the
    cores at its start or end. A sweep that fills the cores with its own one-thread jobs runs at a
    load about equal to the core count (2-cores board: 2.2-2.7); other work on top of it lifts it
    beyond 1.5 per core."""
    loads = [x for x in (before, after) if x is not None and x == x]
    if not loads or not cores or cores != cores:
        return None
    return max(loads) > LOAD_FACTOR * cores

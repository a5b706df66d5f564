"""The run record: every field of a run's `result.json`, its kind and its default, in one place.

The trainer writes a `RunRecord`; `bench status`, `bench gather`, the leaderboard and `bench run`'s
output all take their field names from here. A field is an identity field (what was run), a
metric (what it measured) or provenance (where and with what). Every metric and provenance field
has a default, so a result written before a field existed loads with that default instead of
dropping out of tables; only the identity fields and `status` are required.

A new metric is one new field below (with its default and help), nothing else. A field that a
reader sees also carries its label, unit and format (`shown`): the board's main table (`board=`:
its position there), `bench compare`'s metrics (`compare=True`) and the README's column glossary
(`glossary()`) are all derived from these declarations, so a new board column is one declaration.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.runs import Backend, RunStatus

Kind = Literal["identity", "metric", "provenance"]
STATUSES = tuple(s.value for s in RunStatus)  # what a finished attempt records
FINISHED = tuple(s.value for s in RunStatus if s.finished)  # final: re-running returns them


@dataclass(frozen=True)
class Shown:
    """How a quantity is shown to readers: `label` and `unit` make its column header, values are
    multiplied by `scale` and written with `fmt`; `board`: its position in a board's main table
    (None: not there); `compare`: one of `bench compare`'s metrics; `interval`: shown as mean ±
    the half-width of its 95% interval over seeds (else the plain value)."""

    name: str
    label: str
    unit: str = ""
    scale: float = 1.0
    fmt: str = ".4g"
    help: str = ""
    board: int | None = None
    compare: bool = False
    interval: bool = True

    @property
    def header(self) -> str:
        return f"{self.label} {self.unit}".strip()

    def format(self, value: Any) -> str:
        """`value` in the column's unit ("" for a missing one)."""
        if value is None or value != value:
            return ""
        return format(float(value) * self.scale, self.fmt)


def _f(kind: Kind, help: str, default: Any = None, required: bool = False, *, label: str | None = None,
       unit: str = "", scale: float = 1.0, fmt: str = ".4g", board: int | None = None,
       compare: bool = False, interval: bool = True) -> Any:
    meta: dict[str, Any] = {"kind": kind, "help": help, "required": required}
    if label is not None:
        meta["shown"] = dict(label=label, unit=unit, scale=scale, fmt=fmt, board=board, compare=compare,
                             interval=interval)
    return field(default=default, metadata=meta)


PERCENT = dict(unit="%", scale=100.0, fmt=".2f")
MIB = dict(unit="MiB", scale=2.0**-20, fmt=".3f")


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
    top1: float | None = _f("metric", "test top-1 accuracy of the final model (fraction)",
                            label="test top-1", **PERCENT, board=3, compare=True)
    val_top1: float | None = _f("metric", "validation top-1 of the final model (fraction; None: trained "
                                "without a validation split, e.g. a result from before it existed)",
                            label="val top-1", **PERCENT, board=4, compare=True)
    top5: float | None = _f("metric", "test top-5 accuracy (fraction)")
    sparsity: float | None = _f("metric", "fraction of zero conv/linear weights (removed ones count as zero)",
                                label="sparsity", **PERCENT, board=5, compare=True)
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
    train_time_s: float | None = _f("metric", "wall time of the training loop (no evaluation), seconds",
                                    label="train time", unit="s", fmt=".1f", compare=True)
    step_time_ms: float | None = _f("metric", "median time of one training step, milliseconds")
    step_time_iqr_ms: float | None = _f("metric", "interquartile range of the step times, milliseconds")
    loaded: bool | None = _f("metric", "timed on a loaded machine (see is_loaded: times not comparable)")
    peak_memory_bytes: int | None = _f("metric", "CUDA: allocator peak; CPU: process peak resident memory",
                                       label="process peak RSS", **MIB, compare=True)
    peak_tensor_bytes: int | None = _f("metric", "the training's own peak: CUDA: allocator peak over "
                                       "training; CPU: peak bytes of live tensors over a window of "
                                       "training steps (see README)",
                                       label="training peak", **MIB, board=13, compare=True)
    state_bytes: int | None = _f("metric", "bytes of parameters, gradients, optimizer and pruner state",
                                 label="state", **MIB, board=15, compare=True)
    train_macs: float | None = _f("metric", "multiply-accumulates spent training (3x forward per example, at "
                                  "the density each layer computes with; scoring passes included)")
    train_compute_multiplier: float | None = _f("metric", "train_macs / those of one dense run of the budget",
                                                label="train compute", unit="× dense", fmt=".3g", board=9,
                                                interval=False)
    budget_multiplier: float | None = _f("metric", "optimizer steps run / the budget's (1 for most "
                                         "methods; IMP training a full budget per round: about its "
                                         "rounds + 1)",
                                         label="budget", unit="×", fmt=".3g", board=7, interval=False)
    resumed: bool | None = _f("metric", "whether the run resumed from a checkpoint")
    # measured inference speed-up of the final model (bench.inference); per backend: below
    speedup_theoretical: float | None = _f("metric", "dense MACs / remaining MACs of one forward pass")
    speedup_best: float | None = _f("metric", "best measured speed-up over dense, throughput batch (>= 1)",
                                    label="measured speed-up", unit="×", fmt=".2f", board=8)
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
    code_hashes: dict[str, str] | None = _f("provenance", "sha256 of the source file of the run's pruner and "
                                            "of each plugin module that registered its model or data set, "
                                            "by module name: a result whose hashes differ from the current "
                                            "code's is trained anew (bench.code_version)")
    slurm_job_id: str | None = _f("provenance", "SLURM job (ARRAYJOB_TASK), if any")
    hostname: str | None = _f("provenance", "machine")
    optimizer: str | None = _f("provenance", "the optimizer the pruner trained with, and its settings")
    optimizer_family: str | None = _f("provenance", "the family of the dense model this run is compared "
                                      "with: sgd (no momentum, no weight decay; gRDA maps here), "
                                      "sgd_momentum, adam")
    cpu_model: str | None = _f("provenance", "CPU model name")
    cpu_count: int | None = _f("provenance", "logical CPUs of the machine")
    torch_threads: int | None = _f("provenance", "torch intra-op threads of the run")
    compiled: bool | None = _f("provenance", "the training forward ran torch.compile'd (--compile)")
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
SPEEDUP_BACKENDS = tuple(b.key for b in Backend)
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


# Quantities a board computes from the fields (bench.board.prepare / summary), shown like fields.
DERIVED: tuple[Shown, ...] = (
    Shown("drop_vs_dense", "top-1 drop vs own dense", "pp", 100.0, ".2f",
          "the dense model's test top-1 minus this row's, over the seeds both have; the dense model is the "
          "one of the same section trained with the same optimizer family (optimizer_family)", board=1),
    Shown("optimizer_family", "optimizer", "", 1.0, "", "the optimizer family of the row (sgd: no momentum "
          "and no weight decay, gRDA's; sgd_momentum; adam): its dense reference", board=2, interval=False),
    Shown("macs_reduction", "MACs reduction", "×", 1.0, ".2f", "dense / sparse conv/linear multiply-"
          "accumulates of one forward pass (macs_dense / macs_sparse)", board=6),
    Shown("timed_step_ms", "timed step", "ms", 1.0, ".3g", "median time of one training step in the board's "
          "timing phase (every setting timed serially on a quiet machine, interleaved with the dense model "
          "of its optimizer family; a dense row: its own steps there)",
          board=11, interval=False),
    Shown("time_vs_dense", "time vs dense", "", 1.0, ".2f", "from the board's timing phase only: median over "
          "rounds of the step time over its own dense model's in the same round, with its 95% interval over "
          "rounds; empty on a board without one (the accuracy runs' wall times are never compared)",
          board=12, interval=False),
    Shown("memory_vs_dense", "memory vs dense", "", 1.0, ".2f", "training peak / that of its dense reference",
          board=14, interval=False),
    Shown("state_vs_dense", "state vs dense", "", 1.0, ".2f", "state / that of its dense reference",
          board=16, interval=False),
)


def _shown(f: dataclasses.Field) -> Shown | None:
    meta = f.metadata.get("shown")
    return None if meta is None else Shown(f.name, help=f.metadata["help"], **meta)


SHOWN: dict[str, Shown] = {s.name: s for s in (*filter(None, map(_shown, dataclasses.fields(RunRecord))),
                                                 *DERIVED)}
BOARD: tuple[Shown, ...] = tuple(sorted((s for s in SHOWN.values() if s.board is not None),
                                        key=lambda s: s.board or 0))  # the main table's columns, in order
COMPARED: tuple[Shown, ...] = tuple(s for s in SHOWN.values() if s.compare)  # `bench compare`'s metrics


def glossary() -> str:
    """The README's column glossary: one line per column of a board's main table."""
    units = {"%": " Shown in percent.", "pp": " In percentage points (positive: below its dense model)."}
    return "\n".join(f"- **{s.header}**: {s.help}.{units.get(s.unit, '')}" for s in BOARD) + "\n"


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
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
        return f"{key} = {value!r:.30}: beyond the 64-bit integer range a table can hold"
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
LOADED_RULE = (f"a run is loaded when the 1-minute load average at the start or end of its timing exceeds "
               f"{LOAD_FACTOR:g} per logical core (bench.record.is_loaded)")


def is_loaded(before: float | None, after: float | None, cores: int | None) -> bool | None:
    """Whether a run was timed on a loaded machine: a 1-minute load average above LOAD_FACTOR x the
    cores at its start or end. A sweep that fills the cores with its own one-thread jobs runs at a
    load about equal to the core count (2-cores board: 2.2-2.7); other work on top of it lifts it
    beyond 1.5 per core."""
    loads = [x for x in (before, after) if x is not None and x == x]
    if not loads or not cores or cores != cores:
        return None
    return max(loads) > LOAD_FACTOR * cores

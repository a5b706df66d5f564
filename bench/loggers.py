"""Experiment trackers as trainer callbacks: TensorBoard, Weights & Biases, MLflow.

Off by default; a run asks for them by name (`bench run --logger tensorboard`, or
`loggers = ["tensorboard", "wandb"]` at the top of a sweep file, or `--set loggers=["mlflow"]`).
They are not part of a run's identity: turning one on never renames or reruns a run. Each needs
its package, installed with an extra from the clone: `pip install -e '.[tensorboard]'` (or
`[wandb]`, `[mlflow]`). Where they write:

- tensorboard: event files in `<run folder>/tensorboard/` (`tensorboard --logdir runs/`);
- wandb: a run named by the run_id in project `prunebench` (`WANDB_PROJECT` overrides it); set
  `WANDB_MODE=offline` to keep it in `<run folder>/wandb/` and `wandb sync` it later;
- mlflow: a run named by the run_id in the tracking store of `MLFLOW_TRACKING_URI` (a server, or
  a local database such as `sqlite:///mlflow.db`), experiment `prunebench`
  (`MLFLOW_EXPERIMENT_NAME` overrides it).

Each logs per epoch the training loss and top-1, the validation top-1 (the test set only at the
end), sparsity, ||w||_2/||w||_1 and the learning rate (step = epoch, counting from 1), the run's
config as hyperparameters, and the final record's metrics at the end. They run without a server:
tensorboard writes files, wandb offline (WANDB_MODE=offline), mlflow into a local database.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.callbacks import Callback

if TYPE_CHECKING:
    from bench.run.trainer import Trainer

EPOCH_KEYS = ("loss", "train_top1", "val_top1", "sparsity", "w_l2_l1", "lr")
FINAL_KEYS = ("top1", "val_top1", "top5", "sparsity", "sparsity_all", "train_time_s", "step_time_ms",
              "peak_memory_bytes", "state_bytes")


@dataclass(frozen=True)
class LoggerInfo:
    target: str  # "module:Class", imported only when a run asks for it
    package: str  # the import that must succeed
    extra: str  # pip install 'prunebench[<extra>]'


LOGGERS: dict[str, LoggerInfo] = {
    "tensorboard": LoggerInfo("bench.loggers:TensorBoardLogger", "tensorboard", "tensorboard"),
    "wandb": LoggerInfo("bench.loggers:WandbLogger", "wandb", "wandb"),
    "mlflow": LoggerInfo("bench.loggers:MLflowLogger", "mlflow", "mlflow"),
}


def create(names: tuple[str, ...] | list[str], run_dir: Path) -> list[Callback]:
    """The callbacks of the loggers named (validated beforehand by bench.validate.check_loggers)."""
    out = []
    for name in names:
        module, _, cls = LOGGERS[name].target.partition(":")
        out.append(getattr(importlib.import_module(module), cls)(Path(run_dir)))
    return out


def _scalars(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: float(row[k]) for k in keys
            if isinstance(row.get(k), int | float) and not isinstance(row[k], bool)}


def _params(trainer: Trainer) -> dict[str, Any]:
    c = trainer.config
    flat = {"pruner": c.pruner, "model": c.model, "dataset": c.dataset, "seed": c.seed, "run_id": c.run_id}
    flat.update({f"hparams.{k}": v for k, v in c.hparams.items()})
    flat.update({f"budget.{k}": v for k, v in c.to_dict()["budget"].items()})
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in flat.items()}


class TensorBoardLogger(Callback):
    """Scalars `epoch/<key>` per epoch (validation top-1 included, never the test set's) and
    `final/<key>` at the end, and an HParams summary (the config and its final metrics), in
    `<run folder>/tensorboard/`."""

    def __init__(self, run_dir: Path) -> None:
        self.log_dir = run_dir / "tensorboard"
        self.writer: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))
        self.writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in _params(trainer).items()))

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        for k, v in _scalars(row, EPOCH_KEYS).items():
            self.writer.add_scalar(f"epoch/{k}", v, row["epoch"] + 1)
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        final = _scalars(record, FINAL_KEYS)
        for k, v in final.items():
            self.writer.add_scalar(f"final/{k}", v, trainer.epoch)
        # the HParams dashboard: one row per run (its config) with its final metrics, in the run's own
        # event folder ("."), so `tensorboard --logdir runs/` tabulates every run of a sweep
        self.writer.add_hparams(_params(trainer), {f"hparam/{k}": v for k, v in final.items()}, run_name=".")
        self.writer.close()


class WandbLogger(Callback):
    """A W&B run with id = run_id (a resumed run continues it); offline with WANDB_MODE=offline."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.run = run_dir, None

    def on_fit_start(self, trainer: Trainer) -> None:
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "prunebench"),
                              name=trainer.config.run_id, id=trainer.config.run_id, resume="allow",
                              dir=str(self.run_dir), config=_params(trainer))

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.run.log(_scalars(row, EPOCH_KEYS), step=row["epoch"] + 1)

    def on_fit_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in _scalars(record, FINAL_KEYS).items()})
        self.run.finish()


class MLflowLogger(Callback):
    """An MLflow run named by the run_id, in the store of MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.mlflow: Any = None

    def on_fit_start(self, trainer: Trainer) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "prunebench"))
        mlflow.start_run(run_name=trainer.config.run_id)
        mlflow.log_params(_params(trainer))

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.mlflow.log_metrics(_scalars(row, EPOCH_KEYS), step=row["epoch"] + 1)

    def on_fit_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.mlflow.log_metrics({f"final_{k}": v for k, v in _scalars(record, FINAL_KEYS).items()})
        self.mlflow.end_run()

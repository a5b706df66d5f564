"""bench.results: gathering run folders into the runs and history tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench import cli, record, results
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.io import write_json, write_text
from bench.record import RENAMED
from bench.run.job import run

HISTORY_HEADER = "epoch,step,loss,top1,sparsity,lr,elapsed_s"


def fake_result(run_id: str, pruner: str = "grda", seed: int = 0, top1: float = 0.9, sparsity: float = 0.9,
                finished_at: str = "2025-01-01T00:00:00+00:00", **extra: Any) -> dict[str, Any]:
    """A complete result.json record (the fields bench.run writes), for synthetic run folders."""
    hparams = {"c": 0.02, "mu": 0.6, "prune_all": True} if pruner == "grda" else {}
    rec = {
        "run_id": run_id, "config_hash": "h" * 64, "pruner": pruner, "model": "mlp", "dataset": "digits",
        "seed": seed, "hparams": hparams, "budget": {**RunConfig().to_dict()["budget"],
                                                     "lr_milestones": list(Budget().lr_milestones)},
        "status": "ok", "top1": top1, "top5": 1.0, "sparsity": sparsity, "sparsity_all": sparsity,
        "layer_sparsity": {"1": sparsity, "3": sparsity}, "nonzero_params": 100, "total_params": 1000,
        "flops_dense": 1000.0, "flops_sparse": 1000.0 * (1 - sparsity), "epochs_completed": 3, "steps": 30,
        "samples_seen": 960, "train_time_s": 1.5, "step_time_ms": 0.5, "peak_memory_bytes": 2**20,
        "state_bytes": 4000, "resumed": False, "device": "cpu (x86_64, 2 cores)", "torch_version": "2.14.1",
        "torchvision_version": "0.29.1", "torch_pruning_version": "1.6.1", "numpy_version": "2.4.6",
        "git_sha": "0123456789abcdef", "git_dirty": False, "slurm_job_id": "77_3", "hostname": "node1",
        "started_at": "2025-01-01T00:00:00+00:00", "finished_at": finished_at,
    }
    rec.update(extra)
    return rec


def make_run(root: Path, record: dict[str, Any], epochs: int = 3, folder: str | None = None) -> Path:
    """A run folder as bench.run leaves it: config.json, history.csv, result.json."""
    d = root / (folder or record["run_id"])
    write_json(d / "config.json", {k: record[k] for k in ("run_id", "pruner", "model", "dataset", "seed")})
    top1, sparsity = record.get("top1") or "", record.get("sparsity") or 0.0
    rows = [f"{e},{10 * (e + 1)},{1 / (e + 1)},{top1},{sparsity * (e + 1) / epochs},0.1,{e}"
            for e in range(epochs)]
    write_text(d / "history.csv", "\n".join([HISTORY_HEADER, *rows]) + "\n")
    write_json(d / "result.json", record)
    return d


# ------------------------------------------------------------------------------ synthetic folders


def test_gather_flattens_every_field_and_reads_history(tmp_path: Path) -> None:
    rec = fake_result("grda-a", finished_at="2025-01-02T03:04:05+00:00")
    make_run(tmp_path / "sweep", rec)
    make_run(tmp_path / "sweep", fake_result("dense-a", pruner="dense", sparsity=0.0))
    g = results.gather(tmp_path)
    assert not g.skipped and not g.duplicates
    runs = g.runs.set_index("run_id")
    row = runs.loc["grda-a"]
    # every top-level field of result.json is a column (a renamed one under its new name); nested
    # tables are flattened
    for key in set(rec) - {"hparams", "budget"}:
        assert RENAMED.get(key, key) in runs.columns or key == "run_id", key
    assert row["hparams.c"] == 0.02 and row["hparams.mu"] == 0.6 and bool(row["hparams.prune_all"])
    assert row["budget.epochs"] == 60 and row["budget.lr_schedule"] == "constant"
    assert json.loads(row["budget.lr_milestones"]) == [0.5, 0.75]
    assert json.loads(row["layer_sparsity"]) == {"1": 0.9, "3": 0.9}
    assert row["finished_at"] == pd.Timestamp("2025-01-02T03:04:05Z")
    assert row["slurm_job_id"] == "77_3" and row["git_sha"] == "0123456789abcdef"
    assert Path(row["path"]) == tmp_path / "sweep" / "grda-a"
    assert pd.isna(runs.loc["dense-a", "hparams.c"])
    # history: one row per epoch per run, with the run's identity
    h = g.history
    assert len(h) == 6
    assert list(h.columns[:5]) == list(results.HISTORY_IDENTITY)
    assert set(h.loc[h["run_id"] == "grda-a", "epoch"]) == {0, 1, 2}
    assert h.loc[h["run_id"] == "grda-a", "pruner"].eq("grda").all()
    assert h.loc[(h["run_id"] == "grda-a") & (h["epoch"] == 2), "sparsity"].item() == pytest.approx(0.9)


@pytest.mark.parametrize("workers", [1, 3])  # in turn, or by a thread pool
def test_gather_skips_and_reports_broken_folders(tmp_path: Path, workers: int) -> None:
    good = make_run(tmp_path, fake_result("good"))
    truncated = make_run(tmp_path, fake_result("truncated"))
    text = (truncated / "result.json").read_text()
    (truncated / "result.json").write_text(text[: len(text) // 2])
    make_run(tmp_path, {k: v for k, v in fake_result("incomplete").items() if k != "config_hash"})
    pending = tmp_path / "pending"
    write_json(pending / "config.json", {"run_id": "pending"})
    make_run(tmp_path, fake_result("weird", status="exploded"))
    listed = make_run(tmp_path, fake_result("listed"))
    (listed / "result.json").write_text("[1, 2]")
    (tmp_path / "not-a-run").mkdir()  # an empty folder is searched, not reported

    g = results.gather(tmp_path, workers=workers)
    assert list(g.runs["run_id"]) == ["good"]
    reasons = {Path(s.path).name: s.reason for s in g.skipped}
    assert set(reasons) == {"truncated", "incomplete", "pending", "weird", "listed"}
    assert "truncated" in reasons["truncated"]
    assert "config_hash" in reasons["incomplete"]
    assert "no result.json" in reasons["pending"]
    assert "exploded" in reasons["weird"] and "ok, diverged, failed" in reasons["weird"]
    report = g.report()
    assert "skipped 5 folders" in report and str(truncated) in report
    assert good.exists()


@pytest.mark.parametrize("workers", [1, 3])
def test_gather_keeps_the_newest_duplicate_and_reports_it(tmp_path: Path, workers: int) -> None:
    old = make_run(tmp_path / "a", fake_result("same", top1=0.5, finished_at="2025-01-01T00:00:00+00:00"))
    new = make_run(tmp_path / "b", fake_result("same", top1=0.7, finished_at="2025-03-01T00:00:00+00:00"))
    make_run(tmp_path / "b", fake_result("other"))
    # argument order does not matter; a folder reached twice is read once
    g = results.gather(tmp_path / "b", tmp_path / "a", tmp_path, tmp_path / "b" / "other", workers=workers)
    assert sorted(g.runs["run_id"]) == ["other", "same"]
    kept = g.runs.set_index("run_id").loc["same"]
    assert kept["top1"] == 0.7 and Path(kept["path"]) == new
    assert g.duplicates == [results.Duplicate("same", str(new), (str(old),))]
    assert "duplicate same: kept" in g.report()
    # the history comes from the kept folder only
    assert (g.history["run_id"] == "same").sum() == 3


def test_failed_and_diverged_runs_are_rows(tmp_path: Path) -> None:
    base = fake_result("x")
    failed = {k: base.get(k) for k in (*results.IDENTITY, *results.PROVENANCE)}
    make_run(tmp_path, {**failed, "run_id": "failed", "status": "failed", "error": "RuntimeError: boom",
                        "top1": None, "sparsity": 0.0})
    make_run(tmp_path, fake_result("diverged", status="diverged", top1=None, diverged_epoch=1))
    g = results.gather(tmp_path)
    runs = g.runs.set_index("run_id")
    assert runs.loc["failed", "status"] == "failed" and runs.loc["failed", "error"] == "RuntimeError: boom"
    assert runs.loc["diverged", "diverged_epoch"] == 1 and pd.isna(runs.loc["diverged", "top1"])


def test_mixed_type_hparams_still_write_parquet(tmp_path: Path) -> None:
    make_run(tmp_path, fake_result("a", pruner="x", hparams={"mode": "fixed"}))
    make_run(tmp_path, fake_result("b", pruner="y", hparams={"mode": 0.5}))
    g = results.gather(tmp_path)
    paths = results.write(g, tmp_path / "out" / "results.parquet")
    back, hist = results.read(paths[0])
    assert sorted(back["hparams.mode"]) == ['"fixed"', "0.5"]
    assert hist is not None and len(hist) == 6


def test_load_api_warns_about_skipped_folders(tmp_path: Path) -> None:
    make_run(tmp_path, fake_result("a"))
    write_json(tmp_path / "b" / "config.json", {})
    with pytest.warns(UserWarning, match="no result.json yet"):
        df = results.load(tmp_path)
    assert list(df["run_id"]) == ["a"]
    with pytest.warns(UserWarning):
        hist = results.load_history(tmp_path)
    assert list(hist["epoch"]) == [0, 1, 2]


def test_gather_cli_writes_both_tables_and_rejects_bad_input(tmp_path: Path, capsys) -> None:
    make_run(tmp_path / "runs", fake_result("a"))
    out = tmp_path / "res" / "results.parquet"
    assert cli.main(["gather", str(tmp_path / "runs"), "-o", str(out)]) == 0
    assert pd.read_parquet(out)["run_id"].tolist() == ["a"]
    assert len(pd.read_parquet(results.history_path(out))) == 3
    assert "gathered 1 runs (1 ok" in capsys.readouterr().err
    # a missing folder and a folder without runs are input errors (exit 2), nothing written
    assert cli.main(["gather", str(tmp_path / "nope"), "-o", str(tmp_path / "x.parquet")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["gather", str(tmp_path / "empty"), "-o", str(tmp_path / "x.parquet")]) == 2
    bad = ["gather", str(tmp_path / "runs"), "--workers", "0", "-o", str(tmp_path / "x.parquet")]
    assert cli.main(bad) == 2
    assert "workers = 0; expected an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


# ------------------------------------------------------------------------------ real runs


def test_gather_real_runs_matches_their_result_json(tmp_path: Path) -> None:
    """Two short real runs (dense and gRDA): every field of result.json survives the round trip."""
    budget = Budget(epochs=2)
    records = [run(RunConfig(pruner=p, hparams=h, budget=budget), tmp_path / "runs")
               for p, h in (("dense", {}), ("grda", {"c": 0.02, "mu": 0.6}))]
    g = results.gather(tmp_path / "runs")
    assert not g.skipped
    results.write(g, tmp_path / "results.parquet")
    runs, hist = results.read(tmp_path / "results.parquet")
    runs = runs.set_index("run_id")
    for rec in records:
        row = runs.loc[rec["run_id"]]
        for key in ("pruner", "seed", "status", "top1", "val_top1", "sparsity", "macs_dense", "macs_sparse",
                    "steps", "peak_memory_bytes", "peak_tensor_bytes", "state_bytes", "git_sha", "device",
                    "torch_version", "config_hash"):
            assert row[key] == rec[key], key
        for key, value in rec["hparams"].items():
            assert row[f"hparams.{key}"] == value
        assert row["budget.epochs"] == 2
    assert hist is not None
    assert hist.groupby("run_id")["epoch"].max().tolist() == [1, 1]


def test_a_result_older_than_a_field_loads_with_its_default(tmp_path):
    """A metric added to the run record after a run finished: that run still makes a row, with the
    field's default, instead of dropping out of tables."""
    old = {k: v for k, v in fake_result("old").items() if k not in ("step_time_ms", "state_bytes")}
    make_run(tmp_path, old)
    make_run(tmp_path, fake_result("new"))
    g = results.gather(tmp_path)
    assert sorted(g.runs["run_id"]) == ["new", "old"] and not g.skipped
    row = g.runs.set_index("run_id").loc["old"]
    assert pd.isna(row["step_time_ms"]) and pd.isna(row["state_bytes"])
    assert set(record.METRICS) <= set(g.runs.columns)


def write_predictions(folder: Path, test_pred: list[int], test_true: list[int], **change: Any) -> None:
    import numpy as np

    arrays = {"val_pred": np.array([1, 2], np.int16), "val_true": np.array([1, 1], np.int16),
              "test_pred": np.array(test_pred, np.int16), "test_true": np.array(test_true, np.int16)}
    np.savez(folder / "predictions.npz", **(arrays | change))


def test_predictions_are_gathered_and_written_with_the_tables(tmp_path: Path) -> None:
    import numpy as np

    from bench import predictions

    a = make_run(tmp_path / "runs", fake_result("a"))
    b = make_run(tmp_path / "runs", fake_result("b", seed=1))
    make_run(tmp_path / "runs", fake_result("old", seed=2))  # written before predictions: none, still a row
    write_predictions(a, [1, 2, 3], [1, 2, 0])
    write_predictions(b, [0, 0, 0], [1, 2, 0], val_pred=np.array([[1]], np.int16))  # malformed
    g = results.gather(tmp_path / "runs")
    assert len(g.runs) == 3 and set(g.predictions) == {"a"}
    assert any("predictions.npz lacks or has malformed arrays (val_pred)" in s.reason for s in g.skipped)
    table = tmp_path / "out" / "results.parquet"
    written = results.write(g, table)
    names = ["results.parquet", "results.history.parquet", "results.predictions.npz"]
    assert [p.name for p in written] == names
    back = predictions.read_predictions(table)
    assert list(back["a"]["test_pred"]) == [1, 2, 3] and back["a"]["test_pred"].dtype == np.int16
    assert list(predictions.correctness(back)["a"]) == [True, True, False]
    # a later gather without history or predictions leaves no stale table beside the new one
    results.write(results.gather(tmp_path / "runs", predictions=False), table, history=False)
    assert not results.history_path(table).exists() and not predictions.predictions_path(table).exists()
    assert predictions.read_predictions(table) == {}  # old tables without it still load
    predictions.predictions_path(table).write_bytes(b"PK garbage")
    with pytest.raises(ConfigError, match=r"results\.predictions\.npz: not a readable predictions file"):
        predictions.read_predictions(table)


def test_an_integer_beyond_int64_skips_that_run_only(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", fake_result("big", steps=2**70))
    make_run(tmp_path / "runs", fake_result("fine", seed=1))
    g = results.gather(tmp_path / "runs")
    assert list(g.runs["run_id"]) == ["fine"]
    why = "steps = 1180591620717411303424: beyond the 64-bit integer range"
    assert any(why in s.reason for s in g.skipped)
    results.write(g, tmp_path / "results.parquet")


def test_foreign_and_empty_tables_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "results.parquet"
    pd.DataFrame({"x": [1]}).to_parquet(path)
    with pytest.raises(ConfigError, match=r"results\.parquet: not a runs table \(no column\(s\) run_id"):
        results.read(path)
    pd.DataFrame({c: [] for c in ("run_id", "pruner", "model", "dataset", "seed", "status")}).to_parquet(path)
    with pytest.raises(ConfigError, match=r"results\.parquet: the runs table has no rows"):
        results.read(path)

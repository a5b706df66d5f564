"""Per-example predictions: each finished run folder's `predictions.npz` (int16 arrays `val_pred`,
`val_true`, `test_pred`, `test_true`: predicted and true class per example, in the data set's fixed
order), and the file `bench gather` collects them into beside a runs table
(`results.predictions.npz`, keyed `<run_id>.<array>`). Runs written before predictions were stored
have none; boards and `bench compare` then fall back to tests over seeds only."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.errors import ConfigError
from bench.runs import FILES

PREDICTIONS = FILES["predictions"]  # in a run folder (bench.runs names every run file)
PREDICTION_ARRAYS = ("val_pred", "val_true", "test_pred", "test_true")


def read_run_predictions(folder: str | Path) -> dict[str, np.ndarray] | str | None:
    """A run folder's per-example predictions (PREDICTION_ARRAYS, int16), None when it has none
    (a run from before they were stored), or why they cannot be used."""
    path = Path(folder) / PREDICTIONS
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in PREDICTION_ARRAYS if k in z.files}
    except Exception as e:  # a truncated or foreign file: numpy and zipfile raise several types
        return f"{PREDICTIONS} unreadable ({type(e).__name__}); run kept without predictions"
    missing = [k for k in PREDICTION_ARRAYS if k not in arrays]
    bad = [k for k, a in arrays.items() if a.ndim != 1 or a.dtype.kind not in "iu"]
    if missing or bad or len(arrays["test_pred"]) != len(arrays["test_true"]) \
            or len(arrays["val_pred"]) != len(arrays["val_true"]):
        what = ", ".join(missing + bad) or "lengths differ"
        return f"{PREDICTIONS} lacks or has malformed arrays ({what}); run kept without predictions"
    return {k: a.astype(np.int16) for k, a in arrays.items()}


def predictions_path(results: str | Path) -> Path:
    """`x/results.parquet` -> `x/results.predictions.npz`."""
    p = Path(results)
    return p.with_name(p.name.removesuffix(".parquet") + ".predictions.npz")


def read_predictions(results: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The per-example predictions saved beside a runs table (run_id -> PREDICTION_ARRAYS); empty
    when there are none (a table gathered before they were stored)."""
    path = predictions_path(results)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
            for key in z.files:
                run_id, _, name = key.rpartition(".")
                out[run_id][name] = z[key]
    except Exception as e:  # truncated or foreign: numpy and zipfile raise several types
        raise ConfigError(f"{path}: not a readable predictions file ({type(e).__name__}); remake it with "
                          f"`bench gather DIR -o {results}`") from None
    return dict(out)


def correctness(predictions: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """run_id -> per test example, whether the run's prediction was right (what boards test)."""
    return {run_id: a["test_pred"] == a["test_true"] for run_id, a in predictions.items()
            if "test_pred" in a and "test_true" in a}

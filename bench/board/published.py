"""Published rows: what each method's paper reports, shown beside a board's section of the same
data set and model (leaderboards/published.csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import ConfigError

PUBLISHED_CSV = Path(__file__).resolve().parents[2] / "leaderboards" / "published.csv"
PUBLISHED_COLUMNS = ("dataset", "model", "pruner", "setting", "sparsity", "top1", "source", "published")


def load_published(path: str | Path | None = None) -> pd.DataFrame:
    """Published rows (dataset, model, pruner, setting, sparsity, top1 as fractions, source, ...).

    Without `path`, the repository's leaderboards/published.csv (none if it is not there)."""
    if path is None and not PUBLISHED_CSV.is_file():
        return pd.DataFrame(columns=list(PUBLISHED_COLUMNS))
    path = Path(path or PUBLISHED_CSV)
    try:
        pub = pd.read_csv(path, comment="#", skipinitialspace=True, dtype={"setting": str})
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the published rows ({e})") from None
    missing = [c for c in PUBLISHED_COLUMNS if c not in pub.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)}; expected columns {', '.join(PUBLISHED_COLUMNS)}"
        )
    for col in ("sparsity", "top1"):
        values = pd.to_numeric(pub[col], errors="coerce")
        bad = pub.index[values.isna() | (values < 0) | (values > 1)]
        if len(bad):
            raise ConfigError(
                f"{path}: data row {bad[0] + 1}, column {col} = {pub.loc[bad[0], col]}: "
                "expected a fraction in [0, 1]"
            )
        pub[col] = values
    pub["setting"] = pub["setting"].fillna("-")
    return pub.sort_values(["dataset", "model", "pruner", "sparsity", "setting"]).reset_index(drop=True)

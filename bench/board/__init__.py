"""Leaderboards from a gathered results table: Markdown (renders on GitHub), CSV and figures.

    bench leaderboard results.parquet -o leaderboards/NAME/
    bench board leaderboards/NAME          # run NAME/sweep.toml, gather, write the board there

The flow, one module each, every table computed once and passed on:
prepare (check, section, label) -> summary (per setting: means and intervals over seeds, each row
against its own dense) -> cells (at each sparsity level, per pruner, the measured setting that
landed there, chosen on validation) -> significance (each pruner against the level's leader:
seeds x examples bootstrap, Holm) -> markdown / figures (a list of specs) -> write (README between
markers, CSV). Published rows: published.py; the timing phase (time columns from serial,
interleaved timing on a quiet machine): timing.py; the commands: cli.py.
"""

"""`bench valley A B`: the command (see bench.valley)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from bench.errors import ConfigError
from bench.valley.analysis import HESSIAN_EXAMPLES, POINTS, RANDOM_DRAWS, TOP_K, valley
from bench.valley.endpoints import dense_partner, resolve
from bench.valley.figures import plot_path


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

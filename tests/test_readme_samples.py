"""The README's command samples, run as a newcomer would in a fresh folder, in the README's order,
each compared with the output the README shows: every line it shows must come out, in that order,
with only the fields that differ from run to run (times, timestamps, job ids, probe timings)
masked. Each output block of the README must be checked by this walkthrough, so a sample added
to the README without a check here fails too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BIN = Path(sys.executable).parent  # the venv's `bench` script sits beside its python

# fields that change from run to run: (pattern, what stands for it)
VOLATILE = [
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", "<time>"),
    (r"\btrain \d+(\.\d+)?s\b", "train <s>"),
    (r"\beta \d+(\.\d+)?s\b", "eta <s>"),
    (r"\bjob \d+\b", "job <id>"),
    (r"[\d.e+-]+ CPU-hours for the cells to run, [\d.e+-]+ for all", "<n> CPU-hours"),
    (r"longest cell [\d.e+-]+ (s|min|h)", "longest cell <t>"),
    (r"about [\d.e+-]+ (s|min|h) of wall time", "about <t> of wall time"),
    (r"[\d.e+-]+ ms/step", "<n> ms/step"),
    (r"\+ [\d.e+-]+ s to load", "+ <n> s to load"),
    (r"[\d.e+-]+ ms/batch", "<n> ms/batch"),
    (r"\(timed probe(?:[^()]|\([^()]*\))*\)", "(timed probe)"),  # threads, batch, cache date
    (r"with \d+ CPUs per task \(\d+ workers\)", "with <n> CPUs per task"),
    # `bench compare` rows measured on the machine that trained the runs: the main command retrains
    # the digits board's runs here, with this machine's wall times, loads and memory
    (r"^\| (train time s|process peak RSS MiB) \|.*", r"| \1 | <measured here> |"),
]


def normalize(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        for pattern, repl in VOLATILE:
            line = re.sub(pattern, repl, line)
        line = line.rstrip()
        if line and line != "...":  # `...`: rows the README leaves out
            lines.append(line)
    return lines


def blocks() -> list[tuple[int, str, str]]:
    """(line number, language, text) of every fenced block of the README."""
    found, lang, start, body = [], None, 0, []
    for i, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), i, []
            else:
                found.append((start, lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    return found


def block_after(marker: str, lang: str = "") -> tuple[int, str]:
    """(line, text) of the README's first `lang` block (default: an output block, a fence without a
    language) that opens on or after the line containing `marker`."""
    text = README.read_text()
    line = text[: text.index(marker)].count("\n") + 1
    for start, block_lang, body in blocks():
        if start >= line - 1 and block_lang == lang and not (lang == "" and marker in body):
            return start, body
    raise AssertionError(f"no {lang or 'output'} block after {marker!r} in README.md")


def command(marker: str) -> str:
    """The README's command line containing `marker` (continuation lines joined)."""
    text = README.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if marker in ln and "bench " in ln][:1]
    return line.split("  #")[0].strip()


def assert_shows(shown: str, out: str, where: int) -> None:
    want, got = normalize(shown), normalize(out)
    i = 0
    for line in got:
        if i < len(want) and line == want[i]:
            i += 1
    assert i == len(want), (f"README.md line {where}: the sample's line\n  {want[i]}\nis not in the output "
                            "(after the lines before it); the output was:\n" + "\n".join(got))


def block_body(marker: str, lang: str) -> str:
    return block_after(marker, lang)[1]


def test_every_readme_sample_prints_what_the_readme_shows(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PRUNEBENCH_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    env.pop("PRUNEBENCH_PLUGINS", None)
    (tmp_path / "leaderboards").mkdir()  # the committed digits board, read only; `-o leaderboards/mine` here
    (tmp_path / "leaderboards" / "digits-mlp").symlink_to(REPO / "leaderboards" / "digits-mlp")
    checked: set[int] = set()

    def run(cmd: str) -> str:
        cmd = cmd.replace(".venv/bin/bench", "bench")
        p = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=600)
        assert p.returncode == 0, f"{cmd}\nexit {p.returncode}\n{p.stdout}"
        return p.stdout

    def check(marker: str, out: str) -> None:
        start, shown = block_after(marker)
        assert_shows(shown, out, start)
        checked.add(start)

    # Quick start: one run, its line and its train.log
    grda = "--pruner grda --model mlp --dataset digits --epochs 60"
    check(grda, run(command(grda)))
    run_id = re.search(r"runs/(grda-mlp-digits-s0-\w+)", block_after(grda)[1]).group(1)
    log = (tmp_path / "runs" / run_id / "train.log").read_text()
    check("Every run appends to its `train.log`", "\n".join(log.splitlines()[:2]))

    # Sweeps: the demo file, its dry run, the sweep and its status
    (tmp_path / "sweep.toml").write_text(block_body('name = "digits-demo"', "toml") + "\n")
    check("The dry run of that file:", run("bench sweep sweep.toml --dry-run"))
    run("bench sweep sweep.toml")
    check("After the sweep, `bench status -v`", run("bench status runs/digits-demo -v"))

    # calibrate, pretrained starts
    calibrate = "bench calibrate --pruner grda"
    check(calibrate, run(command(calibrate)))
    dense = "bench run --model mlp --dataset digits --epochs 10"
    init, scratch = "--epochs 5 --init runs/", "--epochs 5 --out runs        # from scratch"
    check(dense, run(command(dense)) + run(command(init)) + run(command(scratch)))

    # valley: against the dense run of the same budget and seed
    run(re.search(r"`(bench run --model mlp --dataset digits --out runs)`", README.read_text()).group(1))
    valley = "bench valley runs/grda"
    check(valley, run(command(valley)))

    # a plugin, edited: the next run trains anew
    plugin = block_body('"""A pruner, a model and a data set of my own', "python")
    (tmp_path / "my_methods.py").write_text(plugin + "\n")
    edited = "bench run --import my_methods.py --pruner late_magnitude"
    run(command(edited))
    (tmp_path / "my_methods.py").write_text(plugin + "\n# tuned\n")
    check(edited, run(command(edited)))

    # tables: gather the demo sweep, a board from it
    gather = "bench gather runs/digits-demo"
    check(gather, run(command(gather)) + run(command("bench leaderboard results.parquet")))

    # compare, on the committed digits board
    compare = "bench compare grda:c=0.01648"
    check(compare, run(command(compare)))

    outputs = {start for start, lang, _ in blocks() if lang == ""}
    assert not outputs - checked, f"README.md output blocks this walkthrough does not check (lines): " \
                                  f"{sorted(outputs - checked)}"

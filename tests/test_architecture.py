"""The shape of the code: imports point one way (no circle, counting imports inside functions
too; `if TYPE_CHECKING:` imports, which never run, aside), and `bench --help` / `bench list --help`
answer without importing torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "baselines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (top level or in a function)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                       for n in ast.walk(block)}  # annotations only: never executed
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import mod` imports pkg.mod when it is a module, else a name of pkg
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                           for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in files and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node], _ = 2, path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 40, sorted(graph)  # the graph is real: every module of both packages
    assert "bench.pruner" in graph["baselines.vd"]
    assert {"bench.record", "bench.validate", "bench.run.trainer", "bench.runs"} <= graph["bench.run.job"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_help_answers_without_importing_torch():
    code = ("import sys\nfrom bench.cli import main\n"
            "for argv in (['--help'], ['list', '--help'], ['sweep', '--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = sorted(m for m in ('torch', 'torchvision', 'pandas') if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    out = run.stdout
    assert "usage: bench" in out and "HEAVY []" in out


def test_no_module_is_long():
    """No module over ~500 lines."""
    long = {str(p.relative_to(REPO)): n for pkg in (*PACKAGES, "slurm") for p in (REPO / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 520}
    assert not long, long


def test_the_trainer_class_is_short():
    """The Trainer holds the loop and evaluation only (~200 lines); helpers live beside it."""
    tree = ast.parse((REPO / "bench" / "run" / "trainer.py").read_text())
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert trainer.end_lineno - trainer.lineno + 1 <= 200

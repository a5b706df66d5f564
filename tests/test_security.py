"""What a file from someone else can do: configs are only parsed (tomllib/json), checkpoints are
loaded with `weights_only=True`, nothing user-supplied is evaluated or unpickled. (Names that
could escape a folder or reach a shell: test_sweep's name and profile cases.)"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from bench.io import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("bench", "baselines") for p in (ROOT / d).rglob("*.py"))


def calls(path: Path) -> list[tuple[str, ast.Call]]:
    """(dotted name of the callee, the call) for every call in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_loader_or_shell(path: Path) -> None:
    for name, call in calls(path):
        where = f"{path.relative_to(ROOT)}:{call.lineno}: {name}"
        assert name not in {"eval", "exec", "os.system", "os.popen", "pickle.load", "pickle.loads"}, where
        assert not name.startswith(("yaml.", "marshal.", "shelve.")), where
        assert not any(k.arg == "shell" for k in call.keywords), where
        if name == "torch.load":
            flags = {k.arg: k.value for k in call.keywords}
            assert isinstance(flags.get("weights_only"), ast.Constant), where
            assert flags["weights_only"].value is True, where


def test_the_scan_sees_the_checkpoint_loader() -> None:
    assert any(name == "torch.load" for name, _ in calls(ROOT / "bench" / "io.py"))


def test_a_checkpoint_that_would_run_code_is_not_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"epoch": 3, "x": Evil()}, tmp_path / "checkpoint.pt")
    assert load_checkpoint(tmp_path / "checkpoint.pt") is None  # refused: treated as absent
    assert not marker.exists()

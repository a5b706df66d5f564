"""Every third-party package the harness imports is declared in pyproject.toml: a core
dependency, or (for a feature that imports it only when asked) an optional extra."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import bench

REPO = Path(__file__).resolve().parents[1]
# import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "sklearn": "scikit-learn", "torch_pruning": "torch-pruning"}
FIRST_PARTY = {"bench", "baselines"}


def _imports() -> dict[str, set[str]]:
    """Top-level imported module -> files importing it, over bench/ and baselines/."""
    found: dict[str, set[str]] = {}
    for path in [*(REPO / "bench").rglob("*.py"), *(REPO / "baselines").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_every_imported_package_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = _names(project["dependencies"])
    extras = set().union(*(_names(v) for v in project["optional-dependencies"].values()))
    imports = _imports()
    assert {"numpy", "PIL", "matplotlib", "torch", "scipy", "safetensors"} <= set(imports)  # the scan works
    missing = {m: sorted(files) for m, files in imports.items()
               if DISTRIBUTION.get(m, m).lower() not in core | extras}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_tracker_extras_exist_and_version_is_set():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"tensorboard", "wandb", "mlflow", "onnx"} <= set(extras)
    assert bench.__version__ and isinstance(bench.__version__, str)

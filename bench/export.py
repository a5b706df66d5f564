"""`bench export RUN_DIR`: the final pruned model of a finished run, for use elsewhere.

Writes into `RUN_DIR/export/` (or `--out`):

- `model.safetensors`: the state dict of the model as the run evaluated it (the pruner's
  `finalize`: masks applied, reparameterizations folded into plain weights), with the run_id,
  model, dataset and test top-1 in its metadata. It loads into the registered model
  (`load_model`), except after structured pruning (`channel`), whose layers are smaller: use
  the ONNX file there;
- `model.onnx`, where the model exports (torch.onnx, one example's input shape, a dynamic batch).

The export then loads the safetensors file back into a fresh model, evaluates it on the test set
and checks that its top-1 equals the run's (`--no-check` skips this).

    >>> from bench.export import load_model
    >>> model = load_model("runs/grda-mlp-digits-s0-.../export/model.safetensors")   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.errors import ConfigError
from bench.io import read_json
from bench.runs import RunDir, RunStatus
from bench.validate import check_out_files


def _finished(run_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
    rd = RunDir.at(run_dir)
    config, result = read_json(rd.config), read_json(rd.result)
    if not isinstance(config, dict):
        raise ConfigError(f"{run_dir}: no readable config.json; is it a run folder (runs/<run_id>)?")
    if not isinstance(result, dict) or result.get("status") != RunStatus.OK:
        status = result.get("status") if isinstance(result, dict) else "not finished"
        raise ConfigError(f"{run_dir}: the run's status is {status!r}; only a finished (ok) run exports")
    if not rd.checkpoint.is_file():
        raise ConfigError(f"{run_dir}: no checkpoint.pt, so no final weights to export")
    fields = {k: v for k, v in config.items() if k not in ("run_id", "config_hash")}
    try:
        return RunConfig.from_dict(fields), result
    except (TypeError, ValueError, AttributeError) as e:  # ConfigError is a ValueError
        raise ConfigError(f"{rd.config}: not a run's config.json ({type(e).__name__}: {e})") from None


def export(run_dir: str | Path, out: str | Path | None = None, onnx: bool = True, check: bool = True,
           ) -> dict[str, Any]:
    """Export a finished run's final model (see the module docstring); returns what was written:
    {"safetensors": path, "onnx": path or None, "onnx_error": why not or None, "top1": the run's,
    "top1_loaded": the loaded-back model's (None without `check`), "check_error": why it could not
    be loaded back (structured pruning) or None}."""
    import torch
    from safetensors.torch import save_file

    from bench.run.checkpoint import load_built
    from bench.run.evaluation import evaluate

    run_dir = Path(run_dir)
    RunDir.at(run_dir).check_no_links()  # the default out folder is inside it: never written through a link
    config, result = _finished(run_dir)
    names = ["model.safetensors", "model.onnx"] if onnx else ["model.safetensors"]
    out = Path(out) if out is not None else run_dir / "export"
    check_out_files(out, names, "--out")  # before the work
    built, final = load_built(run_dir)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in final.state_dict().items()}
    meta = {"run_id": result["run_id"], "model": config.model, "dataset": config.dataset,
            "num_classes": str(built.data.num_classes), "top1": repr(result["top1"]),
            "pruner": config.pruner}
    out.mkdir(parents=True, exist_ok=True)
    st_path = out / "model.safetensors"
    save_file(state, str(st_path), metadata=meta)
    written: dict[str, Any] = {"safetensors": str(st_path), "onnx": None, "onnx_error": None,
                               "top1": result["top1"], "top1_loaded": None, "check_error": None}
    if onnx:
        onnx_path = out / "model.onnx"
        example = torch.zeros(1, *built.data.input_shape, device=built.device)
        try:  # the TorchScript exporter: the torch.export one needs the onnxscript package
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(final, (example,), str(onnx_path), input_names=["input"],
                                  output_names=["logits"], dynamo=False,
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            written["onnx"] = str(onnx_path)
        except Exception as e:  # a model torch.onnx cannot trace: the safetensors file still stands
            onnx_path.unlink(missing_ok=True)
            written["onnx_error"] = f"{type(e).__name__}: {e}"
    if check:
        try:
            loaded = load_model(st_path).to(built.device)
            written["top1_loaded"], _, _ = evaluate(built, loaded)  # the run's own evaluation
        except ConfigError as e:
            written["check_error"] = str(e)
    return written


def load_model(path: str | Path) -> Any:
    """The registered model of an exported `model.safetensors`, with its weights (CPU, eval mode).
    Raises ConfigError when its weights do not fit the registered model (structured pruning)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from bench.registry import MODELS

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "model" not in meta:
        raise ConfigError(f"{path}: no prunebench metadata (model, num_classes); "
                          "was it written by bench export?")
    model = MODELS.get(meta["model"], "model").build(int(meta["num_classes"]))
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:
        raise ConfigError(f"{path}: its weights do not fit a fresh {meta['model']!r} (structured pruning "
                          f"changes layer sizes; use model.onnx): {str(e).splitlines()[0]}") from None
    return model.eval()


# ----------------------------------------------------------------------------------------- CLI


def cmd_export(args: argparse.Namespace) -> int:
    w = export(args.run_dir, args.out, onnx=not args.no_onnx, check=not args.no_check)
    print(f"wrote {w['safetensors']}" + (f" and {w['onnx']}" if w["onnx"] else ""))
    if w["onnx_error"]:
        print(f"no ONNX file: {w['onnx_error']}", file=sys.stderr)
    if w["check_error"]:
        print(f"not checked: {w['check_error']}", file=sys.stderr)
    if w["top1_loaded"] is not None:
        same = w["top1_loaded"] == w["top1"]
        verdict = "equals" if same else "DIFFERS from"
        print(f"loaded back: test top-1 {w['top1_loaded']:.4f} ({verdict} the run's {w['top1']:.4f})")
        return 0 if same else 1
    return 0


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run's folder (runs/<sweep>/<run_id>)")
    p.add_argument("--out", help="where to write (default: RUN_DIR/export)")
    p.add_argument("--no-onnx", action="store_true", help="the safetensors file only")
    p.add_argument("--no-check", action="store_true", help="skip loading the export back and evaluating it")
    p.set_defaults(func=cmd_export)

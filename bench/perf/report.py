"""`bench perf`'s report as Markdown: a line of context, then a table per suite and the checks."""

from __future__ import annotations

from typing import Any

from bench.markdown import table


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def format_report(report: dict[str, Any]) -> str:
    """The report as markdown tables: per pruner, harness, compaction, and the checks."""
    meta, parts = report["meta"], []
    parts.append(f"device: {meta['device']}, torch {meta['torch_version']}, {meta['threads']} threads; "
                 f"model {meta['model']}, dataset {meta['dataset']}, batch {meta['budget']['batch_size']}"
                 + (" (quick: tiny sizes, numbers meaningless)" if meta["quick"] else "")
                 + "; seconds per suite: "
                 + ", ".join(f"{k} {v:g}" for k, v in meta["suite_seconds"].items()))
    if "pruners" in report:
        rows = [(r["pruner"], f"{r['step']['median_ms']:.3f}", f"{r['step_ratio']:.2f}x",
                 f"{r['train_step']['median_ms']:.2f}", f"{r['train_step_ratio']:.3f}x",
                 *((_mib(r["peak_memory_bytes"]), f"{r['peak_memory_ratio']:.3f}x",
                    _mib(r["memory_growth_bytes"])) if r["peak_memory_bytes"] is not None else ("-",) * 3),
                 _mib(r["state_bytes"]), f"{r['state_ratio']:.3f}x") for r in report["pruners"]]
        parts.append(table(rows, ["pruner", "opt step ms", "vs dense", "train step ms", "vs dense",
                                  "peak MiB", "vs dense", "of which steps MiB", "state MiB", "vs dense"]))
    if "optimizer" in report:
        o = report["optimizer"]
        rows = [(k, f"{v['median_ms']:.2f}", f"{o['vs_sgd'][k]:.2f}x",
                 _mib(o["state_bytes"][k])) for k, v in o["times"].items()]
        parts.append(f"optimizer step, {o['params'] / 1e6:.1f}M parameters in {o['tensors']} tensors "
                     f"(grda == reference: {o['grda_equals_reference']}, max |diff| {o['max_abs_diff']:.1e}, "
                     f"sparsity {o['grda_sparsity']:.3f} after {o['steps_each']} steps)\n"
                     + table(rows, ["optimizer", "step ms", "vs SGD-momentum", "state MiB"]))
    if "loop" in report:
        rows = [(f"{lp['model']}/{lp['dataset']}", lp["batch_size"],
                 f"{lp['times']['trainer']['median_ms']:.3f}", f"{lp['times']['bare']['median_ms']:.3f}",
                 f"{lp['ratio']:.3f}x") for lp in report["loop"]]
        parts.append(table(rows, ["loop", "batch", "Trainer ms/step", "bare ms/step", "ratio"]))
    if "data" in report:
        d = report["data"]
        parts.append(table(
            [("TensorData + crop_flip (on device)", f"{d['tensor_data_ms'] / 1e3:.2f}", "1x")]
            + [(f"DataLoader + PIL transforms, {w} workers", f"{d[f'dataloader_{w}w_ms'] / 1e3:.2f}",
                f"{d[f'speedup_{w}w']:.1f}x") for w in (0, 2)],
            [f"one epoch, {d['images']} images, batch {d['batch_size']}", "s", "time / on-device"]))
    if "results" in report:
        g = report["results"]
        parts.append(table(
            [(f"bench gather ({g['history_rows']} history rows)", g["runs"], f"{g['gather_s']:.2f}"),
             ("leaderboard (Markdown + CSV, no figures)", g["gathered"], f"{g['leaderboard_s']:.2f}")],
            ["results", "runs", "s"]))
    if "compact" in report:
        c = report["compact"]
        parts.append(table([(
            c["model"], f"{c['zeroed_fraction']:.2f}", f"{c['params']} -> {c['params_compact']}",
            f"{c['flops_ratio']:.2f}x", f"{c['sparse_flops_ratio']:.2f}x",
            f"{c['times']['original']['median_ms']:.2f} -> {c['times']['compact']['median_ms']:.2f}",
            f"{c['measured_speedup']:.2f}x", c["outputs_equal"])],
            ["compacted model", "channels zeroed", "params", "FLOPs ratio", "unstructured-count ratio",
             f"latency ms (batch {c['batch_size']})", "measured speed-up", "outputs equal"]))
    if report["checks"]:
        rows = [(c["name"], f"{c['value']:.3f}" if isinstance(c["value"], float) else c["value"], c["target"],
                 "PASS" if c["passed"] else "MISS") for c in report["checks"]]
        parts.append(table(rows, ["check", "measured", "target", "result"]))
    return "\n\n".join(parts)

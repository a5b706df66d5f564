"""Measured speed-up (`bench.inference`, `bench speedup`): backends compute what the trained model
computes or are refused, formats and applicability follow the weights, and `bench speedup` adds
its fields to a finished run without retraining or touching anything else. Nothing here depends
on timings: `tests/perf_speedup.py` prints the measured ratios."""

from __future__ import annotations

import argparse
import json
import re

import pytest
import torch
from torch import nn

from bench import inference, record, speedup
from bench.compact import zero_random_channels
from bench.config import Budget, RunConfig
from bench.data import TensorData
from bench.inference import (
    BACKENDS,
    SparseMatmul,
    backend_key,
    is_2_4,
    measure_speedup,
    sparse_format,
    unpruned_reference,
)
from bench.models.resnet_cifar import resnet20
from bench.perf import kernels
from bench.run.job import run
from bench.run.trainer import Trainer

CPU = torch.device("cpu")
FAST = {"batch_size": 8, "repeats": 3, "budget_s": 0.05}  # timing values are not under test here


def data(shape: tuple[int, ...], n: int = 64, classes: int = 10) -> TensorData:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)
    return TensorData(x, y, x, y, classes)


def mlp(sparsity: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight[torch.rand_like(m.weight) < sparsity] = 0
    return model


def perturbed(scale: float) -> inference.Backend:
    """A backend that changes the last layer's weights by `scale` (a broken conversion)."""
    def build(model: nn.Module, example: torch.Tensor, reference: nn.Module) -> nn.Module:
        with torch.no_grad():
            model[-1].weight.mul_(scale)
        return model
    return build


# ------------------------------------------------------------------------------- refusing


def test_a_backend_whose_outputs_differ_is_refused_and_never_timed():
    backends = {"dense": BACKENDS["dense"], "same": perturbed(1.0), "off": perturbed(1.05)}
    f = measure_speedup(mlp(0.9), data((1, 8, 8)), CPU, backends=backends, **FAST)
    assert f["speedup_same_status"] == "ok" and f["speedup_same_ms"] > 0 and f["speedup_same_b1"] > 0
    assert f["speedup_off_status"] == "refused"
    assert re.search(r"max \|logit difference\| \S+ \(tolerance \S+\)", f["speedup_off_reason"])
    assert f["speedup_off_max_abs_diff"] > 0
    assert f["speedup_off_ms"] is None and f["speedup_off"] is None and f["speedup_off_ms_b1"] is None
    assert {f["speedup_best_backend"], f["speedup_best_backend_b1"]} <= {"dense", "same"}


def test_same_logits_but_a_different_top1_is_refused():
    """Within the logit tolerance is not enough: the top-1 accuracy must be the same too."""
    model = mlp()
    d = data((1, 8, 8))
    with torch.no_grad():  # make the first example a near tie that a tiny change flips
        logits = model(d.x_test[:1])[0]
        top, label = int(logits.argmax()), int(d.y_test[0])
        if top == label:
            label = (top + 1) % 10
            d.y_test[0] = label
        model[-1].bias[label] += float(logits[top] - logits[label]) - 1e-5

    def flip(m: nn.Module, example: torch.Tensor, reference: nn.Module) -> nn.Module:
        with torch.no_grad():
            m[-1].bias[label] += 2e-5
        return m

    f = measure_speedup(model, d, CPU, backends={"dense": BACKENDS["dense"], "flip": flip}, **FAST)
    assert f["speedup_flip_max_abs_diff"] < 1e-3
    assert f["speedup_flip_status"] == "refused" and "top-1" in f["speedup_flip_reason"]


def test_speedups_are_medians_of_ratios_within_a_round():
    """A burst of load slowing one whole round (round 2) slows both sides of its pair alike."""
    t = inference.Timings({"dense": [1.0, 10.0, 1.0], "x": [0.5, 5.0, 2.0]})
    assert t.speedup("x") == 2.0 and t.speedup("dense") == 1.0
    assert t.ms("dense") == 1000.0 and t.ms("x") == 2000.0 and t.repeats == 3


def test_dense_must_come_first():
    with pytest.raises(ValueError, match="first backend must be 'dense'"):
        measure_speedup(mlp(), data((1, 8, 8)), CPU, backends={"sparse": BACKENDS["sparse"]}, **FAST)


# ----------------------------------------------------------------------------- applicability


def test_2to4_is_not_applicable_on_cpu_and_says_why():
    model = mlp()
    with torch.no_grad():  # a true 2:4 pattern: only the device stands in the way
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.view(m.weight.shape[0], -1, 4)[..., :2] = 0
    assert is_2_4(model[1].weight) and is_2_4(model[3].weight)
    f = measure_speedup(model, data((1, 8, 8)), CPU, **FAST)
    assert f["speedup_2to4_status"] == "not_applicable"
    assert "CUDA" in f["speedup_2to4_reason"] and "this device is cpu" in f["speedup_2to4_reason"]
    assert f["speedup_2to4_ms"] is None and f["speedup_2to4"] is None


def test_2_4_pattern_detection():
    w = torch.tensor([[1.0, 0, 2, 0, 0, 0, 0, 3], [1, 1, 0, 0, 1, 0, 0, 1]])
    assert is_2_4(w)
    w[0, 1] = 5  # three non-zeros in the first group of four
    assert not is_2_4(w)
    assert not is_2_4(torch.zeros(2, 6))  # inputs not a multiple of 4


def test_sparse_format_uses_blocks_only_where_they_pay():
    torch.manual_seed(0)
    unstructured = torch.randn(64, 64) * (torch.rand(64, 64) < 0.1)
    assert sparse_format(unstructured).layout == torch.sparse_csr
    blocks = (torch.rand(4, 4) < 0.3).repeat_interleave(16, 0).repeat_interleave(16, 1)
    structured = torch.randn(64, 64) * blocks
    s = sparse_format(structured)
    assert s.layout == torch.sparse_bsr and s.values().shape[-2:] == (16, 16)
    torch.testing.assert_close(s.to_dense(), structured)


@pytest.mark.parametrize("kw", [
    dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, padding=1, bias=True),
    dict(kernel_size=1, stride=2), dict(kernel_size=3, dilation=2, padding=2), dict(kernel_size=(3, 1)),
])
def test_sparse_convolution_as_a_matrix_product_is_the_convolution(kw):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, **{"bias": False, **kw}).eval()
    with torch.no_grad():
        conv.weight[torch.rand_like(conv.weight) < 0.8] = 0
    x = torch.randn(3, 6, 9, 11)
    w = conv.weight.detach().reshape(8, -1)
    with torch.no_grad():
        for fmt in (w.to_sparse_csr(), w.to_sparse_bsr((2, 2))):
            torch.testing.assert_close(SparseMatmul(conv, fmt)(x), conv(x), rtol=1e-5, atol=1e-5)


def test_unstructured_and_channel_sparsity_pick_different_backends():
    """Unstructured 95%: nothing to compact, every layer sparse. A quarter of the channels zeroed:
    a compact model with fewer MACs, and layers too dense for sparse kernels (9/16 remain)."""
    d = data((3, 32, 32), n=16)
    unstructured = resnet20(10).eval()
    with torch.no_grad():
        for m in unstructured.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight[torch.rand_like(m.weight) < 0.95] = 0
    f = measure_speedup(unstructured, d, CPU, **FAST)
    assert f["speedup_compact_status"] == "not_applicable"
    layers = sum(isinstance(m, nn.Conv2d | nn.Linear) for m in unstructured.modules())
    assert f["speedup_sparse_status"] == "ok" and f["speedup_sparse_reason"] == f"csr:{layers}"
    assert f["speedup_theoretical"] > 10

    torch.manual_seed(0)
    channels = resnet20(10).eval()
    zero_random_channels(channels, d.x_test[:2], 0.25)
    g = measure_speedup(channels, d, CPU, **FAST)
    assert g["speedup_compact_status"] == "ok" and g["speedup_compact_max_abs_diff"] < 1e-4
    assert g["speedup_sparse_status"] == "not_applicable"
    assert "at most 50% dense" in g["speedup_sparse_reason"]
    assert g["speedup_theoretical"] > 1.2


def test_the_unpruned_architecture_is_the_reference_when_the_model_shrank():
    model = resnet20(10)
    assert unpruned_reference(model, lambda: resnet20(10)) is None
    x = torch.randn(2, 3, 32, 32)
    zero_random_channels(model, x, 0.5)
    from bench.compact import remove_zero_channels

    small = remove_zero_channels(model.eval(), x)
    ref = unpruned_reference(small, lambda: resnet20(10))
    assert isinstance(ref, nn.Module)
    f = measure_speedup(small, data((3, 32, 32), n=8), CPU, dense_model=ref, **FAST)
    assert f["speedup_reference"] == "unpruned" and "unpruned architecture" in f["speedup_dense_reason"]
    assert f["speedup_theoretical"] > 2  # MACs of the unpruned architecture over the small model's
    assert f["speedup_compact_status"] == "ok"  # compacted in training: what the reference is timed against


def test_fields_are_the_documented_ones_and_the_model_is_left_alone():
    model = mlp(0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    f = measure_speedup(model, data((1, 8, 8)), CPU, **FAST)
    documented = {f.name for f in record.FIELDS if f.name.startswith("speedup_")}
    assert set(f) == documented  # every field the run record declares, and no other
    assert {backend_key(b) for b in BACKENDS} == set(record.SPEEDUP_BACKENDS)
    assert json.loads(json.dumps(f)) == f  # plain JSON values
    assert f["speedup_dense"] == f["speedup_dense_b1"] == 1.0
    ok = [b for b in BACKENDS if f[f"speedup_{backend_key(b)}_status"] == "ok"]
    assert f["speedup_best"] == max(f[f"speedup_{backend_key(b)}"] for b in ok)
    assert f["speedup_best_b1"] == max(f[f"speedup_{backend_key(b)}_b1"] for b in ok)
    assert f["speedup_threads"] == torch.get_num_threads() and f["speedup_repeats"] >= 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


# ----------------------------------------------------------------------------- bench speedup


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    config = RunConfig(pruner="magnitude", hparams={"sparsity": 0.9}, budget=Budget(epochs=1), device="cpu")
    r = run(config, out)
    return out / r["run_id"], r


def test_every_finished_run_records_its_speedup(finished_run):
    _, r = finished_run
    assert r["speedup_dense_status"] == "ok" and r["speedup_sparse_status"] == "ok"
    assert r["speedup_theoretical"] == pytest.approx(r["macs_dense"] / r["macs_sparse"])
    assert r["speedup_best"] >= 1.0


def test_bench_speedup_adds_fields_without_retraining_or_changing_anything_else(finished_run, monkeypatch):
    folder, _ = finished_run
    result = json.loads((folder / "result.json").read_text())
    old = {k: v for k, v in result.items() if not k.startswith("speedup_")}  # a run from before
    (folder / "result.json").write_text(json.dumps(old))
    files = {p: p.read_bytes() for p in (folder / n for n in ("checkpoint.pt", "history.csv", "config.json"))}

    def no_training(*_args, **_kw):
        raise AssertionError("bench speedup must not train")

    monkeypatch.setattr(Trainer, "train_epoch", no_training)
    monkeypatch.setattr(Trainer, "fit", no_training)
    parser = argparse.ArgumentParser()
    speedup.configure(parser)
    args = parser.parse_args([str(folder.parent), "--batch", "16", "--budget-s", "0.1"])
    assert args.func(args) == 0

    new = json.loads((folder / "result.json").read_text())
    assert {k: v for k, v in new.items() if not k.startswith("speedup_")} == old
    assert {k for k in new if k.startswith("speedup_")} == {k for k in result if k.startswith("speedup_")}
    assert new["speedup_batch"] == 16 and new["speedup_sparse_status"] == "ok"
    for p, content in files.items():
        assert p.read_bytes() == content, p.name

    args = parser.parse_args([str(folder)])  # measured already: left alone without --force
    assert args.func(args) == 0
    assert json.loads((folder / "result.json").read_text()) == new


def test_bench_speedup_refuses_a_folder_without_a_finished_run(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "result.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(Exception, match="not a finished run"):
        speedup.speedup_for_run(tmp_path / "r")
    parser = argparse.ArgumentParser()
    speedup.configure(parser)
    args = parser.parse_args([str(tmp_path)])
    assert args.func(args) == 0 and "skipped (status 'failed')" in capsys.readouterr().err


# --------------------------------------------------------------------------------- kernel table


def test_crossover_is_where_sparse_wins_from_then_on():
    def rows(xs):
        return [{"shape": "s", "batch": 1, "sparsity": s, "csr_x": x} for s, x in xs]

    assert kernels.crossovers(rows([(0.5, 0.4), (0.9, 1.3), (0.99, 5.0)])) == {("s", 1): 0.9}
    assert kernels.crossovers(rows([(0.5, 1.1), (0.9, 0.9), (0.99, 2.0)])) == {("s", 1): 0.99}  # a dip
    assert kernels.crossovers(rows([(0.5, 0.4), (0.99, 0.8)])) == {("s", 1): None}


def test_kernel_table_rows_and_markdown():
    rows = kernels.kernel_table(CPU, kernels.QUICK_SHAPES, (0.5, 0.9), repeats=3, budget_s=0.01)
    assert [(r["shape"], r["batch"], r["sparsity"]) for r in rows] == [
        (s.name, b, p) for s in kernels.QUICK_SHAPES for b in (1, s.large_batch) for p in (0.5, 0.9)]
    for r in rows:
        assert r["dense_ms"] > 0 and r["csr_ms"] > 0 and r["csr_x"] > 0
        assert r["2:4_ms"] is None  # CPU
        assert (r["bsr_ms"] is None) == (r["shape"].startswith("tiny conv"))  # 72 inputs: no 16x16 blocks
    md = kernels.format_table(rows)
    assert md.count("\n| tiny linear 32>64 |") == 4 + 2 and "Crossover" in md


def test_speedup_figure_has_a_marker_per_measured_backend(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd

    from bench import plots

    rows = [{"pruner": pruner, "sparsity": sparsity, "speedup_theoretical": theo, "speedup_best": 1.5,
             "speedup_compact": 1.2, "speedup_sparse": 1.5, "speedup_2to4": None}
            for pruner, sparsity, theo in (("grda", 0.9, 8.0), ("channel", 0.5, 3.0))]
    path = plots.speedup_per_backend(pd.DataFrame(rows), tmp_path / "s.png",
                                     plots.pruner_styles(["grda", "channel"]), title="digits / mlp")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = path.with_suffix(".svg").read_text()
    assert "compact" in svg and "sparse" in svg and "median over runs" in svg
    assert "2:4" not in svg  # never measured: not in the legend
    assert not plt.get_fignums()  # closed after saving


# ----------------------------------------------------------------------------- 2:4, float16


def test_a_conv_pruned_by_nm_qualifies_for_2to4():
    """`nm` groups a convolution's input channels per kernel position; so does the 2:4 check (a
    grouping along (in, kh, kw) would reject every 3x3 convolution it pruned)."""
    from baselines.nm import nm_mask

    torch.manual_seed(0)
    conv = nn.Conv2d(64, 32, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(nm_mask(conv.weight, 2, 4))
    assert inference.qualifies_2_4(conv)
    assert not is_2_4(conv.weight.detach().reshape(32, -1))  # the (in, kh, kw) grouping
    assert not inference.qualifies_2_4(nn.Conv2d(64, 32, 3))  # dense
    assert not inference.qualifies_2_4(nn.Conv2d(60, 32, 1))  # 60 inputs: not a multiple of 64


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1), dict(kernel_size=3, stride=2, bias=True)])
def test_the_2to4_layer_reads_the_unfolded_input_in_the_nm_order(kw):
    """The semi-structured path with a dense stand-in for the compressed weight: the same product."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, **{"bias": False, **kw}).eval()
    x = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        layer = SparseMatmul(conv, inference.nm_matrix(conv).contiguous(), semi_structured=True)
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)


def _half(model, example, reference):
    half = inference.HalfPrecision(model.eval())
    half.tolerance = (inference.HALF_RTOL, inference.HALF_TOP1_SLACK)
    half.timing_reference = inference.HalfPrecision(reference.eval())
    return half


def test_a_float16_backend_is_checked_with_a_float16_tolerance_against_a_float16_reference():
    model, d = resnet20(10).eval(), data((3, 32, 32), n=32)
    f = measure_speedup(model, d, CPU, backends={"dense": BACKENDS["dense"], "2:4": _half}, **FAST)
    assert f["speedup_2to4_status"] == "ok", f["speedup_2to4_reason"]
    assert 0 < f["speedup_2to4_max_abs_diff"] and f["speedup_2to4"] > 0

    def strict(model, example, reference):  # the same model held to float32's tolerance
        half = _half(model, example, reference)
        del half.tolerance
        return half

    f = measure_speedup(model, d, CPU, backends={"dense": BACKENDS["dense"], "2:4": strict}, **FAST)
    assert f["speedup_2to4_status"] == "refused"

"""Baseline pruners: targets reached, masks that hold, the papers' formulas, exact resume.

Parametrized over the registry: a new pruner with a `sparsity` hyperparameter, or a new mask
pruner, is tested without new test code. Short budgets (3 digits epochs, about a second each);
the full-budget 90% checks run with BENCH_SLOW=1.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from baselines._mask import MaskPruner, keep_masks
from baselines.gmp import GMPHparams, GMPPruner
from baselines.str import STRHparams, STRPruner
from baselines.vd import SVDOMixin, VDHparams, VDPruner
from bench import metrics
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.io import load_checkpoint
from bench.pruner import RunContext
from bench.registry import MODELS, PRUNERS
from bench.train import Trainer, run
from bench.validate import check_config


def hparam_names(pruner: str) -> set[str]:
    return {f.name for f in dataclasses.fields(PRUNERS.get(pruner).Hparams)}


TARGET_PRUNERS = [n for n in PRUNERS.names() if "sparsity" in hparam_names(n)]
MASK_PRUNERS = [n for n, cls in PRUNERS.items() if issubclass(cls, MaskPruner)]
SHORT = Budget(epochs=3)  # 135 steps on digits
TOL = 0.005  # sparsity tolerance of a target-sparsity pruner (0.5 percentage points)

slow = pytest.mark.skipif(not os.environ.get("BENCH_SLOW"), reason="full budget (5-10 s a run): BENCH_SLOW=1")


def config(pruner: str, budget: Budget = SHORT, **hparams) -> RunConfig:
    return check_config(RunConfig(pruner=pruner, hparams=hparams, budget=budget))


def test_registry_holds_every_baseline() -> None:
    assert {"magnitude", "gmp", "str", "vd", "random", "channel"} <= set(PRUNERS.names())
    assert {"magnitude", "gmp", "random", "channel"} <= set(TARGET_PRUNERS)


# ------------------------------------------------------------------------------ hyperparameters


@pytest.mark.parametrize("pruner", TARGET_PRUNERS)
@pytest.mark.parametrize("bad", [1.0, 1.2, -0.1])
def test_sparsity_outside_0_1_is_refused_naming_the_field(pruner: str, bad: float) -> None:
    with pytest.raises(ConfigError) as err:
        config(pruner, sparsity=bad)
    assert f"pruners.{pruner}: sparsity = {bad!r}: must be in [0, 1)" in str(err.value)


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_defaults_are_valid_and_documented(pruner: str) -> None:
    cls = PRUNERS.get(pruner)
    cls.Hparams()  # the defaults pass their own validation
    assert all(help_ for _, _, help_ in cls.describe()), "every hyperparameter needs help text"
    knob = cls.sparsity_knob
    if knob is not None:
        assert knob.name in hparam_names(pruner)
        assert 0 < knob.low < knob.high if knob.scale == "log" else knob.low < knob.high


# ------------------------------------------------------------------------- targets and masks


@pytest.mark.parametrize("pruner", TARGET_PRUNERS)
def test_short_run_reaches_the_target_sparsity(tmp_path: Path, pruner: str) -> None:
    result = run(config(pruner, sparsity=0.8), tmp_path)
    assert result["status"] == "ok"
    assert abs(result["sparsity"] - 0.8) <= TOL, result["sparsity"]
    dense = metrics.param_counts(MODELS.get("mlp").build(10))
    assert result["params_dense"] == dense["params"]
    assert set(result["layer_sparsity"]) == set(dense["layers"])


def test_channel_removes_parameters_and_counts_against_the_dense_model(tmp_path: Path) -> None:
    result = run(config("channel", sparsity=0.8), tmp_path)
    assert result["total_params"] < 0.3 * result["params_dense"]  # physically smaller
    assert result["sparsity_all"] == pytest.approx(1 - result["nonzero_params"] / result["params_dense"])
    assert result["macs_sparse"] < 0.3 * result["macs_dense"]


def test_magnitude_masks_global_and_per_layer() -> None:
    torch.manual_seed(0)
    weights = {"a": torch.randn(30, 20), "b": 3 * torch.randn(10, 10)}  # b: larger magnitudes
    scores = {n: w.abs() for n, w in weights.items()}
    per_layer = keep_masks(scores, 0.5, "layer")
    for name, w in weights.items():  # the same mask as torch's own L1 pruning
        reference = prune.L1Unstructured(0.5).compute_mask(w, torch.ones_like(w)).bool()
        assert torch.equal(per_layer[name], reference)
    globally = keep_masks(scores, 0.5, "global")
    assert sum(int((~m).sum()) for m in globally.values()) == 350
    kept = torch.cat([w[m].abs() for w, m in zip(weights.values(), globally.values(), strict=True)])
    cut = torch.cat([w[~m].abs() for w, m in zip(weights.values(), globally.values(), strict=True)])
    assert cut.max() <= kept.min()  # one threshold over all layers
    assert int((~globally["b"]).sum()) < 50  # so the large-magnitude layer keeps more


def test_channel_prunes_conv_bn_groups_and_keeps_training_mode() -> None:
    """Filters go with their BN channels and the next layer's inputs; BN statistics of the kept
    channels are untouched and the model stays in training mode (torch-pruning traces in eval)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    model(torch.randn(8, 1, 8, 8))  # non-trivial BN running statistics
    p = PRUNERS.get("channel")(PRUNERS.get("channel").Hparams(sparsity=0.6), Budget(),
                               RunContext(total_steps=10, input_shape=(1, 8, 8)))
    dense = metrics.param_counts(model)
    model = p.prepare(model)
    mean_before = model[1].running_mean.clone()
    p.after_step(p.prune_step - 1)
    assert p.model_changed and model.training
    assert model[0].out_channels == model[1].num_features == model[3].in_channels < 16
    assert model[8].out_features == 10  # the classifier's outputs are the classes
    removed = next(idxs for name, out, idxs in p.history if name == "0" and out)
    kept = sorted(set(range(16)) - set(removed))
    assert torch.equal(model[1].running_mean, mean_before[kept])
    assert abs(metrics.sparsity_stats(model, dense)["sparsity"] - 0.6) < 0.05  # tiny net: coarse steps
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("pruner", MASK_PRUNERS)
def test_masks_match_parameters_and_masked_weights_stay_zero(tmp_path: Path, pruner: str) -> None:
    """With momentum and weight decay, every step: masked weights and momentum are exactly zero,
    and a weight once pruned stays pruned (GMP's masks only shrink)."""
    budget = Budget(epochs=2, momentum=0.9, weight_decay=5e-4)
    trainer = Trainer(config(pruner, budget, sparsity=0.7), tmp_path, progress=False)
    p: MaskPruner = trainer.pruner
    after_step, checked, previous = p.after_step, [], {}

    def after_step_checked(step: int) -> None:
        after_step(step)
        if not p.masks:
            return
        assert set(p.masks) == {n for n, _ in p.prunable(trainer.model)}
        for name, mask in p.masks.items():
            w = p.layers[name].weight
            assert mask.shape == w.shape and mask.dtype == torch.bool
            assert not w[~mask].any(), f"{name}: masked weights moved at step {step}"
            buf = trainer.optimizer.state.get(w, {}).get("momentum_buffer")
            assert buf is None or not buf[~mask].any(), f"{name}: momentum of masked weights"
            if name in previous:
                assert not (mask & ~previous[name]).any(), f"{name}: a pruned weight grew back"
            previous[name] = mask.clone()
        checked.append(step)

    p.after_step = after_step_checked
    trainer.fit("test")
    assert len(checked) >= 20, "the masks were checked over several steps"


# ------------------------------------------------------------------------------ the formulas


def test_gmp_schedule_follows_zhu_and_gupta() -> None:
    hp = GMPHparams(sparsity=0.9, initial_sparsity=0.1)
    p = GMPPruner(hp, Budget(), RunContext(total_steps=1000))
    model = p.prepare(MODELS.get("mlp").build(10))
    t0, dt = round(hp.start * 1000), round(hp.every * 1000)
    n = (round(hp.end * 1000) - t0) // dt
    updates = [t for t in range(1, 1001) if p.is_update(t)]
    assert updates == [t0 + i * dt for i in range(n + 1)]
    for t in updates:
        s_t = hp.sparsity + (hp.initial_sparsity - hp.sparsity) * (1 - (t - t0) / (n * dt)) ** 3
        assert p.target_sparsity(t) == pytest.approx(s_t)
        p.after_step(t - 1)  # the hook sees the index of the step just taken
        for name, m in p.prunable(model):
            zeros = int((m.weight == 0).sum())
            assert zeros == round(s_t * m.weight.numel()), (t, name)
    assert p.target_sparsity(t0) == pytest.approx(hp.initial_sparsity)
    assert p.target_sparsity(updates[-1]) == p.target_sparsity(1000) == pytest.approx(hp.sparsity)


def _neg_kl_reference(log_alpha: float) -> float:
    """REFERENCE.md: -KL ~= k1 sigmoid(k2 + k3 la) - 0.5 log1p(exp(-la)) - k1, la clipped to [-8, 8]."""
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    la = min(max(log_alpha, -8.0), 8.0)
    return k1 / (1 + math.exp(-(k2 + k3 * la))) - 0.5 * math.log1p(math.exp(-la)) - k1


def test_vd_kl_term_is_the_molchanov_approximation_scaled_per_example() -> None:
    hp = VDHparams(kl_weight=2.0, warmup=0.5)
    p = VDPruner(hp, Budget(), RunContext(total_steps=100, num_train=1000))
    model = p.prepare(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    layers = [m for m in model.modules() if isinstance(m, SVDOMixin)]
    assert len(layers) == 2 and all(isinstance(m, nn.Linear) for m in layers)
    assert any(k.endswith("log_sigma2") for k in model.state_dict())
    log_alphas = []
    with torch.no_grad():
        for m in layers:
            m.weight.fill_(0.5)
            la = torch.linspace(-12, 12, m.weight.numel()).view_as(m.weight)  # past both clips
            m.log_sigma2.copy_(la + math.log(0.25))  # log alpha = log sigma^2 - log theta^2
            log_alphas += la.flatten().tolist()
    assert p.regularizer(model) is None  # step 0: beta = 0
    p.after_step(24)  # 25 steps done: beta = kl_weight * 25 / 50
    expected = 2.0 * 0.5 / 1000 * sum(-_neg_kl_reference(la) for la in log_alphas)
    assert p.regularizer(model).item() == pytest.approx(expected, rel=1e-5)
    p.after_step(99)
    assert p.regularizer(model).item() == pytest.approx(2 * expected, rel=1e-5)


def test_vd_evaluates_a_plain_model_without_high_dropout_weights() -> None:
    p = VDPruner(VDHparams(threshold=3.0), Budget(), RunContext(total_steps=10, num_train=100))
    model = p.prepare(nn.Sequential(nn.Linear(4, 3)))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].log_sigma2.copy_(torch.tensor([2.0, 2.9, 3.5, 5.0]).expand(3, 4))  # log alpha = these
    plain = p.finalize(model)
    assert type(plain[0]) is nn.Linear
    assert plain[0].weight[0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert torch.equal(plain[0].bias, model[0].bias)
    x = torch.randn(5, 4)
    model.eval()
    assert torch.allclose(plain(x), model(x))  # eval mode of the VD layer = the plain copy


def test_str_weight_is_the_soft_threshold_of_v_and_the_optimizer_holds_v_and_s() -> None:
    hp = STRHparams(s_init=-2.0, s_weight_decay=0.5)
    p = STRPruner(hp, Budget(weight_decay=1e-4), RunContext())
    model = p.prepare(MODELS.get("mlp").build(10))
    opt = p.make_optimizer(model)
    held = {id(q): g["weight_decay"] for g in opt.param_groups for q in g["params"]}
    for _, m in p.prunable(model):
        v = m.parametrizations.weight.original
        s = m.parametrizations.weight[0].s
        assert s.item() == -2.0
        expected = torch.sign(v) * torch.relu(v.abs() - torch.sigmoid(s))
        assert torch.equal(m.weight, expected)
        assert held[id(v)] == 1e-4 and held[id(s)] == 0.5
    assert len(held) == len(list(model.parameters()))

    plain = p.finalize(model)
    for (_, a), (_, b) in zip(p.prunable(model), p.prunable(plain), strict=True):
        assert not parametrize.is_parametrized(b) and type(b) is nn.Linear
        assert torch.equal(a.weight, b.weight)  # the original is still parametrized and intact
    assert metrics.sparsity_stats(plain)["sparsity"] > 0


# ------------------------------------------------------------------- determinism and resume


class Interrupted(Exception):
    pass


# GMP ends its schedule at 60% of the budget by default: end later so the checkpoint falls mid-way.
RESUME_HPARAMS = {"gmp": {"end": 0.9}}
INTERRUPT_AFTER = 2  # of 3 epochs: after magnitude's and channel's pruning step (at 50%)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[dict, dict]]:
    """pruner -> (result, final checkpoint) of one uninterrupted short run, shared by the tests."""
    out = tmp_path_factory.mktemp("uninterrupted")
    cache: dict[str, tuple[dict, dict]] = {}

    def get(pruner: str) -> tuple[dict, dict]:
        if pruner not in cache:
            cfg = config(pruner, **RESUME_HPARAMS.get(pruner, {}))
            result = run(cfg, out)
            cache[pruner] = result, load_checkpoint(out / cfg.run_id / "checkpoint.pt")
        return cache[pruner]

    return get


def assert_same_run(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    (ra, ca), (rb, cb) = a, b
    for key in ("status", "top1", "top5", "sparsity", "layer_sparsity", "nonzero_params", "steps"):
        assert ra[key] == rb[key], key
    assert ca["model"].keys() == cb["model"].keys()
    for key, tensor in ca["model"].items():
        assert torch.equal(tensor, cb["model"][key]), key
    assert [h["loss"] for h in ca["history"]] == [h["loss"] for h in cb["history"]]


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_same_seed_gives_identical_runs(tmp_path: Path, pruner: str, uninterrupted) -> None:
    cfg = config(pruner, **RESUME_HPARAMS.get(pruner, {}))
    again = run(cfg, tmp_path)
    assert_same_run(uninterrupted(pruner), (again, load_checkpoint(tmp_path / cfg.run_id / "checkpoint.pt")))


@pytest.mark.parametrize("pruner", PRUNERS.names())
def test_resumed_run_equals_uninterrupted(tmp_path: Path, monkeypatch, pruner: str, uninterrupted) -> None:
    cfg = config(pruner, **RESUME_HPARAMS.get(pruner, {}))
    save = Trainer.save

    def save_then_stop(self: Trainer) -> None:
        save(self)
        if self.epoch == INTERRUPT_AFTER:
            raise Interrupted

    monkeypatch.setattr(Trainer, "save", save_then_stop)
    with pytest.raises(Interrupted):
        run(cfg, tmp_path)
    monkeypatch.undo()
    resumed = run(cfg, tmp_path)
    assert resumed["resumed"] is True
    checkpoint = load_checkpoint(tmp_path / cfg.run_id / "checkpoint.pt")
    assert_same_run(uninterrupted(pruner), (resumed, checkpoint))


# ------------------------------------------------------------------------ full budget (slow)


@slow
@pytest.mark.parametrize("pruner", TARGET_PRUNERS)
def test_full_budget_reaches_90_percent_with_accuracy(tmp_path: Path, pruner: str) -> None:
    """The default budget (60 epochs, batch 32, lr 0.1, constant) on digits with the MLP."""
    result = run(config(pruner, Budget(), sparsity=0.9), tmp_path)
    assert abs(result["sparsity"] - 0.9) <= TOL, result["sparsity"]
    if pruner != "random":
        assert result["top1"] >= 0.93, result["top1"]

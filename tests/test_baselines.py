"""Baseline pruners: targets reached, masks that hold, the papers' formulas, exact resume.

Parametrized over the registry: a new pruner with a `sparsity` hyperparameter, or a new mask
pruner, is tested without new test code. Short budgets (3 digits epochs, about a second each);
the full-budget target checks (every pruner at 90%, N:M at 2:4) run by default (1-2 s a run on
the digits MLP, VD about 12 s).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from baselines._mask import MaskPruner, keep_masks
from baselines.gmp import GMPHparams, GMPPruner
from baselines.imp import IMPHparams
from baselines.nm import nm_mask, nm_pattern_holds
from baselines.rigl import RigLHparams, RigLPruner
from baselines.set import SETHparams, SETPruner
from baselines.snip import SNIPHparams, SNIPPruner
from baselines.str import STRHparams, STRPruner
from baselines.synflow import SynFlowHparams, SynFlowPruner, synflow_masks
from baselines.vd import SVDOMixin, VDHparams, VDPruner
from bench import metrics
from bench.config import Budget, RunConfig
from bench.errors import ConfigError
from bench.io import load_checkpoint
from bench.pruner import RunContext
from bench.registry import MODELS, PRUNERS
from bench.run.job import run
from bench.run.trainer import Trainer
from bench.validate import check_config


def hparam_names(pruner: str) -> set[str]:
    return {f.name for f in dataclasses.fields(PRUNERS.get(pruner).Hparams)}


TARGET_PRUNERS = [n for n in PRUNERS.names() if "sparsity" in hparam_names(n)]
MASK_PRUNERS = [n for n, cls in PRUNERS.items() if issubclass(cls, MaskPruner)]
SHORT = Budget(epochs=3)  # 135 steps on digits
TOL = 0.005  # sparsity tolerance of a target-sparsity pruner (0.5 percentage points)
NEW = {"rigl", "set", "snip", "synflow", "imp", "nm", "random_gradual"}


def config(pruner: str, budget: Budget = SHORT, **hparams) -> RunConfig:
    return check_config(RunConfig(pruner=pruner, hparams=hparams, budget=budget))


def test_registry_holds_every_baseline() -> None:
    assert {"magnitude", "gmp", "str", "vd", "random", "channel"} | NEW <= set(PRUNERS.names())
    assert {"magnitude", "gmp", "random", "channel"} | NEW - {"nm"} <= set(TARGET_PRUNERS)
    assert NEW <= set(MASK_PRUNERS)


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
    assert [k.split(" (")[0] for k in result["layer_sparsity"]] == list(dense["layers"])


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


MASK_HPARAMS = {"nm": {}, "rigl": {"sparsity": 0.7, "delta_t": 10}, "imp": {"sparsity": 0.7, "rewind": 0.2}}


@pytest.mark.parametrize("pruner", MASK_PRUNERS)
def test_masks_match_parameters_and_masked_weights_stay_zero(tmp_path: Path, pruner: str) -> None:
    """With momentum and weight decay, every step: masked weights and momentum are exactly zero,
    and a weight once pruned stays pruned (GMP's masks only shrink) unless the method regrows."""
    budget = Budget(epochs=2, momentum=0.9, weight_decay=5e-4)
    hparams = MASK_HPARAMS.get(pruner, {"sparsity": 0.7})
    trainer = Trainer(config(pruner, budget, **hparams), tmp_path, progress=False)
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
            if name in previous and not p.regrows:
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
RESUME_HPARAMS = {
    "gmp": {"end": 0.9}, "random_gradual": {"end": 0.9}, "rigl": {"delta_t": 20, "end": 0.9},
    "nm": {"mode": "gradual", "end": 0.9}, "imp": {"rewind": 0.3},
}
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


# ------------------------------------------------------------------ what defines each method


def _mlp_pruner(cls, hparams, total_steps: int = 1000, **budget):
    torch.manual_seed(0)
    p = cls(hparams, Budget(**budget), RunContext(total_steps=total_steps, input_shape=(1, 8, 8)))
    model = p.prepare(MODELS.get("mlp").build(10))
    p.make_optimizer(model)
    return p, model


def test_rigl_drops_smallest_weights_and_grows_largest_gradients_at_zero() -> None:
    p, model = _mlp_pruner(RigLPruner, RigLHparams(sparsity=0.9, delta_t=100, end=0.75))
    before = {n: m.clone() for n, m in p.masks.items()}
    model(torch.randn(16, 1, 8, 8)).sum().backward()
    grads = {n: w.grad.abs().clone() for n, w in p.weights().items()}
    assert not p.is_update(99) and p.is_update(100) and not p.is_update(800)
    p.after_backward(99)  # step index 99: the 100th step
    for n, w in p.weights().items():  # the step itself trains the active weights only
        assert not w.grad[~before[n]].any()
    p.after_step(99)
    f = 0.3 / 2 * (1 + math.cos(math.pi * 100 / 750))
    assert p.drop_fraction(100) == pytest.approx(f)
    for n, w in p.weights().items():
        old, new, weight = before[n], p.masks[n], w.detach()
        k = int(f * int(old.sum()))
        assert int(new.sum()) == int(old.sum())  # the layer's count (and the sparsity) holds
        dropped, grown = old & ~new, new & ~old
        assert int(dropped.sum()) <= k and int(grown.sum()) <= k
        assert int(grown.sum()) == int(dropped.sum()) > 0
        assert not weight[dropped].any() and not weight[grown].any()  # dropped zeroed, grown start at 0
        candidates = grads[n].masked_fill(old, -1.0)  # the inactive ones (the just-dropped excluded)
        top = candidates.flatten().topk(int(grown.sum())).values
        assert torch.equal(grads[n][grown].sort().values, top.sort().values)


def test_rigl_drop_is_by_magnitude() -> None:
    p, model = _mlp_pruner(RigLPruner, RigLHparams(sparsity=0.5, delta_t=1, end=1.0, alpha=0.9))
    weights = {n: w.detach().clone() for n, w in p.weights().items()}
    before = {n: m.clone() for n, m in p.masks.items()}
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    p.after_backward(0)
    p.after_step(0)
    assert p.densities["5"] == 1.0  # ERK: the small output layer is dense (capped), nothing to swap
    for n in ("1", "3"):
        dropped, kept = before[n] & ~p.masks[n], before[n] & p.masks[n]
        assert dropped.any()
        assert weights[n][dropped].abs().max() <= weights[n][kept].abs().min()


def test_set_replaces_weights_nearest_zero_at_random_after_each_epoch() -> None:
    p, _ = _mlp_pruner(SETPruner, SETHparams(sparsity=0.8, zeta=0.3), epochs=3)
    weights = {n: w.detach().clone() for n, w in p.weights().items() if p.densities[n] < 1}
    assert len(weights) == 2  # Erdos-Renyi: the output layer is dense (capped), nothing to swap
    before = {n: m.clone() for n, m in p.masks.items()}
    p.end_epoch(0)
    for n, w in weights.items():
        old, new = before[n], p.masks[n]
        dropped, grown = old & ~new, new & ~old
        pos, neg = old & (w > 0), old & (w <= 0)
        assert int((dropped & pos).sum()) == int(0.3 * int(pos.sum()))
        assert int((dropped & neg).sum()) == int(0.3 * int(neg.sum()))
        assert w[dropped & pos].max() <= w[pos & new].min()  # the smallest positives
        assert w[dropped & neg].min() >= w[neg & new].max()  # the largest negatives
        assert int(grown.sum()) == int(dropped.sum()) and not (grown & dropped).any()
        assert not p.layers[n].weight[grown].any()  # regrown at zero
    first = {n: m.clone() for n, m in p.masks.items()}
    p.end_epoch(2)  # the last epoch: no regrowth
    assert all(torch.equal(first[n], p.masks[n]) for n in first)
    # at random, not by any score: the grown set of a layer is spread over the inactive ones
    big = next(n for n in weights if weights[n].numel() > 10000)
    rows = (first[big] & ~before[big]).sum(dim=1).float()
    assert rows.std() < rows.mean()


def test_snip_keeps_the_top_connection_sensitivity_of_one_batch() -> None:
    p, model = _mlp_pruner(SNIPPruner, SNIPHparams(sparsity=0.9))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    scores = {n: (w.grad * w).abs().detach().clone() for n, w in p.weights().items()}
    p.after_backward(0)
    assert all(q.grad is None for q in model.parameters())  # the scoring batch trains nothing
    kept = torch.cat([scores[n][p.masks[n]] for n in scores])
    cut = torch.cat([scores[n][~p.masks[n]] for n in scores])
    assert cut.max() <= kept.min() and len(cut) == round(0.9 * (len(cut) + len(kept)))
    assert p.extra_macs > 0


def test_synflow_is_data_free_iterative_and_exponential(monkeypatch) -> None:
    torch.manual_seed(0)
    model = MODELS.get("mlp").build(10)
    names = [n for n, _ in metrics.weight_layers(model)]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # one round: score = (dR/dw) * w on |theta|, R = sum of outputs for an all-ones input
    one = synflow_masks(model, names, (1, 8, 8), 0.5, rounds=1)
    net = copy.deepcopy(model).double()
    for q in net.parameters():
        q.data.abs_()
    net(torch.ones(1, 1, 8, 8, dtype=torch.float64)).sum().backward()
    expected = keep_masks({n: net.get_submodule(n).weight.grad * net.get_submodule(n).weight for n in names},
                          0.5, "global")
    assert all(torch.equal(one[n], expected[n]) for n in names)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # model untouched
    # the schedule: round k prunes to density d^(k/n)
    seen: list[float] = []
    import baselines.synflow as sf

    def spy(scores, sparsity, scope):
        seen.append(sparsity)
        return keep_masks(scores, sparsity, scope)

    monkeypatch.setattr(sf, "keep_masks", spy)
    masks = synflow_masks(model, names, (1, 8, 8), 0.99, rounds=10)
    assert seen == pytest.approx([1 - 0.01 ** (k / 10) for k in range(1, 11)])
    assert sum(int(m.sum()) for m in masks.values()) == round(0.01 * sum(m.numel() for m in masks.values()))
    # iterating differs from one shot at high sparsity (it avoids layer collapse)
    monkeypatch.undo()
    shot = synflow_masks(model, names, (1, 8, 8), 0.99, rounds=1)
    assert any(not torch.equal(masks[n], shot[n]) for n in names)
    p = SynFlowPruner(SynFlowHparams(sparsity=0.99, rounds=10), Budget(), RunContext(input_shape=(1, 8, 8)))
    p.prepare(model)
    assert all(torch.equal(p.masks[n], masks[n]) for n in names)


def test_imp_rewinds_survivors_to_their_step_k_values(tmp_path: Path) -> None:
    hp = IMPHparams(sparsity=0.5, rewind=0.25)
    assert hp.rounds == 4  # 1 - 0.8^4 = 0.59 >= 0.5 > 1 - 0.8^3
    trainer = Trainer(config("imp", SHORT, sparsity=0.5, rewind=0.25), tmp_path, progress=False)
    p = trainer.pruner
    assert p.prune_at[0] == p.round_steps and p.k == round(0.25 * p.round_steps) > 0
    # rounds share one budget (up to the rounding of the round lengths)
    assert 0 <= trainer.total_steps - (p.prune_at[-1] + p.round_steps - p.k) <= 5
    after_step, seen = p.after_step, {}

    def spy(step: int) -> None:
        after_step(step)
        t = step + 1
        if t == p.k:
            seen["k"] = {n: w.detach().clone() for n, w in p.weights().items()}
        if t in p.prune_at:
            r = p.prune_at.index(t) + 1
            kept = sum(int(m.sum()) for m in p.masks.values())
            total = sum(m.numel() for m in p.masks.values())
            assert 1 - kept / total == pytest.approx(p.round_sparsity(r), abs=1e-3)
            for n, w in p.weights().items():
                m = p.masks[n]
                assert torch.equal(w[m], seen["k"][n][m]) and not w[~m].any()
            seen.setdefault("rounds", []).append(r)

    p.after_step = spy
    result = trainer.fit("test")
    assert seen["rounds"] == [1, 2, 3, 4]
    assert abs(result["sparsity"] - 0.5) <= TOL
    assert result["budget_multiplier"] == 1.0


def test_imp_full_budget_rounds_cost_several_budgets(tmp_path: Path) -> None:
    result = run(config("imp", Budget(epochs=1), sparsity=0.36, full_budget=True), tmp_path)  # 2 rounds
    assert result["budget_multiplier"] == 3.0 and result["steps"] == 3 * 41  # 1295 images trained on
    assert abs(result["sparsity"] - 0.36) <= TOL
    assert 1.5 < result["train_compute_multiplier"] < 3.0  # later rounds are sparser


def test_nm_masks_keep_the_largest_n_of_every_m_along_the_input() -> None:
    torch.manual_seed(0)
    for w in (torch.randn(6, 16), torch.randn(4, 8, 3, 3)):
        mask = nm_mask(w, 2, 4)
        assert nm_pattern_holds(w * mask, 2, 4) and not nm_pattern_holds(w, 2, 4)
        groups = (w.permute(0, 2, 3, 1) if w.dim() == 4 else w).reshape(-1, 4).abs()
        kept = (mask.permute(0, 2, 3, 1) if w.dim() == 4 else mask).reshape(-1, 4)
        assert (kept.sum(dim=1) == 2).all()
        smallest_kept = groups.masked_fill(~kept, 9).min(dim=1).values
        assert (smallest_kept >= groups.masked_fill(kept, -1).max(dim=1).values).all()  # the largest kept


def test_random_gradual_follows_gmps_schedule_with_random_zeros() -> None:
    from baselines.random_gradual import RandomGradualHparams, RandomGradualPruner

    p, _ = _mlp_pruner(RandomGradualPruner, RandomGradualHparams(sparsity=0.9))
    g, _ = _mlp_pruner(GMPPruner, GMPHparams(sparsity=0.9))
    updates = [t for t in range(1, 1001) if p.is_update(t)]
    assert updates == [t for t in range(1, 1001) if g.is_update(t)]  # GMP's schedule, reused
    w0 = p.layers["1"].weight.detach().abs().clone()
    for t in updates:
        p.after_step(t - 1)
        for m in p.masks.values():
            assert int((~m).sum()) == round(p.target_sparsity(t) * m.numel())
        if t == updates[1]:  # the first cut (s_i = 0 at updates[0]) is random: not the smallest |w|
            first = p.masks["1"]
            assert w0[~first].max() > w0[first].min()
            assert float(w0[~first].mean()) == pytest.approx(float(w0.mean()), rel=0.1)


# ------------------------------------------------------------------------- training compute


def test_training_compute_counts_dense_and_sparse_steps(tmp_path: Path) -> None:
    dense = run(config("dense", Budget(epochs=1)), tmp_path)
    assert dense["train_compute_multiplier"] == pytest.approx(1.0)
    assert dense["train_macs"] == pytest.approx(3 * dense["macs_dense"] * 1295)  # digits: 1295 trained on
    rnd = run(config("random", Budget(epochs=1), sparsity=0.8), tmp_path)
    layers = metrics.layer_macs(MODELS.get("mlp").build(10), (1, 8, 8), torch.device("cpu"))
    expected = (dense["macs_dense"] - 0.8 * sum(layers.values())) / dense["macs_dense"]
    assert rnd["train_compute_multiplier"] == pytest.approx(expected, rel=2e-3)  # masks keep round(0.2 n)
    vd = run(config("vd", Budget(epochs=1)), tmp_path)  # two products per layer (LRT)
    assert vd["train_compute_multiplier"] == pytest.approx(2.0, rel=0.02)
    syn = run(config("synflow", Budget(epochs=1), sparsity=0.8), tmp_path)
    assert syn["train_macs"] == pytest.approx(rnd["train_macs"] + 3 * dense["macs_dense"] * 100, rel=1e-3)


# ----------------------------------------------------------------------- VD learns variances


def test_vd_learns_the_variances_of_the_weights_it_prunes(tmp_path: Path) -> None:
    """With the authors' recipe (Adam, ELBO scale) log sigma^2 moves far beyond what the shared
    SGD recipe allows (<= 0.024 over 900 steps), and the pruned set is not a |theta| threshold.
    Adam moves a parameter by about lr per step, so 2700 steps at 1e-3 bound the rise by ~2.7."""
    trainer = Trainer(config("vd", Budget(), kl_weight=0.0177), tmp_path, progress=False)
    trainer.fit("test")
    for m in [m for m in trainer.model.modules() if isinstance(m, SVDOMixin)][:2]:
        pruned = (m.log_alpha() >= m.threshold).detach()
        sigma = m.log_sigma2.detach()
        assert pruned.float().mean() > 0.8
        assert sigma[pruned].median() > -10 + 0.5  # the pruned weights' variances rose
        assert sigma.max() > -10 + 3  # and some rose by more than 3 (e^3 = 20x)
        theta = m.weight.detach().abs()
        assert theta[pruned].max() > 2 * theta[~pruned].min()  # not a magnitude cut


def test_vd_sgd_recipe_and_no_decay_on_log_sigma2() -> None:
    p = VDPruner(VDHparams(optimizer="sgd"), Budget(weight_decay=5e-3, momentum=0.9),
                 RunContext(total_steps=10, num_train=100))
    model = p.prepare(nn.Sequential(nn.Linear(4, 3)))
    opt = p.make_optimizer(model)
    assert isinstance(opt, torch.optim.SGD)
    decay = {id(q): g["weight_decay"] for g in opt.param_groups for q in g["params"]}
    assert decay[id(model[0].log_sigma2)] == 0.0 and decay[id(model[0].weight)] == 5e-3
    adam = VDPruner(VDHparams(), Budget(weight_decay=5e-3), RunContext(total_steps=10, num_train=100))
    opt = adam.make_optimizer(adam.prepare(nn.Sequential(nn.Linear(4, 3))))
    assert isinstance(opt, torch.optim.Adam) and all(g["weight_decay"] == 0 for g in opt.param_groups)
    # Adam's own lr, which the trainer's lr schedule scales (tested in test_train)
    assert all(g["lr"] == pytest.approx(1e-3) for g in opt.param_groups)


# ------------------------------------------------------------------------------ full budget

# knob values measured to land at 90% on digits-mlp (seed 0, the default budget: 1295 training images
# after the validation split)
KNOB_AT_90 = {"grda": {"c": 0.017, "mu": 0.6}, "str": {"s_weight_decay": 0.0386}, "vd": {"kl_weight": 0.0177}}
FULL_PRUNERS = sorted(set(TARGET_PRUNERS) | set(KNOB_AT_90) | {"nm"})


@pytest.mark.parametrize("pruner", FULL_PRUNERS)
def test_full_budget_reaches_the_target_with_accuracy(tmp_path: Path, pruner: str) -> None:
    """The default budget (60 epochs, batch 32, lr 0.1, constant) on digits with the MLP: every
    pruner lands within 0.5 points of 90% (N:M: exactly 2:4 in every pruned layer)."""
    hparams = KNOB_AT_90.get(pruner, {} if pruner == "nm" else {"sparsity": 0.9})
    result = run(config(pruner, Budget(), **hparams), tmp_path)
    assert result["status"] == "ok"
    if pruner == "nm":
        assert set(result["layer_sparsity"].values()) == {0.5}
    else:
        # SET regrows connections at zero (as RigL's implementation); those on inputs that are always
        # zero (digits' border pixels) never get a gradient and stay zero: up to 0.6 points more
        assert abs(result["sparsity"] - 0.9) <= (0.006 if pruner == "set" else TOL), result["sparsity"]
    if pruner != "random":
        assert result["top1"] >= 0.93, result["top1"]

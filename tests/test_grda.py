"""gRDA against its closed form (constant lr) and accumulation form (any schedule), against the
authors'-style loop (ReferenceGRDA), its state round-trip, and its input checks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from bench import metrics
from bench.grda import GRDA, ReferenceGRDA


def soft_threshold(a: torch.Tensor, L: float) -> torch.Tensor:
    return torch.sign(a) * torch.clamp(a.abs() - L, min=0)


def params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in [(7, 5), (5,), (3, 2, 3, 3)]]


def feed(ps, opt, n, seed=1, sched=None):
    """Run n steps with given random gradients; returns the gradients and lrs used."""
    g = torch.Generator().manual_seed(seed)
    grads, lrs = [], []
    for _ in range(n):
        gs = [torch.randn(p.shape, generator=g) for p in ps]
        for p, gr in zip(ps, gs, strict=True):
            p.grad = gr.clone()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
        grads.append(gs)
    return grads, lrs


@pytest.mark.parametrize("c,mu,lr", [(0.5, 0.6, 0.1), (0.2, 0.51, 0.05), (1.0, 0.9, 0.3)])
def test_constant_lr_matches_closed_form(c, mu, lr):
    ps = params()
    w0 = [p.detach().clone() for p in ps]
    opt = GRDA(ps, lr=lr, c=c, mu=mu)
    n = 25
    grads, _ = feed(ps, opt, n)
    L = c * lr**0.5 * (n * lr) ** mu  # closed form L_n = c sqrt(lr) (n lr)^mu
    for i, p in enumerate(ps):
        a = w0[i] - lr * sum(g[i] for g in grads)
        torch.testing.assert_close(p.detach(), soft_threshold(a, L), rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["threshold"] == pytest.approx(L, rel=1e-12)
    assert any((p == 0).any() for p in ps), "the threshold should have zeroed some weights"


def test_step_schedule_matches_accumulation_form():
    ps = params()
    w0 = [p.detach().clone() for p in ps]
    c, mu = 0.3, 0.6
    opt = GRDA(ps, lr=0.2, c=c, mu=mu)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    grads, lrs = feed(ps, opt, 20, sched=sched)
    assert len(set(lrs)) == 3, "the schedule should have changed lr twice"
    L = sum(c * lr ** (mu + 0.5) * (k**mu - (k - 1) ** mu) for k, lr in enumerate(lrs, start=1))
    for i, p in enumerate(ps):
        a = w0[i] - sum(lr * g[i] for lr, g in zip(lrs, grads, strict=True))
        torch.testing.assert_close(p.detach(), soft_threshold(a, L), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("c, mu, lrs", [(0.005, 0.55, [0.1] * 6), (0.05, 0.7, [0.1, 0.1, 0.05, 0.05, 0.01]),
                                        (0.0, 0.6, [0.2] * 3)])
def test_reference_grda_gives_the_same_weights_as_ours(c: float, mu: float, lrs: list[float]) -> None:
    """The slow authors'-style loop and the fast GRDA agree step by step, lr changes included
    (the threshold keeps accumulating increments at the current lr)."""
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) * 0.1 for s in [(8, 4, 3, 3), (8,), (10, 32)]]
    ours = [p.clone().requires_grad_() for p in init]
    ref = [p.clone().requires_grad_() for p in init]
    opt, ref_opt = GRDA(ours, lr=lrs[0], c=c, mu=mu), ReferenceGRDA(ref, lr=lrs[0], c=c, mu=mu)
    for lr in lrs:
        for o in (opt, ref_opt):
            o.param_groups[0]["lr"] = lr
        for a, b in zip(ours, ref, strict=True):
            a.grad = torch.randn(a.shape, generator=gen) * 0.05
            b.grad = a.grad.clone()
        opt.step()
        ref_opt.step()
        for a, b in zip(ours, ref, strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    if c > 0:  # the comparison is only honest if thresholding did something
        assert any(int((p == 0).sum()) > 0 for p in ours)


def test_state_dict_round_trip_is_bit_identical():
    ps = params()
    opt = GRDA(ps, lr=0.1, c=0.4, mu=0.55)
    feed(ps, opt, 5, seed=1)
    saved_params = [p.detach().clone() for p in ps]
    saved_state = copy.deepcopy(opt.state_dict())

    feed(ps, opt, 5, seed=2)  # uninterrupted continuation

    resumed = [torch.nn.Parameter(p.clone()) for p in saved_params]
    opt2 = GRDA(resumed, lr=0.1, c=0.4, mu=0.55)
    opt2.load_state_dict(saved_state)
    feed(resumed, opt2, 5, seed=2)
    for p, q in zip(ps, resumed, strict=True):
        assert torch.equal(p, q)
    assert opt2.param_groups[0]["step"] == 10


def test_one_state_tensor_per_parameter_and_sgd_sized():
    ps = params()
    opt = GRDA(ps, lr=0.1, c=0.1, mu=0.6)
    feed(ps, opt, 2)
    for p in ps:
        tensors = [v for v in opt.state[p].values() if torch.is_tensor(v)]
        assert len(tensors) == 1 and tensors[0].shape == p.shape
    # the scalars are Python numbers in the group: no device tensor, no host sync
    assert isinstance(opt.param_groups[0]["threshold"], float)
    assert isinstance(opt.param_groups[0]["step"], int)


def test_group_with_c_zero_is_plain_dual_averaging():
    ps = params()
    w0 = [p.detach().clone() for p in ps]
    opt = GRDA([{"params": ps[:1]}, {"params": ps[1:], "c": 0.0}], lr=0.1, c=50.0, mu=0.6)
    grads, _ = feed(ps, opt, 10)
    assert (ps[0] == 0).all(), "a huge c zeroes the thresholded group"
    for i in (1, 2):  # unthresholded: w = w0 - lr * sum g  (= SGD without momentum)
        torch.testing.assert_close(ps[i].detach(), w0[i] - 0.1 * sum(g[i] for g in grads))


def test_trains_a_model_to_sparsity():
    torch.manual_seed(0)
    x = torch.randn(256, 20)
    y = (x[:, :3].sum(1) > 0).long()  # only 3 of 20 features matter
    model = torch.nn.Linear(20, 2)
    opt = GRDA(model.parameters(), lr=0.1, c=0.3, mu=0.6)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    acc = (model(x).argmax(1) == y).float().mean()
    assert acc > 0.9
    zero_frac_irrelevant = (model.weight[:, 3:] == 0).float().mean()
    assert zero_frac_irrelevant > 0.8  # l1 removes the irrelevant features
    assert (model.weight[:, :3] != 0).all()  # and keeps the relevant ones


@pytest.mark.parametrize(
    "kw,field",
    [
        ({"lr": 0}, "lr"),
        ({"lr": -1}, "lr"),
        ({"c": -0.1}, "c"),
        ({"mu": 0}, "mu"),
        ({"mu": 1}, "mu"),
        ({"mu": 1.5}, "mu"),
    ],
)
def test_bad_values_raise_naming_the_field(kw, field):
    args = {"lr": 0.1, "c": 0.01, "mu": 0.6, **kw}
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        GRDA(params(), **args)


def test_bad_value_in_a_group_is_refused():
    ps = params()
    with pytest.raises(ValueError, match="mu"):
        GRDA([{"params": ps, "mu": 2.0}], lr=0.1)


def _grda_run(foreach: bool, n_tensors: int = 3, steps: int = 6) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 4, 3, 3), (8,), (10, 32)] * (n_tensors // 3)
    ps = [torch.nn.Parameter(torch.randn(s, generator=gen) * 0.1) for s in shapes]
    groups = [{"params": ps[:-1]}, {"params": ps[-1:], "c": 0.0}]  # a c=0 group: never shrunk
    opt = GRDA(groups, lr=0.1, c=0.05, mu=0.7, foreach=foreach)
    for lr in [0.1, 0.1, 0.05, 0.05, 0.01, 0.01][:steps]:
        for group in opt.param_groups:
            group["lr"] = lr
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen) * 0.05
        opt.step()
    return [p.detach() for p in ps]


def test_foreach_shrink_gives_the_per_tensor_weights_to_the_bit() -> None:
    """softshrink(a, L) and a - clamp(a, -L, L) in foreach ops: the same floats, zeros included."""
    per_tensor, foreach = _grda_run(False), _grda_run(True)
    for a, b in zip(per_tensor, foreach, strict=True):  # the bits: +0.0 and -0.0 differ here
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert int((foreach[0] == 0).sum()) > 0 and int((foreach[-1] == 0).sum()) == 0


def test_foreach_shrink_allocates_no_parameter_sized_temporary() -> None:
    """The foreach step writes the shrink into the weights in place: its live tensor storage (the
    harness's own count) never exceeds the parameters, gradients and accumulators it starts with."""
    gen = torch.Generator().manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(64, 64, generator=gen)) for _ in range(3)]
    opt = GRDA(ps, lr=0.1, c=0.05, mu=0.7, foreach=True)
    for p in ps:
        p.grad = torch.randn(64, 64, generator=gen)
    opt.step()  # creates the accumulators
    existing = [*ps, *(p.grad for p in ps), *(opt.state[p]["accumulator"] for p in ps)]
    with metrics.TensorMemory(existing) as memory:
        opt.step()
    assert memory.peak == sum(t.untyped_storage().nbytes() for t in existing) == 9 * 64 * 64 * 4


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops dispatched (each is one kernel launch on CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("foreach", [True, False])
def test_foreach_step_launches_do_not_grow_with_the_number_of_tensors(foreach: bool) -> None:
    """The ops a step dispatches, for 3 and for 30 parameter tensors: the same count with
    foreach (multi-tensor kernels), ten times as many per-tensor shrinks without."""
    counts = {}
    for n in (3, 30):
        gen = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(4, 4, generator=gen)) for _ in range(n)]
        opt = GRDA(ps, lr=0.1, c=0.05, mu=0.7, foreach=foreach)
        for p in ps:
            p.grad = torch.randn(4, 4, generator=gen)
        opt.step()  # first step: creates the accumulators (clones, one per tensor)
        with _CountOps() as mode:
            opt.step()
        counts[n] = mode.calls
    if foreach:
        kernels = [c for c in counts[30] if not c.startswith("_record_function")]  # profiler marks
        assert len(counts[30]) == len(counts[3]) and all(c.startswith("_foreach") for c in kernels)
    else:
        assert counts[30].count("softshrink") == 30 and counts[3].count("softshrink") == 3

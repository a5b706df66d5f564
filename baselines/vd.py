"""`vd`: sparse variational dropout (Molchanov, Ashukha & Vetrov, ICML 2017).

Every prunable conv/linear layer is swapped for a subclass with a variance parameter per
weight, `log_sigma2` (so `model.state_dict()` and checkpoints carry it), and
log alpha = clip(log sigma^2 - log theta^2, -8, 8). As the authors' code (Lasagne
`DenseVarDropOutARD`), the training forward pass uses the local reparameterization trick with
the variance from the clipped log alpha: the pre-activation is sampled as
N(x theta', x^2 (exp(log alpha) theta^2)), where with `train_clip` (their LeNet runs) theta'
is theta with the weights of log alpha >= `threshold` zeroed, else theta. In evaluation those
weights are zeroed.

The loss is the negative ELBO divided by N (the number of training examples): task loss (a
per-example mean) plus beta_t * KL / N, the KL summed over weights with the paper's
approximation

    -KL ~= k1 * sigmoid(k2 + k3 * log alpha) - 0.5 * log1p(exp(-log alpha)) - k1,

and beta_t their `rw_linear` ramp: 0 until `kl_start` of the budget, then linear to
`kl_weight` at `kl_end` (authors: epoch 5 and epoch 20 of 200; linear in steps here).

Training recipe (`optimizer`): "adam" (default, the authors' code): Adam at `adam_lr` following
the budget's lr schedule shape, no weight decay. Adam is invariant to the scale of the loss, so
this is exactly the authors' N * mean loss + KL (the ELBO): the KL is not shrunk relative to the
data term and log sigma^2 is learnt. "sgd": the shared budget's SGD (lr, momentum, weight
decay), where the 1/N-scaled KL barely moves log sigma^2 (REFERENCE.md). Neither recipe decays
log sigma^2. The forward pass computes two products per layer (mean and variance): compute is
counted at twice the layers' dense MACs.

Speed: each layer's weight-side terms (log alpha, the mean and variance weights, the KL) are
computed once per training step by `VDWeights`, with one hand-written backward pass; the KL
term of the loss reuses them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from baselines._mask import check_choice
from bench.config import hp
from bench.pruner import OptimizerRecipe, Pruner, PrunerInfo, SparsityKnob, register_pruner

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_RANGE = (-8.0, 8.0)
OPTIMIZERS = ("adam", "sgd")


def kl_approx(log_alpha: torch.Tensor) -> torch.Tensor:
    """KL(q || log-uniform prior) per weight (Molchanov et al. 2017, eq. 14)."""
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


def vd_weights_reference(
    w: torch.Tensor, log_sigma2: torch.Tensor, threshold: float, train_clip: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean weight, variance weight, summed KL) of one layer's training pass, written plainly
    for autograd: what `VDWeights` computes with a hand-written backward."""
    w2 = w * w
    log_alpha = torch.clamp(log_sigma2 - torch.log(w2 + 1e-8), *LOG_ALPHA_RANGE)
    mean_w = w * (log_alpha < threshold) if train_clip else w
    return mean_w, log_alpha.exp() * w2, kl_approx(log_alpha).sum()


class VDWeights(torch.autograd.Function):
    """`vd_weights_reference` with one hand-written backward pass: a few fused elementwise ops per
    layer instead of an autograd node per op (on a small model the step is all per-op overhead)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, log_sigma2: torch.Tensor, threshold: float,  # type: ignore[override]
                train_clip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w2 = w * w
        denom = w2 + 1e-8
        raw = log_sigma2 - torch.log(denom)
        log_alpha = raw.clamp(*LOG_ALPHA_RANGE)
        # float masks: multiplying by them is several times faster than torch.where on a CPU
        inside = (log_alpha == raw).to(w.dtype)  # where the clip passes gradients (as torch.clamp's)
        keep = (log_alpha < threshold).to(w.dtype) if train_clip else None
        alpha = log_alpha.exp()
        var_w = alpha * w2
        mean_w = w * keep if keep is not None else w.clone()
        # KL = k1 - k1 * s + 0.5 * softplus(-log alpha), with softplus(-log alpha) = log1p(alpha) - log alpha
        s = torch.sigmoid(log_alpha.mul(K3).add_(K2))
        log1p_alpha = torch.log1p(alpha)
        kl = K1 * w.numel() - K1 * s.sum() + 0.5 * (log1p_alpha.sum() - log_alpha.sum())
        ctx.save_for_backward(w, denom, inside, alpha, keep, s, log1p_alpha)
        return mean_w, var_w, kl

    @staticmethod
    def backward(ctx: Any, g_mean: torch.Tensor | None, g_var: torch.Tensor | None,  # type: ignore[override]
                 g_kl: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        w, denom, inside, alpha, keep, s, log1p_alpha = ctx.saved_tensors
        g_mean = torch.zeros_like(w) if g_mean is None else g_mean
        g_var = torch.zeros_like(w) if g_var is None else g_var
        g_kl = torch.zeros((), dtype=w.dtype, device=w.device) if g_kl is None else g_kl
        g_var_w = g_var * alpha * w  # half of d loss / d theta through theta^2 (log alpha fixed)
        # -d KL / d log alpha = k1 k3 s (1 - s) + 0.5 / (1 + alpha)
        d_kl = torch.addcmul(log1p_alpha.neg().exp_().mul_(0.5), s, 1 - s, value=K1 * K3)
        g_log_alpha = torch.addcmul(g_var_w * w, d_kl, g_kl, value=-1.0)  # var_w = alpha theta^2
        g_log_sigma2 = g_log_alpha.mul_(inside)
        g_w = (g_mean * keep if keep is not None else g_mean.clone()).add_(g_var_w, alpha=2)
        g_w.addcmul_(g_log_sigma2, w / denom, value=-2.0)  # log alpha = log sigma^2 - log(theta^2 + eps)
        return g_w, g_log_sigma2, None, None


class SVDOMixin:
    """Sparse variational dropout on a conv/linear layer (`_op` is its plain forward)."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_sigma2 = nn.Parameter(torch.empty_like(self.weight))
        self.threshold = 3.0
        self.train_clip = True
        self.step_kl: torch.Tensor | None = None  # this training step's summed KL, for the loss

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def log_alpha(self) -> torch.Tensor:
        return torch.clamp(self.log_sigma2 - torch.log(self.weight**2 + 1e-8), *LOG_ALPHA_RANGE)

    def kept_weight(self) -> torch.Tensor:
        """theta with the weights of log alpha >= threshold zeroed: the evaluated weight."""
        return self.weight * (self.log_alpha() < self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # type: ignore[attr-defined]
            return self._op(x, self.kept_weight(), self.bias)
        mean_w, var_w, self.step_kl = VDWeights.apply(self.weight, self.log_sigma2, self.threshold,
                                                      self.train_clip)
        mean = self._op(x, mean_w, self.bias)
        var = self._op(x * x, var_w, None)
        return mean + torch.sqrt(var + 1e-8) * torch.randn_like(mean)

    def take_kl(self) -> torch.Tensor:
        """This training step's summed KL (computed by the forward pass), or a fresh one."""
        kl, self.step_kl = self.step_kl, None
        return kl_approx(self.log_alpha()).sum() if kl is None else kl


class LinearSVDO(SVDOMixin, nn.Linear):
    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)


class Conv2dSVDO(SVDOMixin, nn.Conv2d):
    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return self._conv_forward(x, w, b)


def _build_like(cls: type[nn.Module], m: nn.Module) -> nn.Module:
    """An uninitialised `cls` layer with `m`'s configuration, device and dtype."""
    if isinstance(m, nn.Conv2d):
        args: dict[str, Any] = dict(
            in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=m.kernel_size,
            stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
            padding_mode=m.padding_mode,
        )
    else:
        args = dict(in_features=m.in_features, out_features=m.out_features)
    # built on the meta device and materialised uninitialised (torch.nn.utils.skip_init's recipe):
    # the weights are copied in next, and the global RNG stays untouched
    layer = cls(**args, bias=m.bias is not None, device="meta", dtype=m.weight.dtype)
    return layer.to_empty(device=m.weight.device)


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


@dataclass(frozen=True)
class VDHparams:
    kl_weight: float = hp(1.0, "final weight beta of the KL term (1: the ELBO; the sparsity knob)")
    kl_start: float = hp(0.025, "beta is 0 until this fraction of the budget (authors: epoch 5 of 200)")
    kl_end: float = hp(0.1, "beta reaches kl_weight at this fraction of the budget (authors: epoch 20/200)")
    threshold: float = hp(3.0, "weights with log alpha >= threshold are zeroed at evaluation")
    train_clip: bool = hp(
        True, "zero the weights of log alpha >= threshold in the training forward pass too (authors' LeNets)"
    )
    log_sigma2_init: float = hp(-10.0, "initial log sigma^2 of every weight (authors' code: -10)")
    optimizer: Literal["adam", "sgd"] = hp(
        "adam", "adam: the authors' recipe (Adam at adam_lr, no weight decay); sgd: the shared budget's SGD"
    )
    adam_lr: float = hp(1e-3, "Adam's base lr (authors: 1e-3), scaled by the budget's lr schedule")

    def __post_init__(self) -> None:
        if not self.kl_weight >= 0:
            raise ValueError(f"kl_weight = {self.kl_weight!r}: must be >= 0")
        if not 0 <= self.kl_start <= 1:
            raise ValueError(f"kl_start = {self.kl_start!r}: must be in [0, 1]")
        if not self.kl_start <= self.kl_end <= 1:
            raise ValueError(f"kl_end = {self.kl_end!r}: must be in [kl_start, 1]")
        lo, hi = LOG_ALPHA_RANGE
        if not lo < self.threshold <= hi:
            raise ValueError(f"threshold = {self.threshold!r}: must be in ({lo:g}, {hi:g}]")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if not self.adam_lr > 0:
            raise ValueError(f"adam_lr = {self.adam_lr!r}: must be > 0")


@register_pruner("vd")
class VDPruner(Pruner):
    """Sparse variational dropout: per-weight noise learnt with the LRT, high-dropout weights cut."""

    Hparams = VDHparams
    sparsity_knob: ClassVar[SparsityKnob] = SparsityKnob("kl_weight", 1e-2, 1e2, "log")
    paper_recipe = OptimizerRecipe("adam", lr=1e-3)  # the authors' code: Adam, lr 1e-3, no weight decay
    info = PrunerInfo(own_optimizer=True)  # needs Adam (or the 1/N-scaled KL barely moves)

    def prepare(self, model: nn.Module) -> nn.Module:
        self.step = 0
        for name, m in self.prunable(model):
            vd = _build_like(Conv2dSVDO if isinstance(m, nn.Conv2d) else LinearSVDO, m)
            vd.threshold, vd.train_clip = self.hp.threshold, self.hp.train_clip
            with torch.no_grad():
                vd.weight.copy_(m.weight)
                if m.bias is not None:
                    vd.bias.copy_(m.bias)
                vd.log_sigma2.fill_(self.hp.log_sigma2_init)
            _swap(model, name, vd)
        self.lrt_densities = {name: 2.0 for name, _ in self.prunable(model)}  # mean and variance
        self.vd_layers = [m for m in model.modules() if isinstance(m, SVDOMixin)]
        self.model = model
        return model

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """Adam (authors) or the budget's SGD; log sigma^2 is never decayed."""
        sigmas = [m.log_sigma2 for m in model.modules() if isinstance(m, SVDOMixin)]
        ids = {id(p) for p in sigmas}
        groups = [{"params": [p for p in model.parameters() if id(p) not in ids]},
                  {"params": sigmas, "weight_decay": 0.0}]
        # the trainer's lr schedule scales each group's initial lr: Adam's stays at its own scale
        self.optimizer = self.optimizer_recipe().build(groups, self.budget)
        return self.optimizer

    def optimizer_recipe(self) -> OptimizerRecipe:
        """`optimizer`: Adam at `adam_lr` (the authors'), or the shared budget's SGD."""
        if self.hp.optimizer == "adam":
            return OptimizerRecipe("adam", lr=self.hp.adam_lr)
        return OptimizerRecipe.shared(self.budget)

    def compute_densities(self) -> dict[str, float]:
        return self.lrt_densities

    def kl_scale(self) -> float:
        """beta_t / N, the factor of the summed KL in the loss at the current step."""
        h, progress = self.hp, self.step / max(1, self.ctx.total_steps)
        if h.kl_end > h.kl_start:
            ramp = min(max((progress - h.kl_start) / (h.kl_end - h.kl_start), 0.0), 1.0)
        else:
            ramp = float(progress >= h.kl_start)
        return h.kl_weight * ramp / self.ctx.num_train

    def regularizer(self, model: nn.Module) -> torch.Tensor | None:
        scale = self.kl_scale()
        kls = [m.take_kl() for m in self.vd_layers]  # always taken: frees the step's graph
        if scale == 0:
            return None
        return scale * sum(kls)

    def after_step(self, step: int) -> None:
        self.step = step + 1

    def finalize(self, model: nn.Module) -> nn.Module:
        """A plain copy with plain conv/linear layers holding the kept theta."""
        for m in self.vd_layers:
            m.step_kl = None  # a graph tensor: not deep-copyable
        plain = copy.deepcopy(model)
        for name, m in list(plain.named_modules()):
            if isinstance(m, SVDOMixin):
                dense = _build_like(nn.Conv2d if isinstance(m, nn.Conv2d) else nn.Linear, m)
                with torch.no_grad():
                    dense.weight.copy_(m.kept_weight())
                    if m.bias is not None:
                        dense.bias.copy_(m.bias)
                _swap(plain, name, dense)
        return plain

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]

"""Datasets, one module each; each registers a loader with `@register_dataset` (the registry imports
every module of this package).

Small data sets live as tensors on the training device (`TensorData`) and are augmented in
batches there: no per-image PIL DataLoader. Batches are a deterministic function of
(seed, epoch), so a run resumed at an epoch boundary sees exactly the batches it would have.

Validation: `holdout(fraction)` carves a fixed validation split out of the training set: per
class, `round(fraction * class size)` examples chosen by a generator seeded with
`VALIDATION_SEED`, so the split is a function of the data set and the fraction only (the same
for every run seed and pruner). Settings are selected on it; the test set only reports.

Under torch.distributed each rank asks for its `shard = (rank, world)`: of every global batch it
gets the slice `tensor_split(world)[rank]`, and of the test set a contiguous share (the counts
are summed over ranks). The global batches, and so the training, are those of one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from bench.errors import ConfigError
from bench.registry import DATASETS

Batch = tuple[torch.Tensor, torch.Tensor]
Shard = tuple[int, int]  # (rank, world size)
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Data(Protocol):
    """What the trainer needs from a loaded dataset."""

    input_shape: tuple[int, ...]
    num_classes: int
    num_train: int
    num_val: int  # 0 until `holdout`
    num_test: int

    def train_batches(self, batch_size: int, epoch: int, seed: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        """This rank's slice of each global batch of `batch_size` (all of it when world is 1)."""
        ...

    def val_batches(self, batch_size: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        """The validation split in order (this rank's contiguous share of it, like test_batches)."""
        ...

    def test_batches(self, batch_size: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        """This rank's share of the test set, in batches of at most `batch_size`."""
        ...

    def holdout(self, fraction: float) -> Data:
        """This data set with a validation split of `fraction` of its training set held out."""
        ...


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    # load(root, device, augment, input_shape, num_classes): the last two are the model's,
    # used only by datasets without a fixed shape (synthetic).
    load: Callable[..., Data]
    input_shape: tuple[int, ...] | None  # None: takes the model's shape
    num_classes: int | None
    description: str = ""
    on_disk: bool = False  # needs files under --data-dir
    num_train: int | None = None  # size of the standard training split: estimates without the files
    # check(root): raises ConfigError if the files are not under root, without reading them
    check: Callable[[str], None] | None = None


def register_dataset(
    name: str,
    input_shape: tuple[int, ...] | None,
    num_classes: int | None,
    on_disk: bool = False,
    num_train: int | None = None,
    check: Callable[[str], None] | None = None,
):
    def wrap(load: Callable[..., Data]) -> Callable[..., Data]:
        doc = (load.__doc__ or "").strip()
        info = DatasetInfo(name, load, input_shape, num_classes, doc, on_disk, num_train, check)
        DATASETS.register(name, info)
        return load

    return wrap


VALIDATION_SEED = 0  # the validation split depends on the data set only, never on a run's seed


def validation_indices(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices (into `labels`, sorted) of a class-stratified validation split: per class,
    `round(fraction * class size)` examples drawn with a generator seeded by VALIDATION_SEED.
    A `fraction` >= 1 is a count of examples: the fraction `fraction / len(labels)`."""
    labels = labels.cpu()
    if fraction >= 1:
        if fraction >= len(labels):
            raise ConfigError(f"budget.val_fraction = {fraction:.0f}: a count of examples must be below the "
                              f"training set's {len(labels)}")
        fraction = fraction / len(labels)
    g = torch.Generator().manual_seed(VALIDATION_SEED)
    perm = torch.randperm(len(labels), generator=g)
    picked = []
    for c in torch.unique(labels).tolist():
        members = perm[labels[perm] == c]  # the class's examples, in the fixed random order
        picked.append(members[: round(fraction * len(members))])
    return torch.cat(picked).sort().values if picked else torch.zeros(0, dtype=torch.long)


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The RNG for one epoch's shuffling and augmentation, independent of everything else."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 100_003 + epoch)
    return g


def batch_slice(n: int, shard: Shard) -> slice:
    """The positions of rank `shard[0]`'s part of `n` items: `tensor_split(world)[rank]`'s."""
    rank, world = shard
    q, r = divmod(n, world)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (rank < r))


class TensorData:
    """A dataset held as tensors on the training device.

    `x_*` may be uint8 (normalized per batch with `mean`/`std`) or float (used as is).
    `augment(x, generator)` acts on a stored batch before normalization, as torchvision's
    transforms do on images: `crop_flip` pads uint8 pixels with black, not with the mean.
    """

    def __init__(
        self,
        x_train: torch.Tensor,
        y_train: torch.Tensor,
        x_test: torch.Tensor,
        y_test: torch.Tensor,
        num_classes: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        augment: Augment | None = None,
        x_val: torch.Tensor | None = None,
        y_val: torch.Tensor | None = None,
    ) -> None:
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.x_val = x_train[:0] if x_val is None else x_val
        self.y_val = y_train[:0] if y_val is None else y_val
        self.num_classes = num_classes
        self.input_shape = tuple(x_train.shape[1:])
        self.num_train, self.num_val, self.num_test = len(x_train), len(self.x_val), len(x_test)
        self.augment = augment
        shape = (1, -1, 1, 1) if x_train.dim() == 4 else (1, -1)
        dev = x_train.device
        self._mean = torch.tensor(mean, device=dev).view(shape) if mean else None
        self._std = torch.tensor(std, device=dev).view(shape) if std else None

    def _with(self, device: torch.device, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
              y_val: torch.Tensor) -> TensorData:
        mean = tuple(self._mean.flatten().tolist()) if self._mean is not None else None
        std = tuple(self._std.flatten().tolist()) if self._std is not None else None
        t = [x.to(device) for x in (x_train, y_train, self.x_test, self.y_test, x_val, y_val)]
        return TensorData(*t[:4], self.num_classes, mean, std, self.augment, *t[4:])

    def to(self, device: torch.device) -> TensorData:
        return self._with(device, self.x_train, self.y_train, self.x_val, self.y_val)

    def holdout(self, fraction: float) -> TensorData:
        """The training set split into training and validation (see the module docstring); the
        normalization stays the data set's."""
        if self.num_val or fraction <= 0:
            return self
        val = validation_indices(self.y_train, fraction).to(self.x_train.device)
        keep = torch.ones(self.num_train, dtype=torch.bool, device=self.x_train.device)
        keep[val] = False
        return self._with(self.x_train.device, self.x_train[keep], self.y_train[keep], self.x_train[val],
                          self.y_train[val])

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        # in place on the batch's own float copy (one allocation); a float batch may be a view of
        # the stored data, so its first operation makes the copy
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
            return x if self._mean is None else x.sub_(self._mean).div_(self._std)
        return x if self._mean is None else (x - self._mean).div_(self._std)

    def train_batches(self, batch_size: int, epoch: int, seed: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        g = epoch_generator(seed, epoch, self.x_train.device)
        order = torch.randperm(self.num_train, device=self.x_train.device, generator=g)
        for i in range(math.ceil(self.num_train / batch_size)):
            idx = order[i * batch_size : (i + 1) * batch_size]
            x = self.x_train[idx]
            if self.augment is not None:  # drawn for the global batch: every rank's draws agree
                x = self.augment(x, g)
            part = batch_slice(len(idx), shard)
            yield self._prepare(x[part]), self.y_train[idx[part]]

    def test_batches(self, batch_size: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        part = batch_slice(len(self.x_test), shard)
        x_test, y_test = self.x_test[part], self.y_test[part]
        for i in range(0, len(x_test), batch_size):
            yield self._prepare(x_test[i : i + batch_size]), y_test[i : i + batch_size]

    def val_batches(self, batch_size: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        part = batch_slice(len(self.x_val), shard)
        x_val, y_val = self.x_val[part], self.y_val[part]
        for i in range(0, len(x_val), batch_size):
            yield self._prepare(x_val[i : i + batch_size]), y_val[i : i + batch_size]


def crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Batched random crop after zero-padding by `pad`, and horizontal flip (CIFAR standard).

    One gather for the whole batch: each output pixel's flat index into its padded image, shared
    by the channels (5x faster than indexing with four broadcast index tensors).
    """
    n, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=g)
    flip = torch.rand(n, device=x.device, generator=g) < 0.5
    rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # (n, h)
    cols = torch.arange(w, device=x.device)[None, :].expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]  # (n, w)
    flat = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, 1, h * w)
    return torch.gather(padded.view(n, c, -1), 2, flat.expand(n, c, h * w)).view(n, c, h, w)

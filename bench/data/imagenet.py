"""ImageNet (ILSVRC-2012) as an ImageFolder tree, streamed through a DataLoader: `imagenet`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import datasets, transforms

from bench.data import Batch, Shard, batch_slice, epoch_generator, register_dataset
from bench.data.vision import missing_files_error

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_HOW = (
    "ImageNet cannot be downloaded automatically: get ILSVRC-2012 from image-net.org and lay it out "
    "as imagenet/train/<class>/*.JPEG and imagenet/val/<class>/*.JPEG (e.g. with the usual valprep.sh)"
)


def job_cpus() -> int:
    """CPU cores given to this job (its SLURM allocation per task, else this process's affinity),
    not the node's: a node's other jobs own the rest."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(cpus, int(slurm))) if slurm.isdigit() else cpus


def default_workers() -> int:
    """Loader workers: one core of the job is left to the training process."""
    return max(1, min(32, job_cpus() - 1))


class _Seeded(Dataset):
    """Items addressed as (index, seed): the augmentation of an item is a function of the seed, so
    an epoch's images do not depend on which worker, or which rank, decodes them."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, seed = item
        with torch.random.fork_rng(devices=[]):  # with 0 workers: the trainer's RNG is untouched
            torch.manual_seed(seed)  # torchvision's random transforms draw from torch's RNG
            return self.ds[index]


class _EpochBatches(Sampler[list[tuple[int, int]]]):
    """This rank's slice of each global batch of an epoch (set with `set`): the order, and each
    item's augmentation seed, come from the (seed, epoch) generator, shared by every rank."""

    def __init__(self, n: int, batch_size: int, shard: Shard) -> None:
        self.n, self.batch_size, self.shard = n, batch_size, shard
        self.order: list[int] | None = None  # None: the test split, in order and unaugmented
        self.seeds: list[int] = []

    def set(self, seed: int, epoch: int) -> None:
        g = epoch_generator(seed, epoch, torch.device("cpu"))
        self.order = torch.randperm(self.n, generator=g).tolist()
        self.seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.order is None:  # test: a contiguous share, in batches
            part = range(self.n)[batch_slice(self.n, self.shard)]
            for i in range(0, len(part), self.batch_size):
                yield [(j, 0) for j in part[i : i + self.batch_size]]
            return
        for i in range(0, self.n, self.batch_size):
            idx = self.order[i : i + self.batch_size]
            part = batch_slice(len(idx), self.shard)
            yield [(j, self.seeds[j]) for j in idx[part]]


class FolderData:
    """Train/val `ImageFolder`s read by persistent DataLoader workers.

    Workers ship uint8 images (a quarter of float32's bytes through shared memory and over PCIe);
    conversion and normalization happen on `device`. The order of an epoch and each image's
    augmentation seed are drawn from the (seed, epoch) generator, so an epoch's batches are the
    same whatever the number of workers or ranks, and after a resume. Under torch.distributed each
    rank decodes only its slice of each batch, and its share of the validation set.
    """

    def __init__(self, train: Dataset, test: Dataset, num_classes: int, device: torch.device,
                 num_workers: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        self.train, self.test, self.device, self.num_workers = train, test, device, num_workers
        self.input_shape = (3, 224, 224)
        self.num_classes = num_classes
        self.num_train = len(train)  # type: ignore[arg-type]
        self._mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self._std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self._loaders: dict[tuple[str, int, Shard], tuple[DataLoader, _EpochBatches]] = {}

    def _loader(self, split: str, batch_size: int, shard: Shard) -> tuple[DataLoader, _EpochBatches]:
        key = (split, batch_size, shard)
        if key not in self._loaders:  # kept: persistent workers are forked once, not every epoch
            ds = self.train if split == "train" else self.test
            sampler = _EpochBatches(len(ds), batch_size, shard)  # type: ignore[arg-type]
            loader = DataLoader(
                _Seeded(ds), batch_sampler=sampler, num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda", persistent_workers=self.num_workers > 0,
            )
            self._loaders[key] = (loader, sampler)
        return self._loaders[key]

    def _batches(self, loader: DataLoader) -> Iterator[Batch]:
        for x, y in loader:
            x = x.to(self.device, non_blocking=True).float().sub_(self._mean).div_(self._std)
            yield x, y.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, epoch: int, seed: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        loader, sampler = self._loader("train", batch_size, shard)
        sampler.set(seed, epoch)
        return self._batches(loader)

    def test_batches(self, batch_size: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        return self._batches(self._loader("test", batch_size, shard)[0])


def _check_imagenet(root: str) -> None:
    """train/ and val/ each hold class folders (the images themselves are not listed: millions)."""
    for split in ("train", "val"):
        folder = os.path.join(root, "imagenet", split)
        try:
            has_classes = any(e.is_dir() for e in os.scandir(folder))
        except OSError:
            has_classes = False
        if not has_classes:
            raise missing_files_error("imagenet", folder, _HOW)


@register_dataset(
    "imagenet", input_shape=(3, 224, 224), num_classes=1000, on_disk=True, num_train=1_281_167,
    check=_check_imagenet,
)
def load_imagenet(root: str, device: torch.device, augment: bool, *_: object,
                  num_workers: int | None = None) -> FolderData:
    """ImageNet from <data dir>/imagenet/{train,val}/<class>/; random-resized crop 224 + flip."""
    folder = os.path.join(root, "imagenet")
    to_tensor = [transforms.PILToTensor()]  # uint8; normalized on the device
    val_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), *to_tensor])
    train_tf = val_tf
    if augment:
        crop_flip = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
        train_tf = transforms.Compose([*crop_flip, *to_tensor])
    split = {}
    for name, tf in (("train", train_tf), ("val", val_tf)):
        try:
            split[name] = datasets.ImageFolder(os.path.join(folder, name), transform=tf)
        except FileNotFoundError as e:  # no such folder, or no class folders / images in it
            raise missing_files_error("imagenet", os.path.join(folder, name), _HOW) from e
    if split["train"].classes != split["val"].classes:
        raise missing_files_error(
            "imagenet", os.path.join(folder, "val"), f"val must have the same class folders as train. {_HOW}"
        )
    if num_workers is None:
        num_workers = default_workers()
    return FolderData(split["train"], split["val"], len(split["train"].classes), device, num_workers)

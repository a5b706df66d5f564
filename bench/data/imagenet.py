"""ImageNet (ILSVRC-2012) as an ImageFolder tree, streamed through a DataLoader: `imagenet`."""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import datasets, transforms

from bench.data import Batch, Shard, batch_slice, epoch_generator, register_dataset, validation_indices
from bench.data.vision import missing_files_error
from bench.errors import ConfigError

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
    rank decodes only its slice of each batch, and its share of the validation and test sets.
    """

    def __init__(self, train: Dataset, test: Dataset, num_classes: int, device: torch.device,
                 num_workers: int, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, val: Dataset | None = None) -> None:
        self.train, self.test, self.device, self.num_workers = train, test, device, num_workers
        self.input_shape = (3, 224, 224)
        self.num_classes = num_classes
        self.num_train = len(train)  # type: ignore[arg-type]
        self.val = val
        self.num_val = 0 if val is None else len(val)  # type: ignore[arg-type]
        self.num_test = len(test)  # type: ignore[arg-type]
        self.mean, self.std = mean, std
        self._mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self._std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self._loaders: dict[tuple[str, int, Shard], tuple[DataLoader, _EpochBatches]] = {}

    def holdout(self, fraction: float) -> FolderData:
        """A class-stratified validation split of the training images (see bench.data), read with
        the evaluation transform."""
        if self.val is not None or fraction <= 0:
            return self
        train: datasets.ImageFolder = self.train  # type: ignore[assignment]
        val = validation_indices(torch.as_tensor(train.targets), fraction)
        keep = torch.ones(len(train.targets), dtype=torch.bool)
        keep[val] = False
        evaluated = copy.copy(train)  # the same file list (no rescan), read with the evaluation transform
        evaluated.transform = self.test.transform  # type: ignore[attr-defined]
        return FolderData(Subset(train, keep.nonzero().flatten().tolist()), self.test, self.num_classes,
                          self.device, self.num_workers, self.mean, self.std, Subset(evaluated, val.tolist()))

    def _loader(self, split: str, batch_size: int, shard: Shard) -> tuple[DataLoader, _EpochBatches]:
        key = (split, batch_size, shard)
        if key not in self._loaders:  # kept: persistent workers are forked once, not every epoch
            ds = {"train": self.train, "val": self.val, "test": self.test}[split]
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

    def val_batches(self, batch_size: int, shard: Shard = (0, 1)) -> Iterator[Batch]:
        return iter(()) if self.val is None else self._batches(self._loader("val", batch_size, shard)[0])


Listing = tuple[list[str], dict[str, int], list[tuple[str, int]]]  # classes, class_to_idx, samples


class _ListedFolder(datasets.ImageFolder):
    """An ImageFolder over a listing made already (`shared_listings`): no directory is scanned."""

    def __init__(self, root: str, transform: object, listing: Listing) -> None:
        self._listing = listing
        super().__init__(root, transform=transform)

    def find_classes(self, directory: object) -> tuple[list[str], dict[str, int]]:
        return self._listing[0], self._listing[1]

    def make_dataset(self, *_: object, **__: object) -> list[tuple[str, int]]:  # type: ignore[override]
        return self._listing[2]


def _scan(folder: str) -> dict[str, Listing] | str:
    """ImageFolder's listing of train/ and val/, or the error message if the files are missing."""
    listings = {}
    for name in ("train", "val"):
        try:
            ds = datasets.ImageFolder(os.path.join(folder, name))
        except FileNotFoundError:  # no such folder, or no class folders / images in it
            return str(missing_files_error("imagenet", os.path.join(folder, name), _HOW))
        listings[name] = (ds.classes, ds.class_to_idx, ds.samples)
    return listings


def shared_listings(folder: str) -> dict[str, Listing]:
    """The train/ and val/ listings, scanned once per job: with several ranks rank 0 lists the
    1.28M files and broadcasts the listing (or its error), so the file system is not walked by
    every rank at every start and requeue."""
    rank, world = 0, 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    box = [_scan(folder) if rank == 0 else None]
    if world > 1:
        torch.distributed.broadcast_object_list(box, src=0)
    if isinstance(box[0], str):
        raise ConfigError(box[0])
    return box[0]  # type: ignore[return-value]


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
    listings = shared_listings(folder)
    split = {name: _ListedFolder(os.path.join(folder, name), tf, listings[name])
             for name, tf in (("train", train_tf), ("val", val_tf))}
    if split["train"].classes != split["val"].classes:
        raise missing_files_error(
            "imagenet", os.path.join(folder, "val"), f"val must have the same class folders as train. {_HOW}"
        )
    if num_workers is None:
        num_workers = default_workers()
    return FolderData(split["train"], split["val"], len(split["train"].classes), device, num_workers)

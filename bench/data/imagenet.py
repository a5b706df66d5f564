"""ImageNet (ILSVRC-2012) as an ImageFolder tree, streamed through a DataLoader: `imagenet`."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets, transforms

from bench.data import Batch, epoch_generator, register_dataset, validation_indices
from bench.data.vision import missing_files_error

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_HOW = (
    "ImageNet cannot be downloaded automatically: get ILSVRC-2012 from image-net.org and lay it out "
    "as imagenet/train/<class>/*.JPEG and imagenet/val/<class>/*.JPEG (e.g. with the usual valprep.sh)"
)


class FolderData:
    """Train/val `ImageFolder`s read by DataLoader workers; batches are moved to `device`.

    Shuffling and the workers' augmentation seeds are drawn from the (seed, epoch) generator, so
    an epoch's batches are reproducible (given the same number of workers).
    """

    def __init__(self, train: Dataset, test: Dataset, num_classes: int, device: torch.device,
                 num_workers: int, val: Dataset | None = None) -> None:
        self.train, self.test, self.device, self.num_workers = train, test, device, num_workers
        self.val = val
        self.input_shape = (3, 224, 224)
        self.num_classes = num_classes
        self.num_train = len(train)  # type: ignore[arg-type]
        self.num_val = 0 if val is None else len(val)  # type: ignore[arg-type]
        self.num_test = len(test)  # type: ignore[arg-type]

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
                          self.device, self.num_workers, Subset(evaluated, val.tolist()))

    def _batches(self, ds: Dataset, batch_size: int, generator: torch.Generator | None) -> Iterator[Batch]:
        loader = DataLoader(
            ds, batch_size=batch_size, shuffle=generator is not None, generator=generator,
            num_workers=self.num_workers, pin_memory=self.device.type == "cuda", persistent_workers=False,
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def train_batches(self, batch_size: int, epoch: int, seed: int) -> Iterator[Batch]:
        return self._batches(self.train, batch_size, epoch_generator(seed, epoch, torch.device("cpu")))

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        return self._batches(self.test, batch_size, None)

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        return iter(()) if self.val is None else self._batches(self.val, batch_size, None)


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
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    to_tensor = [transforms.ToTensor(), norm]
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
        num_workers = min(8, os.cpu_count() or 1)
    return FolderData(split["train"], split["val"], len(split["train"].classes), device, num_workers)

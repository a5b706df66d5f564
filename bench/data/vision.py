"""Small torchvision image datasets held on the device: `mnist`, `cifar10`, `cifar100`.

Files are read in torchvision's on-disk layout under the data dir and never downloaded at run
time; `missing_files_error` says where they should be and how to fetch them.
"""

from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import torch
import torchvision

from bench.data import TensorData, crop_flip, register_dataset
from bench.errors import ConfigError

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def missing_files_error(dataset: str, path: str, how: str) -> ConfigError:
    """The error for a dataset whose files are not under the data dir: what, where, how to get it."""
    return ConfigError(
        f"dataset {dataset!r}: files not found at {path!r} (looked under the data dir: --data-dir, or "
        f"data_dir in a sweep file or --set data_dir=DIR); "
        f"to get them: {how}"
    )


def _torchvision_how(cls: type, root: str) -> str:
    return (
        f"download once with python -c \"import torchvision; "
        f"torchvision.datasets.{cls.__name__}({root!r}, train=True, download=True)\""
    )


def _require_files(name: str, cls: type, root: str, folder: str, files: list[str]) -> None:
    """ConfigError naming the dataset, the folder, how to get it and, for a partial copy, the
    missing files, unless every one of `files` is in `folder` (they are not read)."""
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        how = _torchvision_how(cls, root)
        if len(missing) < len(files):
            how += f" (missing: {', '.join(missing)})"
        raise missing_files_error(name, folder, how)


def _check_mnist(root: str) -> None:
    """The four idx files torchvision's MNIST looks for (it only checks that they exist)."""
    cls = torchvision.datasets.MNIST
    files = [os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
    _require_files("mnist", cls, root, os.path.join(root, "MNIST", "raw"), files)


@register_dataset(
    "mnist", input_shape=(1, 28, 28), num_classes=10, on_disk=True, num_train=60_000, check=_check_mnist
)
def load_mnist(root: str, device: torch.device, augment: bool, *_: object) -> TensorData:
    """MNIST (60k/10k 28x28 grey digits, 10 classes) from <data dir>/MNIST/raw; no augmentation."""
    _check_mnist(root)  # torchvision's own "Dataset not found" says neither where nor how
    cls = torchvision.datasets.MNIST
    train, test = cls(root, train=True), cls(root, train=False)
    return TensorData(
        train.data.unsqueeze(1).to(device), train.targets.to(device),
        test.data.unsqueeze(1).to(device), test.targets.to(device),
        10, MNIST_MEAN, MNIST_STD,
    )


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches hold only dicts, lists, strings and numpy arrays: any other global in the file
    is refused, so a doctored batch file cannot run code when it is loaded."""

    ALLOWED = frozenset(
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy")
        for name in ("_reconstruct", "ndarray", "dtype", "scalar")
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        return super().find_class(module, name)


def _check_cifar(cls: type, name: str, root: str) -> None:
    files = [f for f, _ in cls.train_list + cls.test_list]
    _require_files(name, cls, root, os.path.join(root, cls.base_folder), files)


def _read_cifar(cls: type, name: str, root: str) -> tuple[torch.Tensor, ...]:
    """(x_train, y_train, x_test, y_test) as uint8 NCHW / int64, read from the python pickles.

    We read the pickles ourselves (the same few lines as torchvision) instead of instantiating
    torchvision's CIFAR classes: those verify the md5 of every file and so refuse anything but the
    official release, which would leave the loader untestable without patching torchvision. The
    file names come from torchvision's class attributes.
    """
    _check_cifar(cls, name, root)
    folder = os.path.join(root, cls.base_folder)
    train_files, test_files = [f for f, _ in cls.train_list], [f for f, _ in cls.test_list]

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            with open(os.path.join(folder, f), "rb") as fh:
                entry = _ArrayUnpickler(fh, encoding="latin1").load()
            xs.append(entry["data"])  # (n, 3072) uint8: the R, G, B planes of each image, row-major
            ys.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        x = np.concatenate(xs).reshape(-1, 3, 32, 32)
        return torch.from_numpy(x), torch.tensor(ys, dtype=torch.long)

    return (*read(train_files), *read(test_files))


def _load_cifar(cls: type, name: str, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                root: str, device: torch.device, augment: bool) -> TensorData:
    x_tr, y_tr, x_te, y_te = (t.to(device) for t in _read_cifar(cls, name, root))
    return TensorData(x_tr, y_tr, x_te, y_te, num_classes, mean, std, crop_flip if augment else None)


@register_dataset(
    "cifar10", input_shape=(3, 32, 32), num_classes=10, on_disk=True, num_train=50_000,
    check=functools.partial(_check_cifar, torchvision.datasets.CIFAR10, "cifar10"),
)
def load_cifar10(root: str, device: torch.device, augment: bool, *_: object) -> TensorData:
    """CIFAR-10 (50k/10k 32x32 colour, 10 classes) from <data dir>/cifar-10-batches-py; crop + flip."""
    return _load_cifar(
        torchvision.datasets.CIFAR10, "cifar10", 10, CIFAR10_MEAN, CIFAR10_STD, root, device, augment
    )


@register_dataset(
    "cifar100", input_shape=(3, 32, 32), num_classes=100, on_disk=True, num_train=50_000,
    check=functools.partial(_check_cifar, torchvision.datasets.CIFAR100, "cifar100"),
)
def load_cifar100(root: str, device: torch.device, augment: bool, *_: object) -> TensorData:
    """CIFAR-100 (50k/10k 32x32 colour, 100 fine classes) from <data dir>/cifar-100-python; crop + flip."""
    return _load_cifar(
        torchvision.datasets.CIFAR100, "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD, root, device, augment
    )

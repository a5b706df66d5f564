"""Fashion-MNIST (60k/10k 28x28 grey images of clothing, 10 classes), held on the device as uint8.

The four IDX files are read, never downloaded, from the first of these folders that holds all
four (each file plain or gzipped, as `name` or `name.gz`):
  1. <data dir>/FashionMNIST/raw: torchvision's layout (`torchvision.datasets.FashionMNIST`);
  2. the Debian package `dataset-fashion-mnist`'s folder (`SYSTEM_DIRS`).

IDX is parsed here rather than with torchvision's reader: that one neither opens gzip files nor
says which file is truncated or has a wrong magic number (it asserts); here a damaged file is a
ConfigError naming it.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import torch

from bench.data import TensorData, register_dataset
from bench.errors import ConfigError

MEAN, STD = (0.2860,), (0.3530,)  # of the 60,000 training images, pixels scaled to [0, 1]
SYSTEM_DIRS = ("/usr/share/datasets/fashion-mnist",)  # installed by `apt-get install dataset-fashion-mnist`
TORCHVISION_FOLDER = os.path.join("FashionMNIST", "raw")
FILES = {  # role -> (file name, IDX magic: 0x08 = unsigned bytes, then the number of dimensions)
    "x_train": ("train-images-idx3-ubyte", 0x0803),
    "y_train": ("train-labels-idx1-ubyte", 0x0801),
    "x_test": ("t10k-images-idx3-ubyte", 0x0803),
    "y_test": ("t10k-labels-idx1-ubyte", 0x0801),
}


def _path(folder: str, name: str) -> str | None:
    """`folder/name` or `folder/name.gz`, whichever exists (the plain file first)."""
    for candidate in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    return None


def find_files(root: str) -> dict[str, str]:
    """Role -> path of the four files, from the first folder that has them all; else a ConfigError
    naming the folders looked in and both ways to get the files (reads nothing)."""
    folders = [os.path.join(root, TORCHVISION_FOLDER), *SYSTEM_DIRS]
    for folder in folders:
        paths = {role: _path(folder, name) for role, (name, _) in FILES.items()}
        if all(paths.values()):
            return paths  # type: ignore[return-value]
    names = ", ".join(name for name, _ in FILES.values())
    raise ConfigError(
        f"dataset 'fashion_mnist': files not found in {' or '.join(map(repr, folders))} "
        f"(looked under the data dir, --data-dir, then the system copy); to get them, either "
        f"install the Debian package: apt-get install dataset-fashion-mnist, or put {names} "
        f"(plain or .gz) in <data dir>/{TORCHVISION_FOLDER}, torchvision's FashionMNIST layout"
    )


def _shape(path: str, magic: int, head: bytes, body_size: int) -> tuple[int, ...]:
    """The shape an IDX file's header `head` declares; a ConfigError naming the file if the magic
    number is wrong or the `body_size` bytes after the header do not match it."""
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(head) < 4 or struct.unpack(">I", head[:4])[0] != magic:
        found = f"0x{struct.unpack('>I', head[:4])[0]:08x}" if len(head) >= 4 else "nothing"
        raise ConfigError(
            f"dataset 'fashion_mnist': {path!r} is not an IDX file of {ndim}-d unsigned bytes: its "
            f"magic number is {found}, expected 0x{magic:08x}"
        )
    if len(head) < header:
        raise ConfigError(f"dataset 'fashion_mnist': {path!r} is truncated: its header has {len(head)} of "
                          f"{header} bytes")
    shape = struct.unpack(f">{ndim}I", head[4:header])
    size = int(np.prod(shape))
    if body_size != size:
        raise ConfigError(
            f"dataset 'fashion_mnist': {path!r} is {'truncated' if body_size < size else 'too long'}: "
            f"its header gives shape {shape} ({size} bytes), the file holds {body_size}"
        )
    return shape


def _open(path: str):
    return (gzip.open if path.endswith(".gz") else open)(path, "rb")


def check_idx(path: str, magic: int) -> None:
    """`read_idx`'s checks from the header and the file's size alone (a gzip file's size is in its
    last four bytes), so a damaged file is refused before a run starts."""
    header = 4 * (1 + (magic & 0xFF))
    try:
        with _open(path) as f:
            head = f.read(header)
        if path.endswith(".gz"):
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                total = struct.unpack("<I", f.read(4))[0]  # gzip's ISIZE: the size mod 2**32
        else:
            total = os.path.getsize(path)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ConfigError(f"dataset 'fashion_mnist': cannot read {path!r}: {e}") from e
    _shape(path, magic, head, total - len(head))


def read_idx(path: str, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped if its name ends in .gz) as a uint8 array; a wrong
    magic number, a truncated body or a bad gzip stream is a ConfigError naming the file."""
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ConfigError(f"dataset 'fashion_mnist': cannot read {path!r}: {e}") from e
    header = 4 * (1 + (magic & 0xFF))
    shape = _shape(path, magic, raw[:header], len(raw) - len(raw[:header]))
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _check(root: str) -> None:
    """The files are there and their headers and sizes agree (`bench run` checks before it starts)."""
    paths = find_files(root)
    for role, (_, magic) in FILES.items():
        check_idx(paths[role], magic)


@register_dataset(
    "fashion_mnist", input_shape=(1, 28, 28), num_classes=10, on_disk=True, num_train=60_000, check=_check
)
def load_fashion_mnist(root: str, device: torch.device, augment: bool, *_: object) -> TensorData:
    """Fashion-MNIST (60k/10k 28x28 grey, 10 classes) from <data dir>/FashionMNIST/raw or Debian's dataset-fashion-mnist; no augmentation."""  # noqa: E501
    paths = find_files(root)
    a = {role: read_idx(paths[role], magic) for role, (_, magic) in FILES.items()}
    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.shape[1:] != (28, 28) or len(x) != len(y) or (len(y) and y.max() >= 10):
            raise ConfigError(
                f"dataset 'fashion_mnist': {paths[f'x_{split}']!r} and {paths[f'y_{split}']!r} do not "
                f"hold matching 28x28 images and labels 0..9 (shapes {x.shape} and {y.shape})"
            )

    def t(role: str) -> torch.Tensor:
        arr = torch.from_numpy(a[role].copy())  # np.frombuffer's array is read-only
        return (arr.unsqueeze(1) if role.startswith("x") else arr.long()).to(device)

    return TensorData(t("x_train"), t("y_train"), t("x_test"), t("y_test"), 10, MEAN, STD)

"""Dataset loaders, on tiny files written in the real on-disk formats, and `crop_flip`."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from bench.data import TensorData, crop_flip
from bench.errors import ConfigError
from bench.registry import DATASETS

CPU = torch.device("cpu")


def load(name: str, root: Path | str, augment: bool = False, **kw):
    info = DATASETS.get(name)
    return info.load(str(root), CPU, augment, info.input_shape, info.num_classes, **kw)


def undo_norm(data: TensorData, x: torch.Tensor) -> torch.Tensor:
    """A normalized float batch back to uint8."""
    return (x * data._std + data._mean).mul(255).round().to(torch.uint8)


def check_tensor_data(
    data: TensorData, x: np.ndarray, y: np.ndarray, x_te: np.ndarray, y_te: np.ndarray
) -> None:
    """Pixels/labels read equal those written; batches are a deterministic permutation of them."""
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.long
    assert torch.equal(data.x_train, torch.from_numpy(x)) and data.y_train.tolist() == y.tolist()
    assert torch.equal(data.x_test, torch.from_numpy(x_te)) and data.y_test.tolist() == y_te.tolist()
    assert data.num_train == len(x) and data.input_shape == x.shape[1:]

    def epoch(e: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(data.train_batches(4, epoch=e, seed=seed))

    a, b = epoch(0), epoch(0)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    # other epochs shuffle differently (any one may repeat an order by chance on a tiny set)
    order = torch.cat([xb for xb, _ in a])
    assert any(not torch.equal(order, torch.cat([xb for xb, _ in epoch(e)])) for e in (1, 2, 3))
    # each epoch sees every (image, label) exactly once
    seen = sorted(
        (img.numpy().tobytes(), int(lab))
        for xb, yb in a for img, lab in zip(undo_norm(data, xb), yb, strict=True)
    )
    assert seen == sorted((img.tobytes(), int(lab)) for img, lab in zip(x, y, strict=True))
    xt, _ = next(data.test_batches(100))
    assert xt.dtype == torch.float32 and torch.equal(undo_norm(data, xt), data.x_test)


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if DATASETS.get(n).on_disk])
def test_missing_files_name_dataset_and_path(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.data import fashion_mnist  # also looks in the system copy: as if not installed

    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (str(tmp_path / "not-installed"),))
    root = tmp_path / "no-data-here"
    with pytest.raises(ConfigError) as err:
        load(name, root)
    msg = str(err.value)
    assert repr(name) in msg and str(root) in msg
    with pytest.raises(ConfigError) as err:  # the check `bench run` makes first, reading nothing
        DATASETS.get(name).check(str(root))
    assert str(err.value) == msg


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if not DATASETS.get(n).on_disk])
def test_in_memory_datasets(name: str) -> None:
    info = DATASETS.get(name)
    shape = info.input_shape or (3, 8, 8)
    data = info.load("unused", CPU, False, shape, info.num_classes or 7)
    x, y = next(data.train_batches(16, epoch=0, seed=0))
    x2, _ = next(data.train_batches(16, epoch=0, seed=0))
    assert data.input_shape == shape and x.shape == (16, *shape) and torch.equal(x, x2)
    assert y.dtype == torch.long and 0 <= y.min() and y.max() < data.num_classes


def test_digits() -> None:
    data = load("digits", "unused")
    assert (data.num_train, len(data.x_test), data.num_classes) == (1437, 360, 10)
    assert data.input_shape == (1, 8, 8)


# --- MNIST: idx files as torchvision reads them (uncompressed, under MNIST/raw) ---------------------

def write_idx(path: Path, a: np.ndarray) -> None:
    """IDX format: big-endian magic 0x0000 08 <ndim> (08 = uint8), then the dims, then the bytes."""
    path.write_bytes(struct.pack(f">I{a.ndim}I", 0x0800 | a.ndim, *a.shape) + a.astype(np.uint8).tobytes())


def test_mnist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x, x_te = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (10, 3))
    y, y_te = rng.integers(0, 10, 10), rng.integers(0, 10, 3)
    for prefix, images, labels in (("train", x, y), ("t10k", x_te, y_te)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    DATASETS.get("mnist").check(str(tmp_path))  # the files are there: no error
    data = load("mnist", tmp_path, augment=True)  # MNIST has no augmentation
    assert data.num_classes == 10 and data.augment is None
    check_tensor_data(data, x[:, None], y, x_te[:, None], y_te)


# --- CIFAR: python pickle batches ------------------------------------------------------------------

def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar(root: Path, hundred: bool, rng: np.random.Generator):
    """A tiny CIFAR-10/100 release; returns the (x, y, x_test, y_test) written, x as NCHW uint8."""
    classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    names = (["train"], ["test"]) if hundred else ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
    label_key = "fine_labels" if hundred else "labels"
    written = []
    for files in names:
        xs, ys = [], []
        for f in files:
            n = 6 if hundred else 2
            x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            y = rng.integers(0, classes, n).tolist()
            batch = {"batch_label": f, "data": x, label_key: y, "filenames": [f"{i}.png" for i in range(n)]}
            if hundred:
                batch["coarse_labels"] = [v // 5 for v in y]
            write_pickle(folder / f, batch)
            xs.append(x.reshape(n, 3, 32, 32))
            ys += y
        written += [np.concatenate(xs), np.array(ys)]
    if hundred:
        fine, coarse = [f"c{i}" for i in range(100)], [f"s{i}" for i in range(20)]
        meta = {"fine_label_names": fine, "coarse_label_names": coarse}
        write_pickle(folder / "meta", meta)
    else:
        write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    return written


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, x_te, y_te = write_cifar(tmp_path, name == "cifar100", np.random.default_rng(1))
    DATASETS.get(name).check(str(tmp_path))
    data = load(name, tmp_path)
    assert data.num_classes == (100 if name == "cifar100" else 10) and data.augment is None
    check_tensor_data(data, x, y, x_te, y_te)

    # torchvision's reader agrees (it checks the official md5s, so lift that here, in the test only)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a, **k: True)
    cls = torchvision.datasets.CIFAR100 if name == "cifar100" else torchvision.datasets.CIFAR10
    ref = cls(str(tmp_path), train=True)
    assert np.array_equal(ref.data.transpose(0, 3, 1, 2), x) and ref.targets == y.tolist()

    aug = load(name, tmp_path, augment=True)
    assert aug.augment is crop_flip
    a, b = list(aug.train_batches(4, 3, 0)), list(aug.train_batches(4, 3, 0))
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a, b, strict=True))


def test_cifar_partial_release_names_missing_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, False, np.random.default_rng(2))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3"):
        load("cifar10", tmp_path)
    with pytest.raises(ConfigError, match="data_batch_3"):
        DATASETS.get("cifar10").check(str(tmp_path))


# --- ImageNet: an ImageFolder tree of PNGs --------------------------------------------------------

def write_image_tree(root: Path, per_class: dict[str, int], classes=("n01", "n02")) -> dict[tuple, int]:
    """Solid-colour 40x40 PNGs; returns {colour: label} so every image is identifiable after resizing."""
    colours = {}
    for split, n in per_class.items():
        for label, cls in enumerate(classes):
            folder = root / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                colour = (10 + 40 * i + (split == "val") * 20, 30 * label + 50, 200 - 25 * i)
                Image.fromarray(np.full((40, 40, 3), colour, np.uint8)).save(folder / f"{i}.png")
                colours[colour] = label
    return colours


def colours_of(x: torch.Tensor) -> list[tuple[int, ...]]:
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    rgb = (x * std[:, None, None] + mean[:, None, None]) * 255
    assert (rgb - rgb[:, :, :1, :1]).abs().max() < 0.5  # still a solid colour
    return [tuple(round(v) for v in img[:, 0, 0].tolist()) for img in rgb]


def test_imagenet(tmp_path: Path) -> None:
    colours = write_image_tree(tmp_path, {"train": 3, "val": 1})
    DATASETS.get("imagenet").check(str(tmp_path))
    data = load("imagenet", tmp_path, num_workers=2)
    assert (data.num_classes, data.num_train, data.input_shape) == (2, 6, (3, 224, 224))

    def epoch(e: int, d=data) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(d.train_batches(4, epoch=e, seed=0))

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert [len(x) for x, _ in a] == [4, 2]
    x, y = a[0]
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.long
    order = [colours_of(x) for x, _ in a]
    assert order == [colours_of(x) for x, _ in b] and order != [colours_of(x) for x, _ in c]
    seen = [(col, int(lab)) for x, y in a for col, lab in zip(colours_of(x), y, strict=True)]
    assert sorted(seen) == sorted((col, lab) for col, lab in colours.items() if col[0] in (10, 50, 90))

    xt, yt = next(data.test_batches(8))
    assert yt.tolist() == [0, 1] and colours_of(xt) == [(30, 50, 200), (30, 80, 200)]

    # augmentation (random-resized crop + flip) runs in the workers, seeded from (seed, epoch)
    aug = load("imagenet", tmp_path, augment=True, num_workers=2)
    a, b = epoch(0, aug), epoch(0, aug)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))


def test_imagenet_val_classes_must_match(tmp_path: Path) -> None:
    write_image_tree(tmp_path, {"train": 1})
    write_image_tree(tmp_path, {"val": 1}, classes=("n01", "n03"))
    with pytest.raises(ConfigError, match="imagenet"):
        load("imagenet", tmp_path)


# --- crop_flip -------------------------------------------------------------------------------------

def crop_flip_reference(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per image: pad, slice the crop, torch.flip; the same random draws, in the same order."""
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    out = [padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)]
    return torch.stack([torch.flip(o, [-1]) if f else o for o, f in zip(out, flip, strict=True)])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_crop_flip_matches_reference(pad: int) -> None:
    x = torch.randn(64, 3, 8, 6)
    out = crop_flip(x, gen(5), pad=pad)
    assert out.shape == x.shape
    assert torch.equal(out, crop_flip_reference(x, gen(5), pad=pad))


def test_crop_flip_pad0_is_identity_or_flip() -> None:
    x = torch.randn(32, 3, 5, 5)
    out = crop_flip(x, gen(0), pad=0)
    g = gen(0)
    torch.randint(0, 1, (32,), generator=g), torch.randint(0, 1, (32,), generator=g)
    flip = torch.rand(32, generator=g) < 0.5
    assert 0 < flip.sum() < 32
    assert torch.equal(out[~flip], x[~flip])  # unflipped: identity
    assert torch.equal(out[flip], torch.flip(x[flip], [-1]))


def test_crop_flip_hand_checked() -> None:
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3)  # [[1,2,3],[4,5,6],[7,8,9]]
    # seed 23 draws dy=0, dx=2, flip: rows 0..2, cols 2..4 of the 1-padded image, mirrored
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    crop = padded[:, :, 0:3, 2:5]
    assert crop.flatten().tolist() == [0, 0, 0, 2, 3, 0, 5, 6, 0]
    out = crop_flip(x, gen(23), pad=1)
    assert torch.equal(out, torch.flip(crop, [-1]))
    assert out.flatten().tolist() == [0, 0, 0, 0, 3, 2, 0, 6, 5]


def test_crop_flip_covers_every_offset_and_flip() -> None:
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3).expand(400, 1, 3, 3)
    padded = torch.nn.functional.pad(x[:1], (1, 1, 1, 1))[0, 0]
    crops = [padded[dy : dy + 3, dx : dx + 3] for dy in range(3) for dx in range(3)]
    candidates = [c.flatten().tolist() for c in crops] + [c.flip(-1).flatten().tolist() for c in crops]
    seen = {candidates.index(img.flatten().tolist()) for img in crop_flip(x, gen(1), pad=1)}
    assert seen == set(range(18))


def test_training_batches_pad_with_black_before_normalizing() -> None:
    # as torchvision's RandomCrop(padding=4) + Normalize: the border is black, i.e. -mean/std
    x = torch.full((64, 3, 4, 4), 255, dtype=torch.uint8)
    data = TensorData(x, torch.zeros(64, dtype=torch.long), x, torch.zeros(64, dtype=torch.long), 10,
                      (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_flip)
    (xb, _), = data.train_batches(64, epoch=0, seed=0)
    assert set(xb.unique().tolist()) == {-2.0, 2.0}  # black pads and white pixels, nothing else


def test_cifar_batch_that_would_run_code_is_refused(tmp_path):
    import os
    import pickle

    from bench.data.vision import _ArrayUnpickler

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _ArrayUnpickler(f, encoding="latin1").load()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalizing_leaves_the_stored_data_alone(dtype: torch.dtype) -> None:
    """Batches are normalized in place on their own copy: never on the stored tensors (a float
    test or validation batch is a view of them)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 1, 4, 4), generator=g).to(dtype)
    y = torch.arange(20) % 2
    data = TensorData(x.clone(), y, x.clone(), y, 2, mean=(0.3,), std=(0.2,)).holdout(0.2)
    stored = [t.clone() for t in (data.x_train, data.x_val, data.x_test)]
    batches = [*data.train_batches(8, 0, 0), *data.val_batches(8), *data.test_batches(8)]
    now = (data.x_train, data.x_val, data.x_test)
    assert all(torch.equal(a, b) for a, b in zip(stored, now, strict=True))
    xt = torch.cat([xb for xb, _ in data.test_batches(8)])
    scale = 255 if dtype == torch.uint8 else 1
    assert torch.allclose(xt, (x.float() / scale - 0.3) / 0.2) and len(batches) == 2 + 1 + 3

"""Fashion-MNIST: the loader on small IDX files written here (plain and gzipped, torchvision's layout
and the system copy), damaged files, the missing-data message, and the real files when installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import cli
from bench.data import fashion_mnist
from bench.errors import ConfigError
from bench.registry import DATASETS

CPU = torch.device("cpu")
REAL = Path(fashion_mnist.SYSTEM_DIRS[0])


def load(root: Path | str):
    info = DATASETS.get("fashion_mnist")
    return info.load(str(root), CPU, False, info.input_shape, info.num_classes)


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX: big-endian magic 0x0000 08 <ndim> (08 = unsigned bytes), the dims, then the bytes."""
    return struct.pack(f">I{a.ndim}I", 0x0800 | a.ndim, *a.shape) + a.astype(np.uint8).tobytes()


def write_set(folder: Path, gz: bool, rng: np.random.Generator, n_train: int = 20, n_test: int = 7):
    """The four files in `folder`, gzipped or plain; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(a))
        else:
            (folder / name).write_bytes(idx_bytes(a))
    return arrays


@pytest.fixture
def no_system_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As on a machine without the Debian package."""
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (str(tmp_path / "not-installed"),))


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_reads_torchvision_layout(gz: bool, tmp_path: Path, no_system_copy: None) -> None:
    a = write_set(tmp_path / "FashionMNIST" / "raw", gz, np.random.default_rng(0))
    DATASETS.get("fashion_mnist").check(str(tmp_path))
    data = load(tmp_path)
    assert data.x_train.dtype == torch.uint8 and data.x_train.shape == (20, 1, 28, 28)
    assert np.array_equal(data.x_train[:, 0].numpy(), a["train-images-idx3-ubyte"])
    assert np.array_equal(data.y_train.numpy(), a["train-labels-idx1-ubyte"])
    assert np.array_equal(data.x_test[:, 0].numpy(), a["t10k-images-idx3-ubyte"])
    assert np.array_equal(data.y_test.numpy(), a["t10k-labels-idx1-ubyte"])
    assert data.y_train.dtype == torch.long and data.augment is None
    # batches are normalized with Fashion-MNIST's mean and std, from the stored uint8 pixels
    x, _ = next(data.test_batches(7))
    expected = (torch.from_numpy(a["t10k-images-idx3-ubyte"]).float() / 255 - 0.2860) / 0.3530
    assert torch.allclose(x[:, 0], expected, atol=1e-6)


def test_data_dir_first_then_system_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "usr-share"
    a = write_set(system, True, np.random.default_rng(1), n_train=5)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIRS", (str(system),))
    assert load(tmp_path / "empty").num_train == 5  # nothing under the data dir: the system copy
    write_set(tmp_path / "FashionMNIST" / "raw", False, np.random.default_rng(2), n_train=9)
    data = load(tmp_path)
    assert data.num_train == 9 and not np.array_equal(data.y_test.numpy(), a["t10k-labels-idx1-ubyte"])


def test_missing_names_both_ways(tmp_path: Path, no_system_copy: None) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and "torchvision" in msg
    assert "train-images-idx3-ubyte" in msg and "not-installed" in msg
    # a partial copy under the data dir is not enough either
    write_set(tmp_path / "FashionMNIST" / "raw", False, np.random.default_rng(0))
    (tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        DATASETS.get("fashion_mnist").check(str(tmp_path))


def damage(path: Path, how: str) -> None:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if how == "truncated":
        raw = raw[: len(raw) - 100]
    elif how == "wrong-magic":
        raw = struct.pack(">I", 0x0D03) + raw[4:]  # 0x0D: float32, not unsigned bytes
    elif how == "short-header":
        raw = raw[:10]
    elif how == "empty":
        raw = b""
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    ("how", "says"),
    [("truncated", r"is truncated: its header gives shape \(20, 28, 28\) \(15680 bytes\), the file holds "
                   "15580"),
     ("wrong-magic", "magic number is 0x00000d03, expected 0x00000803"),
     ("short-header", "is truncated: its header has 10 of 16 bytes"),
     ("empty", "magic number is nothing")],
)
def test_damaged_file_is_named(gz: bool, how: str, says: str, tmp_path: Path, no_system_copy: None) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    write_set(raw, gz, np.random.default_rng(0))
    bad = raw / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    damage(bad, how)
    with pytest.raises(ConfigError, match=says) as err:
        load(tmp_path)
    assert repr(str(bad)) in str(err.value)
    with pytest.raises(ConfigError) as early:  # the check `bench run` makes before it starts
        DATASETS.get("fashion_mnist").check(str(tmp_path))
    assert str(early.value) == str(err.value)


def test_broken_gzip_is_named(tmp_path: Path, no_system_copy: None) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    write_set(raw, True, np.random.default_rng(0))
    bad = raw / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:15])  # a gzip stream cut short
    with pytest.raises(ConfigError, match=f"cannot read {str(bad)!r}"):
        load(tmp_path)
    with pytest.raises(ConfigError, match=repr(str(bad))):
        DATASETS.get("fashion_mnist").check(str(tmp_path))


def test_labels_must_match_images(tmp_path: Path, no_system_copy: None) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    write_set(raw, False, np.random.default_rng(0))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(7, 10, dtype=np.uint8)))
    with pytest.raises(ConfigError, match=r"labels 0\.\.9"):
        load(tmp_path)


def run_cli(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    out = tmp_path / "runs"
    code = cli.main(["run", "--pruner", "dense", "--model", "lenet300_100", "--dataset", "fashion_mnist",
                     "--data-dir", str(data_dir), "--epochs", "1", "--out", str(out), "--quiet"])
    return code, capsys.readouterr().err


def test_cli_exit_2_on_missing_or_damaged(tmp_path: Path, no_system_copy: None,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(tmp_path, tmp_path / "data", capsys)
    assert code == 2 and "apt-get install dataset-fashion-mnist" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing written
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    write_set(raw, False, np.random.default_rng(0))
    damage(raw / "train-labels-idx1-ubyte", "wrong-magic")
    code, err = run_cli(tmp_path, tmp_path / "data", capsys)
    assert code == 2 and "train-labels-idx1-ubyte" in err and "magic number" in err


@pytest.mark.skipif(not all((REAL / f"{n}.gz").is_file() for n, _ in fashion_mnist.FILES.values()),
                    reason=f"Fashion-MNIST is not in {REAL} (apt-get install dataset-fashion-mnist)")
def test_real_files(tmp_path: Path) -> None:
    data = load(tmp_path)  # nothing under the data dir: the Debian package's files
    assert (data.num_train, data.num_test, data.input_shape) == (60_000, 10_000, (1, 28, 28))
    assert torch.bincount(data.y_train).tolist() == [6_000] * 10
    assert torch.bincount(data.y_test).tolist() == [1_000] * 10
    x = data.x_train.float() / 255  # the normalization constants are the training set's
    assert abs(x.mean().item() - fashion_mnist.MEAN[0]) < 5e-4
    assert abs(x.std().item() - fashion_mnist.STD[0]) < 5e-4
    split = data.holdout(0.1)  # the fixed, class-stratified validation split
    assert (split.num_train, split.num_val) == (54_000, 6_000)
    assert torch.bincount(split.y_val).tolist() == [600] * 10

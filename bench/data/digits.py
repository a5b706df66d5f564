"""scikit-learn's `digits` (1,797 real 8x8 images, 10 classes): the embedded default."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import torch

from bench.cache import cached_arrays
from bench.data import TensorData, register_dataset


@register_dataset("digits", input_shape=(1, 8, 8), num_classes=10)
def load_digits(root: str, device: torch.device, augment: bool, *_: object) -> TensorData:
    """scikit-learn digits, 8x8 grey, 10 classes; fixed stratified 80/20 split (seed 0)."""
    split = cached_arrays(f"digits-split-sklearn{version('scikit-learn')}", _split)
    x_tr, y_tr, x_te, y_te = split["x_tr"], split["y_tr"], split["x_te"], split["y_te"]

    def t(a, dtype):
        return torch.as_tensor(a, dtype=dtype, device=device)

    # pixel values are 0..16: scale to [0, 1], then standardize with the training mean/std
    x_tr, x_te = t(x_tr, torch.float32).div_(16), t(x_te, torch.float32).div_(16)
    mean, std = x_tr.mean().item(), x_tr.std().item()
    shape = (-1, 1, 8, 8)
    return TensorData(
        x_tr.view(shape), t(y_tr, torch.long), x_te.view(shape), t(y_te, torch.long), 10,
        mean=(mean,), std=(std,),
    )


def _split() -> dict[str, np.ndarray]:
    """The split as arrays; cached on disk, since importing scikit-learn takes about a second."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    x, y = sk_load(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return {"x_tr": x_tr, "y_tr": y_tr, "x_te": x_te, "y_te": y_te}

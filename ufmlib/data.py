"""Balanced, class-ordered, standardised datasets for the real-network experiments.

Conventions (the UFM's class-ordered layout of the book page *Setting and notation*; the data
conventions of the follow-up paper, Garrod & Keating, arXiv 2410.23169, where they apply):

* **Class order.** Samples are returned class by class: the ``n`` samples of class 0,
  then the ``n`` samples of class 1, ..., so sample ``i`` has label ``i // n``.
  With features stored as columns this is exactly the paper's layout
  ``Y = I_K ⊗ 1_n^T`` (see :meth:`ClassData.onehot`).
* **Balanced subsampling.** Exactly ``n_per_class`` samples of each chosen class,
  drawn without replacement by a ``numpy.random.Generator`` seeded with ``seed``
  (within a class the chosen samples keep their dataset order). The chosen classes
  are relabelled ``0..K-1`` in the order given: label ``k`` is original class
  ``classes[k]``.
* **Standardised inputs.** Images are first converted to floats in ``[0, 1]``
  (uint8 / 255; scikit-learn digits / 16), then each feature (pixel, or
  channel-pixel) is centred and scaled by the mean and population std of the
  *selected* subset. Features whose std is below ``STD_FLOOR`` (e.g. the always-black
  border pixels of ``digits``) are only centred (their std is set to 1), so nothing is
  divided by zero. The statistics are kept in ``ClassData.mean``/``.std`` and can be
  re-used on test data via ``load_dataset(..., train=False, stats=(d.mean, d.std))``.

Datasets: ``digits`` (``sklearn.datasets.load_digits``, 8x8, ships with
scikit-learn, works offline; it has no official split, so a fixed one is used: within
each class every 5th sample, in dataset order, is test, the rest train, giving
140-147 train and 34-36 test samples per class), and ``mnist``, ``fashionmnist``,
``cifar10`` through ``torchvision.datasets`` (files under ``root``; downloaded only if
``download=True`` and the network is reachable, otherwise
:class:`DatasetUnavailableError`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np
import torch

from .validation import check_int

__all__ = ["ClassData", "DatasetUnavailableError", "load_dataset", "DATASETS", "STD_FLOOR"]

#: allowed names -> (display name, number of classes, image shape (C, H, W))
DATASETS: dict[str, tuple[str, int, tuple[int, int, int]]] = {
    "digits": ("digits", 10, (1, 8, 8)),
    "mnist": ("MNIST", 10, (1, 28, 28)),
    "fashionmnist": ("FashionMNIST", 10, (1, 28, 28)),
    "cifar10": ("CIFAR10", 10, (3, 32, 32)),
}
#: features with a (population) std below this are centred but not scaled
STD_FLOOR = 1e-6
_DIGITS_TEST_EVERY = 5  # within each class, every 5th digits sample is test

# where torchvision expects the files, relative to ``root`` (for error messages)
_LAYOUT = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "fashionmnist": "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    "cifar10": "cifar-10-batches-py/ (or cifar-10-python.tar.gz with download=True)",
}


class DatasetUnavailableError(RuntimeError):
    """The dataset files are neither under ``root`` nor downloadable."""


@dataclasses.dataclass(frozen=True, eq=False)
class ClassData:
    """A balanced, class-ordered labelled sample.

    Attributes:
        x: inputs, ``(N, D)`` if flattened else ``(N, C, H, W)``; samples are *rows*
            here (transpose ``x.T`` for the column-feature convention ``(D, N)``).
        labels: ``(N,)`` long, ``labels[i] == i // n_per_class``.
        K: number of classes; ``N = K * n_per_class``.
        n_per_class: samples per class ``n``.
        name: dataset key (``"digits"``, ``"mnist"``, ``"fashionmnist"``, ``"cifar10"``).
        classes: original class ids; label ``k`` is original class ``classes[k]``.
        mean, std: per-feature statistics (shape ``x.shape[1:]``) with
            ``x = (raw01 - mean) / std``; zeros and ones if not standardised.
    """

    x: torch.Tensor
    labels: torch.Tensor
    K: int
    n_per_class: int
    name: str
    classes: tuple[int, ...]
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def N(self) -> int:
        return self.K * self.n_per_class

    def onehot(self) -> torch.Tensor:
        """Targets ``Y = I_K ⊗ 1_n^T`` as a ``(K, N)`` matrix (one column per sample)."""
        eye = torch.eye(self.K, dtype=self.x.dtype, device=self.x.device)
        return eye.repeat_interleave(self.n_per_class, dim=1)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "ClassData":
        """Copy with ``x``/``labels``/``mean``/``std`` on ``device`` (floats cast to ``dtype``)."""
        f = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return dataclasses.replace(self, x=f(self.x), labels=self.labels.to(device=device),
                                   mean=f(self.mean), std=f(self.std))


def _load_raw(key: str, root: str, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """All images of one split as ``(N, C, H, W)`` floats in [0, 1] (digits) or uint8, plus labels."""
    if key == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        targets = np.asarray(d.target, dtype=np.int64)
        test = np.zeros(len(targets), dtype=bool)
        for c in np.unique(targets):
            idx = np.flatnonzero(targets == c)
            test[idx[_DIGITS_TEST_EVERY - 1 :: _DIGITS_TEST_EVERY]] = True
        keep = ~test if train else test
        return (d.images[keep] / 16.0)[:, None], targets[keep]

    try:
        import torchvision.datasets as tvd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"load_dataset({key!r}) needs torchvision: pip install 'ufmlib[data]'") from exc
    display = DATASETS[key][0]
    cls = {"mnist": tvd.MNIST, "fashionmnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[key]
    try:
        ds = cls(root=root, train=train, download=download)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError/...
        folder = os.path.abspath(root)
        cause = (str(exc).strip().splitlines() or [""])[0]
        how = "download=False" if not download else "download=True failed, no network?"
        raise DatasetUnavailableError(
            f"{display} is not available in '{folder}' ({how}; {type(exc).__name__}: {cause}). "
            f"Fix: place the torchvision files there as {_LAYOUT[key]}, or run with "
            f"download=True where the network is reachable, or use name='digits' (offline)."
        ) from exc
    data, targets = np.asarray(ds.data), np.asarray(ds.targets, dtype=np.int64)
    data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)  # -> (N, C, H, W)
    return data, targets


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike = "data",
    n_per_class: int,
    classes: Sequence[int] | None = None,
    train: bool = True,
    standardize: bool = True,
    flatten: bool = True,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    download: bool = True,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ClassData:
    """Load a balanced, class-ordered, standardised subset of a classification dataset.

    Args:
        name: ``"digits"``, ``"mnist"``, ``"fashionmnist"`` or ``"cifar10"`` (any case).
        root: folder holding (or receiving) the torchvision files; unused for digits.
        n_per_class: samples drawn per class (without replacement).
        classes: original class ids to keep, in the order that defines labels
            ``0..K-1``; default all classes ``0..9``.
        train: training split (else test split; digits: fixed 80/20 split, see module doc).
        standardize: per-feature standardisation (see module doc); if False the
            inputs are the raw ``[0, 1]`` values.
        flatten: ``(N, D)`` features if True, ``(N, C, H, W)`` images otherwise.
        seed: seed of the subsampling generator (same seed -> same subset).
        device, dtype: where/how ``x`` (and ``mean``/``std``) are returned.
        download: let torchvision download missing files.
        stats: ``(mean, std)`` to standardise with instead of the subset's own
            statistics (implies standardisation, whatever ``standardize`` says), e.g. a
            training ``ClassData``'s ``(mean, std)`` for its test data.

    Raises:
        ValueError: unknown ``name`` or invalid arguments (the message names the parameter).
        DatasetUnavailableError: torchvision files missing and not downloadable.
    """
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)} (case-insensitive), got {name!r}")
    key = name.lower()
    _, n_classes, shape = DATASETS[key]
    n = check_int("n_per_class", n_per_class, 1)
    seed = check_int("seed", seed, 0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if classes is None:
        classes = tuple(range(n_classes))
    else:
        if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
            raise ValueError(f"classes must be a sequence of class ids, got {classes!r}")
        classes = tuple(classes)
        if not classes:
            raise ValueError("classes must not be empty")
        for c in classes:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < n_classes:
                raise ValueError(f"classes must hold ids in 0..{n_classes - 1} for {key!r}, got {c!r}")
        classes = tuple(int(c) for c in classes)
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes must be unique, got {list(classes)}")
    if stats is not None and (not isinstance(stats, (tuple, list)) or len(stats) != 2):
        raise ValueError("stats must be a (mean, std) pair of tensors or None")

    images, targets = _load_raw(key, os.fspath(root), train, download)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in classes:
        idx = np.flatnonzero(targets == c)
        if len(idx) < n:
            split = "train" if train else "test"
            raise ValueError(f"n_per_class={n} exceeds the {len(idx)} samples available "
                             f"for class {c} of {key!r} ({split} split)")
        chosen.append(np.sort(rng.choice(idx, size=n, replace=False)))
    sel = images[np.concatenate(chosen)]
    if sel.dtype == np.uint8:
        sel = sel.astype(np.float64) / 255.0
    flat = torch.as_tensor(sel, dtype=torch.float64).reshape(len(sel), -1)

    d = flat.shape[1]
    if stats is not None:
        mean, std = (torch.as_tensor(s, dtype=torch.float64).reshape(-1).cpu() for s in stats)
        if mean.numel() != d or std.numel() != d:
            raise ValueError(f"stats must hold {d} per-feature values each for {key!r}")
    elif standardize:
        mean, std = flat.mean(0), flat.std(0, unbiased=False)
        std = torch.where(std < STD_FLOOR, torch.ones_like(std), std)
    else:
        mean, std = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    if stats is not None or standardize:
        flat = (flat - mean) / std

    feat_shape = (d,) if flatten else shape
    to = dict(device=device, dtype=dtype)
    K = len(classes)
    return ClassData(
        x=flat.reshape(len(flat), *feat_shape).to(**to),
        labels=torch.arange(K, device=device).repeat_interleave(n),
        K=K, n_per_class=n, name=key, classes=classes,
        mean=mean.reshape(feat_shape).to(**to), std=std.reshape(feat_shape).to(**to),
    )

"""Tests for ufmlib.data: no network, a few seconds.

* ``digits`` (scikit-learn, offline) is loaded for real.
* MNIST / FashionMNIST / CIFAR-10 are loaded through torchvision from tiny fake files that
  the tests write in torchvision's own on-disk formats into ``tmp_path``:
  - MNIST-style: ``<root>/<Name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``
    (IDX, big-endian). torchvision's ``MNIST._check_exists`` only checks that these four
    uncompressed files exist (``check_integrity`` without md5), so no patching is needed.
  - CIFAR-10: ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
    (latin1 pickles of ``{"data": uint8 (n, 3072), "labels": [...]}``). torchvision checks
    the md5 of each file against the real release (``CIFAR10._check_integrity`` and
    ``_load_meta`` call ``torchvision.datasets.cifar.check_integrity(path, md5)``), so the
    CIFAR tests monkeypatch that name to a plain existence check.
* "Offline" is simulated by monkeypatching ``urllib.request.urlopen`` (the only network
  entry point of torchvision's downloader) to raise ``URLError``.
"""

from __future__ import annotations

import os
import pickle
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from ufmlib.data import ClassData, DatasetUnavailableError, load_dataset

K10 = 10


# ----------------------------------------------------------------------------- helpers
def _write_idx(path, arr: np.ndarray) -> None:
    """IDX file: magic (0, 0, 0x08 = ubyte, ndim), big-endian uint32 dims, raw bytes."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, arr.ndim))
        f.write(struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.tobytes())


def _fake_split(rng, per_class: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images, labels interleaved (0..9, 0..9, ...) then shuffled."""
    labels = np.tile(np.arange(K10), per_class)
    rng.shuffle(labels)
    images = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
    return images, labels


def _write_mnist(root, folder: str, rng, n_train=3, n_test=2):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for split, per_class in (("train", n_train), ("t10k", n_test)):
        images, labels = _fake_split(rng, per_class, (28, 28))
        _write_idx(raw / f"{split}-images-idx3-ubyte", images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
        out[split] = (images, labels)
    return out


def _write_cifar(root, rng, per_batch=2, n_test=2):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_imgs, train_labels = [], []
    for b in range(1, 6):
        images, labels = _fake_split(rng, per_batch, (3072,))
        with open(base / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": images, "labels": labels.tolist()}, f)
        train_imgs.append(images)
        train_labels.append(labels)
    images, labels = _fake_split(rng, n_test, (3072,))
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": images, "labels": labels.tolist()}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(K10)]}, f)
    return {"train": (np.concatenate(train_imgs), np.concatenate(train_labels)), "test": (images, labels)}


def _class_ordered(images: np.ndarray, labels: np.ndarray, classes) -> np.ndarray:
    """All samples of classes[0] (dataset order), then classes[1], ..."""
    return np.concatenate([images[labels == c] for c in classes])


@pytest.fixture
def no_md5(monkeypatch):
    """Fake CIFAR files cannot match the real md5s: check existence only (tests only)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled by test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ----------------------------------------------------------------------------- digits
def test_digits_shapes_order_balance():
    d = load_dataset("digits", n_per_class=20)
    assert isinstance(d, ClassData)
    assert d.x.shape == (200, 64) and d.x.dtype == torch.float32 and d.x.device.type == "cpu"
    assert (d.K, d.n_per_class, d.N, d.name, d.classes) == (10, 20, 200, "digits", tuple(range(10)))
    assert d.labels.dtype == torch.long
    assert torch.equal(d.labels, torch.arange(10).repeat_interleave(20))
    assert torch.equal(torch.bincount(d.labels), torch.full((10,), 20))
    Y = d.onehot()
    assert Y.shape == (10, 200) and Y.dtype == d.x.dtype
    assert torch.equal(Y, torch.kron(torch.eye(10), torch.ones(1, 20)))
    assert torch.equal(Y.argmax(0), d.labels)
    img = load_dataset("DiGiTs", n_per_class=20, flatten=False)
    assert img.x.shape == (200, 1, 8, 8) and img.mean.shape == img.std.shape == (1, 8, 8)
    assert torch.equal(img.x.reshape(200, 64), d.x)


def test_digits_samples_belong_to_their_class_and_are_distinct():
    from sklearn.datasets import load_digits

    ref = load_digits()
    raw = load_dataset("digits", n_per_class=30, classes=[7, 3], standardize=False, dtype=torch.float64)
    assert raw.K == 2 and raw.classes == (7, 3)
    assert torch.equal(raw.labels, torch.tensor([0] * 30 + [1] * 30))
    assert 0.0 <= raw.x.min() and raw.x.max() <= 1.0
    lookup = {row.tobytes(): t for row, t in zip(ref.data / 16.0, ref.target)}
    rows = raw.x.numpy()
    assert len({r.tobytes() for r in rows}) == 60  # drawn without replacement
    assert [lookup[r.tobytes()] for r in rows] == [7] * 30 + [3] * 30
    assert torch.equal(raw.mean, torch.zeros(64, dtype=torch.float64))
    assert torch.equal(raw.std, torch.ones(64, dtype=torch.float64))


def test_digits_standardisation():
    d = load_dataset("digits", n_per_class=50, dtype=torch.float64)
    raw = load_dataset("digits", n_per_class=50, dtype=torch.float64, standardize=False)
    torch.testing.assert_close(d.x.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12, rtol=0)
    sd = d.x.std(0, unbiased=False)
    constant = raw.x.std(0) == 0
    assert constant.any() and (~constant).sum() > 40  # digits has always-blank border pixels
    torch.testing.assert_close(sd[~constant], torch.ones(int((~constant).sum()), dtype=torch.float64))
    assert torch.all(d.x[:, constant] == 0) and torch.all(d.std[constant] == 1)
    assert torch.isfinite(d.x).all()
    torch.testing.assert_close(d.x * d.std + d.mean, raw.x)  # stats invert the transform


def test_digits_seed_determinism():
    a = load_dataset("digits", n_per_class=15, seed=3)
    b = load_dataset("digits", n_per_class=15, seed=3)
    c = load_dataset("digits", n_per_class=15, seed=4)
    assert torch.equal(a.x, b.x) and torch.equal(a.mean, b.mean) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.x, c.x)
    assert torch.equal(a.labels, c.labels)


def test_digits_split_and_stats_reuse():
    tr = load_dataset("digits", n_per_class=140, standardize=False)  # every train sample of class 8
    te = load_dataset("digits", n_per_class=34, train=False, standardize=False)
    train_rows = {r.tobytes() for r in tr.x.numpy()}
    assert not any(r.tobytes() in train_rows for r in te.x.numpy())  # disjoint splits
    with pytest.raises(ValueError, match=r"n_per_class=141 .*140 samples available.*class 8"):
        load_dataset("digits", n_per_class=141)
    trs = load_dataset("digits", n_per_class=100)
    tes = load_dataset("digits", n_per_class=30, train=False, stats=(trs.mean, trs.std))
    assert torch.equal(tes.mean, trs.mean) and torch.equal(tes.std, trs.std)
    te_raw = load_dataset("digits", n_per_class=30, train=False, standardize=False)
    torch.testing.assert_close(tes.x, (te_raw.x - trs.mean) / trs.std)


def test_dtype_device_and_to():
    d = load_dataset("digits", n_per_class=5, dtype=torch.float64, device="cpu")
    assert d.x.dtype == d.mean.dtype == d.std.dtype == torch.float64
    e = d.to("cpu", torch.float32)
    assert e.x.dtype == torch.float32 and e.labels.dtype == torch.long and e is not d
    assert d.x.dtype == torch.float64  # frozen original untouched
    with pytest.raises(Exception):
        d.K = 3  # frozen
    if torch.cuda.is_available():
        g = load_dataset("digits", n_per_class=5, device="cuda")
        assert g.x.is_cuda and g.labels.is_cuda and g.mean.is_cuda and g.onehot().is_cuda
        assert d.to("cuda").x.is_cuda


# ----------------------------------------------------------------------------- torchvision formats
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("FashionMNIST", "FashionMNIST")])
def test_mnist_like_files_round_trip(tmp_path, name, folder):
    fake = _write_mnist(tmp_path, folder, np.random.default_rng(0))
    for train, split, n in ((True, "train", 3), (False, "t10k", 2)):
        d = load_dataset(name, root=tmp_path, n_per_class=n, train=train, download=False,
                         standardize=False, flatten=False, dtype=torch.float64)
        assert d.x.shape == (10 * n, 1, 28, 28) and d.name == name.lower()
        assert torch.equal(d.labels, torch.arange(10).repeat_interleave(n))
        expected = _class_ordered(*fake[split], range(10)) / 255.0  # n = all of them
        np.testing.assert_array_equal(d.x[:, 0].numpy(), expected)
    s = load_dataset(name, root=str(tmp_path), n_per_class=2, classes=[9, 0], download=False)
    assert s.x.shape == (4, 784) and s.classes == (9, 0)
    torch.testing.assert_close(s.x.mean(0), torch.zeros(784), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="n_per_class=4 .*3 samples available"):
        load_dataset(name, root=tmp_path, n_per_class=4, download=False)


def test_cifar10_files_round_trip(tmp_path, no_md5):
    fake = _write_cifar(tmp_path, np.random.default_rng(1))
    for train, split, n in ((True, "train", 10), (False, "test", 2)):
        d = load_dataset("CIFAR10", root=tmp_path, n_per_class=n, train=train, download=False,
                         standardize=False, flatten=False, dtype=torch.float64)
        assert d.x.shape == (10 * n, 3, 32, 32)
        assert torch.equal(d.labels, torch.arange(10).repeat_interleave(n))
        expected = _class_ordered(*fake[split], range(10)).reshape(-1, 3, 32, 32) / 255.0
        np.testing.assert_array_equal(d.x.numpy(), expected)  # CHW channel order preserved
    f = load_dataset("cifar10", root=tmp_path, n_per_class=3, classes=[2, 5], download=False)
    assert f.x.shape == (6, 3072) and f.mean.shape == (3072,)
    torch.testing.assert_close(f.x.mean(0), torch.zeros(3072), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- unavailable data
@pytest.mark.parametrize("name,display", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST"),
                                          ("cifar10", "CIFAR10")])
@pytest.mark.parametrize("download", [False, True])
def test_missing_data_raises_clear_error(tmp_path, offline, name, display, download):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(name, root=root, n_per_class=2, download=download)
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError) and "\n" not in msg
    assert display in msg and str(root.resolve()) in msg and "digits" in msg
    assert info.value.__cause__ is not None  # torchvision's error is chained, not shown raw
    if download:
        assert "download=True" in msg


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("kwargs,param", [
    (dict(name="svhn"), "name"),
    (dict(name=3), "name"),
    (dict(n_per_class=0), "n_per_class"),
    (dict(n_per_class=-2), "n_per_class"),
    (dict(n_per_class=2.5), "n_per_class"),
    (dict(n_per_class=True), "n_per_class"),
    (dict(classes=[1, 1]), "classes"),
    (dict(classes=[10]), "classes"),
    (dict(classes=[-1]), "classes"),
    (dict(classes=[]), "classes"),
    (dict(classes="01"), "classes"),
    (dict(classes=[0.5]), "classes"),
    (dict(seed=-1), "seed"),
    (dict(seed="a"), "seed"),
    (dict(dtype=torch.int64), "dtype"),
    (dict(stats=(torch.zeros(3),)), "stats"),
    (dict(stats=(torch.zeros(3), torch.ones(3))), "stats"),
])
def test_bad_arguments(kwargs, param):
    args = dict(name="digits", n_per_class=3) | kwargs
    with pytest.raises(ValueError, match=param) as info:
        load_dataset(args.pop("name"), **args)
    if param == "name":
        assert all(n in str(info.value) for n in ("digits", "mnist", "fashionmnist", "cifar10"))

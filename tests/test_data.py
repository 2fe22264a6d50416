"""Tests for hgrad.data: offline loaders, IDX format, splits, label noise, validation."""

import random

import numpy as np
import pytest

from hgrad import data
from hgrad.data import Dataset, check_finite, flip_labels, split
from hgrad.data.idx import encode_idx, parse_idx, read_idx, write_idx


@pytest.fixture(scope="module")
def digits():
    return data.digits()


@pytest.fixture(scope="module")
def mnist5k():
    return data.mnist5k()


@pytest.fixture(scope="module")
def mnist1d():
    return data.mnist1d()


def toy(n=50, num_classes=5):
    x = np.linspace(0.0, 1.0, n * 3, dtype=np.float32).reshape(n, 3)
    y = (np.arange(n) % num_classes).astype(np.int32)
    return Dataset(x, y, num_classes, "toy", "toy data for tests")


def assert_well_formed(ds, n, features, name):
    assert isinstance(ds, Dataset)
    assert ds.x.shape == (n, features)
    assert ds.x.dtype == np.float32
    assert ds.y.shape == (n,)
    assert ds.y.dtype == np.int32
    assert ds.num_classes == 10
    assert ds.name == name
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.x.max() > 0.5  # really scaled to [0, 1], not e.g. divided twice
    assert set(np.unique(ds.y)) == set(range(10))
    assert ds.note and "\n" not in ds.note


# --- offline loaders --------------------------------------------------------


def test_digits(digits):
    assert_well_formed(digits, 1797, 64, "digits")
    assert "load_digits" in digits.note


def test_mnist5k(mnist5k):
    assert_well_formed(mnist5k, 5000, 784, "mnist5k")
    assert np.all(np.bincount(mnist5k.y) == 500)


def test_mnist1d(mnist1d):
    assert_well_formed(mnist1d, 5000, 40, "mnist1d")
    assert mnist1d.x.min() == 0.0 and mnist1d.x.max() == 1.0


def test_mnist1d_is_deterministic_and_seeded():
    a, b, c = data.mnist1d(200, seed=1), data.mnist1d(200, seed=1), data.mnist1d(200, seed=2)
    assert a.x.shape == (200, 40)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_mnist1d_restores_global_random_state():
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    data.mnist1d(100, seed=7)
    assert (np.random.random(), random.random()) == expected


@pytest.mark.parametrize("num_samples", [0, -10, 95, 2.5, True])
def test_mnist1d_rejects_bad_num_samples(num_samples):
    with pytest.raises(ValueError, match="multiple of 10"):
        data.mnist1d(num_samples)


def test_load_dispatches_by_name(digits):
    loaded = data.load("digits")
    np.testing.assert_array_equal(loaded.x, digits.x)
    assert data.load("mnist1d", num_samples=100, seed=3).x.shape == (100, 40)


def test_load_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="cifar") as info:
        data.load("cifar")
    for name in ("digits", "mnist5k", "mnist1d", "mnist", "fashion_mnist"):
        assert name in str(info.value)


def test_public_api():
    assert data.DATA_DIR_ENV == "HGRAD_DATA_DIR"
    for name in data.__all__:
        assert hasattr(data, name), name


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert data.cache_dir() == tmp_path.resolve()
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == (tmp_path / "home" / ".cache" / "hgrad").resolve()


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_rejects_nan_and_inf(bad):
    ds = toy()
    x = ds.x.copy()
    x[3, 1] = bad
    with pytest.raises(ValueError, match="'toy' has non-finite inputs.*1 of 50 examples"):
        check_finite(ds._replace(x=x))


def test_check_finite_passes_clean_data():
    ds = toy()
    assert check_finite(ds) is ds


def test_make_dataset_validates():
    from hgrad.data.dataset import make_dataset

    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="shape"):
        make_dataset(x, np.zeros(3, int), 2, "d", "n")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        make_dataset(x, np.array([0, 1, 2, 0]), 2, "d", "n")
    with pytest.raises(ValueError, match="integers"):
        make_dataset(x, np.zeros(4), 2, "d", "n")
    with pytest.raises(ValueError, match="non-finite"):
        make_dataset(np.full((4, 2), np.nan), np.zeros(4, int), 2, "d", "n")


# --- IDX format ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", [".idx", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"a{suffix}", array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_header_layout():
    raw = encode_idx(np.array([[1, 2, 3]], dtype=np.uint8))
    assert raw == bytes([0, 0, 0x08, 2, 0, 0, 0, 1, 0, 0, 0, 3, 1, 2, 3])
    # MNIST's labels file magic number is 2049 = 0x00000801
    assert int.from_bytes(encode_idx(np.zeros(5, np.uint8))[:4], "big") == 2049


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + b"\x00\x00\x00\x01" + b"\x00", "type code"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x02" + b"\x00\x00\x00\x01", "truncated"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x03" + b"\x00\x00", "3 data bytes|2 data bytes"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x00\x00", "2 data bytes"),
    ],
)
def test_parse_idx_rejects_malformed(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_idx(raw, source="bad.idx")


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(ValueError, match="gzip"):
        read_idx(path)


def test_encode_idx_rejects_unsupported_dtype():
    with pytest.raises(ValueError, match="cannot store"):
        encode_idx(np.zeros(3, np.uint16))


# --- split ------------------------------------------------------------------


def test_split_is_deterministic_and_disjoint(digits):
    a = split(digits, (1000, 300, 200), seed=0)
    b = split(digits, (1000, 300, 200), seed=0)
    c = split(digits, (1000, 300, 200), seed=1)
    assert [len(p.x) for p in a] == [1000, 300, 200]
    for p, q in zip(a, b, strict=True):
        np.testing.assert_array_equal(p.x, q.x)
        np.testing.assert_array_equal(p.y, q.y)
    assert not np.array_equal(a[0].x, c[0].x)
    # tag each example with its index to check the parts are disjoint
    tagged = digits._replace(y=np.arange(len(digits.y), dtype=np.int32))
    ids = [set(p.y.tolist()) for p in split(tagged, (1000, 300, 200), seed=0)]
    assert len(ids[0] | ids[1] | ids[2]) == 1500
    for p in a:
        assert p.num_classes == digits.num_classes and p.name == digits.name
        assert p.x.dtype == np.float32 and p.y.dtype == np.int32


def test_split_parts_are_consecutive_blocks_of_one_permutation():
    ds = toy(n=40)
    ds = ds._replace(x=np.arange(40, dtype=np.float32)[:, None])
    parts = split(ds, (10, 5, 25), seed=3)
    ids = np.concatenate([p.x[:, 0] for p in parts]).astype(int)
    assert len(set(ids.tolist())) == 40  # disjoint and covering
    np.testing.assert_array_equal(ids, np.random.default_rng(3).permutation(40))
    np.testing.assert_array_equal(np.concatenate([p.y for p in parts]), ds.y[ids])


def test_split_with_names_returns_dict_and_may_leave_examples_out():
    ds = toy(n=30)
    parts = split(ds, {"train": 10, "val": 5, "test": 5}, seed=0)
    assert list(parts) == ["train", "val", "test"]
    assert [len(p.x) for p in parts.values()] == [10, 5, 5]
    assert "'val'" in parts["val"].note
    same = split(ds, (10, 5, 5), seed=0)
    for p, q in zip(parts.values(), same, strict=True):
        np.testing.assert_array_equal(p.x, q.x)


def test_split_errors():
    ds = toy(n=30)
    with pytest.raises(ValueError, match="add up to 31 examples but dataset 'toy' has only 30"):
        split(ds, (20, 11), seed=0)
    with pytest.raises(ValueError, match="non-negative int"):
        split(ds, (5, -1), seed=0)
    with pytest.raises(ValueError, match="non-negative int"):
        split(ds, {"a": 2.5}, seed=0)
    with pytest.raises(ValueError, match="at least one part"):
        split(ds, (), seed=0)


# --- flip_labels --------------------------------------------------------------


@pytest.mark.parametrize("num_flips", [0, 1, 37, 100])
def test_flip_labels_flips_exactly_num_flips_to_other_classes(num_flips):
    y = (np.arange(100) % 4).astype(np.int32)
    noisy, flipped = flip_labels(y, num_flips, 4, seed=0)
    assert noisy.dtype == y.dtype and flipped.dtype == bool
    assert flipped.sum() == num_flips
    assert np.all(noisy[flipped] != y[flipped])
    assert np.all(noisy[~flipped] == y[~flipped])
    assert noisy.min() >= 0 and noisy.max() < 4
    np.testing.assert_array_equal(y, np.arange(100) % 4)  # input untouched


def test_flip_labels_is_deterministic_and_roughly_uniform():
    y = np.zeros(30000, np.int64)
    a, fa = flip_labels(y, 30000, 4, seed=5)
    b, fb = flip_labels(y, 30000, 4, seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(fa, fb)
    counts = np.bincount(a, minlength=4)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] - 10000) < 400)  # ~4 standard deviations
    _, fc = flip_labels(np.zeros(100, int), 10, 4, seed=6)
    _, fd = flip_labels(np.zeros(100, int), 10, 4, seed=7)
    assert not np.array_equal(fc, fd)


def test_flip_labels_two_classes_swaps():
    y = np.array([0, 1, 0, 1, 1])
    noisy, flipped = flip_labels(y, 5, 2, seed=0)
    np.testing.assert_array_equal(noisy, 1 - y)
    assert flipped.all()


def test_flip_labels_errors():
    y = np.arange(10) % 3
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        flip_labels(y, 11, 3, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        flip_labels(y, -1, 3, seed=0)
    with pytest.raises(ValueError, match="must be an int"):
        flip_labels(y, 1.5, 3, seed=0)
    with pytest.raises(ValueError, match="labels must lie"):
        flip_labels(y, 1, 2, seed=0)
    with pytest.raises(ValueError, match="1-D integer"):
        flip_labels(y.astype(float), 1, 3, seed=0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        flip_labels(np.zeros(3, int), 1, 1, seed=0)

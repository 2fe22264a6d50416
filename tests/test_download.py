"""Tests for the MNIST / Fashion-MNIST download path against a local HTTP server.

Every server and every URL here is on the loopback interface 127.0.0.1.
"""

import gzip
import hashlib
import http.server
import socket
import threading

import numpy as np
import pytest

from hgrad import data
from hgrad.data import ChecksumError, DatasetUnavailableError
from hgrad.data.idx import encode_idx
from hgrad.data.sources import MNIST

TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def gz_idx(array):
    return gzip.compress(encode_idx(array), mtime=0)


def sha256(blob):
    return hashlib.sha256(blob).hexdigest()


@pytest.fixture(scope="module")
def files():
    """Small gzipped IDX files under the standard MNIST names."""
    rng = np.random.default_rng(0)
    blobs = {}
    for (images, labels), n in ((TRAIN, 12), (TEST, 7)):
        blobs[images] = gz_idx(rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        blobs[labels] = gz_idx(np.arange(n, dtype=np.uint8) % 10)
    return blobs


@pytest.fixture(scope="module")
def checksums(files):
    return {name: sha256(blob) for name, blob in files.items()}


class Server:
    """A loopback HTTP server serving ``routes`` (path -> bytes) and counting requests."""

    def __init__(self):
        self.routes = {}
        self.truncated = set()
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncated:
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                else:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def serve(self, prefix, files):
        for name, blob in files.items():
            self.routes[f"{prefix}/{name}"] = blob
        return self.url + prefix

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def closed_port_url():
    """A loopback URL whose port is bound but not listening: connections are refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/mnist"
    sock.close()


def listing(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_fills_cache_and_second_load_uses_it(server, files, checksums, tmp_path):
    mirror = server.serve("/mnist", files)
    ds = data.mnist("train", cache=tmp_path, mirrors=[mirror], checksums=checksums, timeout=5)
    assert ds.x.shape == (12, 784) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int32 and ds.y.tolist() == [i % 10 for i in range(12)]
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert ds.name == "mnist" and str(tmp_path / "mnist") in ds.note
    assert sorted(server.requests) == sorted(f"/mnist/{n}" for n in TRAIN)
    assert listing(tmp_path / "mnist") == sorted(TRAIN)  # no temporary files left
    for name in TRAIN:
        assert (tmp_path / "mnist" / name).read_bytes() == files[name]

    again = data.mnist("train", cache=tmp_path, mirrors=[mirror], checksums=checksums)
    assert len(server.requests) == 2  # served from the cache
    np.testing.assert_array_equal(again.x, ds.x)
    offline = data.mnist("train", cache=tmp_path, download=False, checksums=checksums)
    np.testing.assert_array_equal(offline.y, ds.y)


def test_pixels_scaled_by_255(server, files, checksums, tmp_path):
    mirror = server.serve("/m", files)
    ds = data.mnist("test", cache=tmp_path, mirrors=[mirror], checksums=checksums)
    raw = np.frombuffer(gzip.decompress(files[TEST[0]])[16:], np.uint8).reshape(7, 784)
    np.testing.assert_allclose(ds.x, raw / 255.0, rtol=1e-6)
    assert sorted(server.requests) == sorted(f"/m/{n}" for n in TEST)


def test_cache_root_from_environment(server, files, checksums, tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env-root"))
    mirror = server.serve("/f", files)
    ds = data.fashion_mnist("test", mirrors=[mirror], checksums=checksums)
    assert ds.name == "fashion_mnist" and len(ds.y) == 7
    assert listing(tmp_path / "env-root" / "fashion_mnist") == sorted(TEST)
    assert data.load("fashion_mnist", split="test", download=False, checksums=checksums).x.shape == (7, 784)


def test_falls_back_to_next_mirror(server, files, checksums, tmp_path, closed_port_url):
    good = server.serve("/good", files)
    missing = server.url + "/nothing-here"  # answers 404
    ds = data.mnist("train", cache=tmp_path, mirrors=[closed_port_url, missing, good],
                    checksums=checksums, timeout=5)
    assert len(ds.y) == 12
    assert listing(tmp_path / "mnist") == sorted(TRAIN)


def test_checksum_mismatch_raises_and_leaves_nothing(server, files, checksums, tmp_path):
    mirror = server.serve("/mnist", files)
    wrong = dict(checksums, **{TRAIN[0]: "0" * 64})
    with pytest.raises(ChecksumError) as info:
        data.mnist("train", cache=tmp_path, mirrors=[mirror], checksums=wrong, timeout=5)
    error = info.value
    assert error.filename == TRAIN[0] and error.expected == "0" * 64
    assert error.actual == checksums[TRAIN[0]]
    for text in (TRAIN[0], "0" * 64, checksums[TRAIN[0]]):
        assert text in str(error)
    assert TRAIN[0] not in listing(tmp_path / "mnist")
    assert not [n for n in listing(tmp_path / "mnist") if n.endswith(".part")]


def test_bad_first_mirror_is_skipped_when_a_later_one_is_good(server, files, checksums, tmp_path):
    corrupt = server.serve("/corrupt", {name: blob[:-1] + b"!" for name, blob in files.items()})
    good = server.serve("/good", files)
    ds = data.mnist("train", cache=tmp_path, mirrors=[corrupt, good], checksums=checksums)
    assert len(ds.y) == 12
    assert listing(tmp_path / "mnist") == sorted(TRAIN)


def test_interrupted_download_leaves_nothing(server, files, checksums, tmp_path):
    mirror = server.serve("/cut", files)
    server.truncated.add(f"/cut/{TRAIN[0]}")
    with pytest.raises(DatasetUnavailableError, match="broke off|IncompleteRead|Connection"):
        data.mnist("train", cache=tmp_path, mirrors=[mirror], checksums=checksums, timeout=5)
    assert listing(tmp_path / "mnist") == []


def test_unreachable_mirror_raises_unavailable_naming_cache(closed_port_url, checksums, tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        data.mnist("train", cache=tmp_path, mirrors=[closed_port_url], checksums=checksums, timeout=5)
    message = str(info.value)
    assert str(tmp_path / "mnist") in message
    assert "HGRAD_DATA_DIR" in message
    assert closed_port_url in message
    for alternative in ("mnist5k()", "digits()", "mnist1d()"):
        assert alternative in message
    assert listing(tmp_path / "mnist") == []


def test_download_false_with_empty_cache(checksums, tmp_path):
    with pytest.raises(DatasetUnavailableError, match="download=False") as info:
        data.mnist("test", cache=tmp_path, download=False)
    assert str(tmp_path / "mnist") in str(info.value)
    assert all(name in str(info.value) for name in TEST)
    assert not (tmp_path / "mnist").exists()


def test_corrupt_cached_file_raises_checksum_error(files, checksums, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in TRAIN:
        (folder / name).write_bytes(files[name])
    (folder / TRAIN[1]).write_bytes(files[TRAIN[1]] + b"extra")
    with pytest.raises(ChecksumError, match="delete it"):
        data.mnist("train", cache=tmp_path, download=False, checksums=checksums)


def test_inconsistent_files_are_rejected(server, checksums, tmp_path):
    bad = {TRAIN[0]: gz_idx(np.zeros((3, 28, 28), np.uint8)), TRAIN[1]: gz_idx(np.zeros(4, np.uint8))}
    mirror = server.serve("/x", bad)
    sums = {name: sha256(blob) for name, blob in bad.items()}
    with pytest.raises(ValueError, match="expected 3 labels"):
        data.mnist("train", cache=tmp_path, mirrors=[mirror], checksums=sums)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        data.mnist("validation", cache=tmp_path, download=False)


def test_recorded_checksums_are_sha256_hex():
    for source in (MNIST, data.sources.FASHION_MNIST):
        assert set(source.checksums) == set(TRAIN + TEST)
        for digest in source.checksums.values():
            assert len(digest) == 64 and int(digest, 16) >= 0
        assert all(m.startswith("http") for m in source.mirrors)

"""Tests for minicnn.datasets.cifar10 on tiny fake archives in the official format.

The download path runs against an http.server on 127.0.0.1; HOME and the
MINICNN_* variables are redirected so the real ~/.minicnn is never touched.
"""
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from minicnn.datasets import cifar10
from minicnn.datasets.cifar10 import DatasetError, load_data

PER_BATCH = 4
NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
# the shared dev tarball stores its members in this order; loading must still be 1..5
TAR_ORDER = ["batches.meta", "data_batch_4", "data_batch_2", "readme.html",
             "data_batch_5", "data_batch_1", "test_batch", "data_batch_3"]
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar-10-python.tar.gz"
# marker: image 2 of data_batch_1 (= x_train[2]), row 5, column 7, green channel
MARK_N, MARK_H, MARK_W, MARK_C, MARK_VALUE = 2, 5, 7, 1, 250


def expected_arrays():
    """Channels-last images (all < 200, one marker pixel of 250) and labels."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 200, (5 * PER_BATCH, 32, 32, 3), dtype=np.uint8)
    x_train[MARK_N, MARK_H, MARK_W, MARK_C] = MARK_VALUE
    x_test = rng.integers(0, 200, (PER_BATCH, 32, 32, 3), dtype=np.uint8)
    y_train = (np.arange(5 * PER_BATCH) % 10).astype(np.uint8)  # differs per batch
    y_test = np.array([9, 0, 3, 7], dtype=np.uint8)
    return x_train, y_train, x_test, y_test


def official_batches():
    """name -> pickled bytes, in the official layout (channel-first rows)."""
    x_train, y_train, x_test, y_test = expected_arrays()
    xs = [x_train[i * PER_BATCH:(i + 1) * PER_BATCH] for i in range(5)] + [x_test]
    ys = [y_train[i * PER_BATCH:(i + 1) * PER_BATCH] for i in range(5)] + [y_test]
    files = {}
    for name, x, y in zip(NAMES, xs, ys):
        data = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # rows: R plane, G plane, B plane
        files[name] = pickle.dumps({b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                                    b"data": data, b"filenames": [b"x.png"] * len(x)}, protocol=2)
    files["batches.meta"] = pickle.dumps(
        {b"label_names": [n.encode() for n in cifar10.CLASS_NAMES], b"num_vis": 3072}, protocol=2)
    files["readme.html"] = b"<html></html>"
    return files


def write_folder(root, files=None):
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, raw in (official_batches() if files is None else files).items():
        (folder / name).write_bytes(raw)
    return folder


def tar_bytes(files=None):
    files = official_batches() if files is None else files
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py")
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name in [n for n in TAR_ORDER if n in files] + [n for n in files if n not in TAR_ORDER]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def write_tar(path, files=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_bytes(files))
    return path


def md5(raw):
    return hashlib.md5(raw).hexdigest()


def check_arrays(result):
    (x_train, y_train), (x_test, y_test) = result
    ex_train, ey_train, ex_test, ey_test = expected_arrays()
    assert x_train.shape == (5 * PER_BATCH, 32, 32, 3) and x_train.dtype == np.uint8
    assert x_test.shape == (PER_BATCH, 32, 32, 3) and x_test.dtype == np.uint8
    assert y_train.shape == (5 * PER_BATCH, 1) and y_train.dtype == np.uint8
    assert y_test.shape == (PER_BATCH, 1) and y_test.dtype == np.uint8
    np.testing.assert_array_equal(x_train, ex_train)
    np.testing.assert_array_equal(y_train[:, 0], ey_train)
    np.testing.assert_array_equal(x_test, ex_test)
    np.testing.assert_array_equal(y_test[:, 0], ey_test)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fake HOME and no MINICNN_* variables; returns the default cache path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("MINICNN_CIFAR10", raising=False)
    monkeypatch.delenv("MINICNN_CACHE", raising=False)
    return home / ".minicnn" / "datasets"


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


@pytest.fixture
def server():
    """Serves /good (the fake tarball), /short (announces all, sends half, closes), 404 else."""
    body = tar_bytes()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path not in ("/good", "/short"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if self.path == "/good" else body[:len(body) // 2])
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield {"base": base, "body": body, "md5": md5(body), "size": len(body), "hits": hits}
    httpd.shutdown()
    httpd.server_close()


# ------------------------------------------------------------------ local copies

def test_load_from_tarball(tmp_path, isolated):
    archive = write_tar(tmp_path / "dl" / "cifar-10-python.tar.gz")
    check_arrays(load_data(path=archive, verbose=False))
    check_arrays(load_data(path=str(archive), verbose=False))
    assert not isolated.exists()  # a given path never touches the cache


def test_load_from_extracted_folder(tmp_path):
    folder = write_folder(tmp_path / "data")
    check_arrays(load_data(path=folder, verbose=False))


def test_load_from_parent_folder(tmp_path):
    write_folder(tmp_path / "data")
    check_arrays(load_data(path=tmp_path / "data", verbose=False))


def test_load_from_folder_holding_the_tarball(tmp_path):
    write_tar(tmp_path / "data" / "cifar-10-python.tar.gz")
    check_arrays(load_data(path=tmp_path / "data", verbose=False))


@pytest.mark.parametrize("kind", ["tarball", "folder", "parent"])
def test_env_var(tmp_path, monkeypatch, kind, isolated):
    if kind == "tarball":
        target = write_tar(tmp_path / "x.tar.gz")
    else:
        target = write_folder(tmp_path / "data")
        target = target.parent if kind == "parent" else target
    monkeypatch.setenv("MINICNN_CIFAR10", str(target))
    check_arrays(load_data(verbose=False, download=False))
    assert not isolated.exists()


def test_path_argument_beats_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("MINICNN_CIFAR10", str(tmp_path / "nowhere"))
    check_arrays(load_data(path=write_tar(tmp_path / "a.tar.gz"), verbose=False))


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_path_is_file_not_found(tmp_path, monkeypatch, via_env, server):
    missing = tmp_path / "no" / "such.tar.gz"
    kwargs = dict(verbose=False, url=server["base"] + "/good", md5=server["md5"],
                  size=server["size"])
    if via_env:
        monkeypatch.setenv("MINICNN_CIFAR10", str(missing))
    else:
        kwargs["path"] = missing
    with pytest.raises(FileNotFoundError, match="such.tar.gz"):
        load_data(**kwargs)
    assert server["hits"] == []  # no silent fallback to the network


def test_folder_without_data_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        load_data(path=tmp_path / "empty", verbose=False)


def test_pixel_layout(tmp_path):
    """A marker at channel-first index (c*1024 + h*32 + w) of row n ends up at x[n, h, w, c]."""
    raw = pickle.loads(official_batches()["data_batch_1"], encoding="bytes")[b"data"]
    assert raw[MARK_N, MARK_C * 1024 + MARK_H * 32 + MARK_W] == MARK_VALUE
    (x_train, _), (x_test, _) = load_data(path=write_tar(tmp_path / "c.tar.gz"), verbose=False)
    assert np.argwhere(x_train == MARK_VALUE).tolist() == [[MARK_N, MARK_H, MARK_W, MARK_C]]
    assert not (x_test == MARK_VALUE).any()


# ------------------------------------------------------------------ cache folder

@pytest.mark.parametrize("how", ["argument", "env", "home"])
def test_cache_extracted_folder(tmp_path, monkeypatch, how, isolated):
    cache = {"argument": tmp_path / "c1", "env": tmp_path / "c2", "home": isolated}[how]
    write_folder(cache)
    if how == "env":
        monkeypatch.setenv("MINICNN_CACHE", str(cache))
    kwargs = {"cache_dir": cache} if how == "argument" else {}
    check_arrays(load_data(download=False, verbose=False, url=closed_port_url(), **kwargs))


def test_cache_tarball_is_verified_and_extracted(tmp_path):
    cache = tmp_path / "cache"
    archive = write_tar(cache / "cifar-10-python.tar.gz")
    check_arrays(load_data(cache_dir=cache, download=False, verbose=False,
                           md5=md5(archive.read_bytes())))
    assert sorted(os.listdir(cache)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert (cache / "cifar-10-batches-py" / "data_batch_5").is_file()
    archive.unlink()  # the extracted folder is now enough
    check_arrays(load_data(cache_dir=cache, download=False, verbose=False))


def test_cache_tarball_with_wrong_checksum(tmp_path):
    cache = tmp_path / "cache"
    archive = write_tar(cache / "cifar-10-python.tar.gz")
    with pytest.raises(DatasetError) as info:
        load_data(cache_dir=cache, download=False, verbose=False)  # official MD5
    message = str(info.value)
    assert cifar10.MD5 in message and md5(archive.read_bytes()) in message
    assert str(archive) in message
    assert os.listdir(cache) == ["cifar-10-python.tar.gz"]


def test_cache_tarball_with_missing_batch_leaves_no_folder(tmp_path):
    cache = tmp_path / "cache"
    files = official_batches()
    del files["test_batch"]
    archive = write_tar(cache / "cifar-10-python.tar.gz", files)
    with pytest.raises(DatasetError, match="test_batch"):
        load_data(cache_dir=cache, download=False, verbose=False, md5=md5(archive.read_bytes()))
    assert os.listdir(cache) == ["cifar-10-python.tar.gz"]  # no half-extracted folder


# ------------------------------------------------------------------ download

def test_download_then_cache(tmp_path, server, capsys):
    cache = tmp_path / "cache"
    result = load_data(cache_dir=cache, url=server["base"] + "/good", md5=server["md5"],
                       size=server["size"], verbose=True)
    check_arrays(result)
    assert server["hits"] == ["/good"]
    assert sorted(os.listdir(cache)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    assert (cache / "cifar-10-python.tar.gz").read_bytes() == server["body"]
    err = capsys.readouterr().err
    assert "100.0%" in err and "MB" in err
    # second call: served from the cache, the server is not asked again
    check_arrays(load_data(cache_dir=cache, url=closed_port_url(), verbose=False))
    assert server["hits"] == ["/good"]


def test_download_function(tmp_path, server, capsys):
    path = cifar10.download(url=server["base"] + "/good", md5=server["md5"],
                            size=server["size"], cache_dir=tmp_path / "c", verbose=False)
    assert path == tmp_path / "c" / "cifar-10-python.tar.gz"
    assert md5(path.read_bytes()) == server["md5"]
    assert os.listdir(tmp_path / "c") == ["cifar-10-python.tar.gz"]
    assert capsys.readouterr().err == ""  # verbose=False is silent


def test_download_into_default_cache(server, isolated):
    check_arrays(load_data(url=server["base"] + "/good", md5=server["md5"], size=None,
                           verbose=False))
    assert (isolated / "cifar-10-batches-py").is_dir()


@pytest.mark.parametrize("bad", ["md5", "size"])
def test_download_mismatch_leaves_nothing(tmp_path, server, bad):
    cache = tmp_path / "cache"
    wrong_md5 = "0" * 32 if bad == "md5" else server["md5"]
    wrong_size = server["size"] + 1 if bad == "size" else server["size"]
    with pytest.raises(DatasetError) as info:
        load_data(cache_dir=cache, url=server["base"] + "/good", md5=wrong_md5,
                  size=wrong_size, verbose=False)
    message = str(info.value)
    assert "/good" in message
    if bad == "md5":
        assert "checksum" in message and wrong_md5 in message and server["md5"] in message
    else:
        assert str(wrong_size) in message and str(server["size"]) in message
    assert not cache.exists()  # no file, and not the folder it made for it


def test_download_md5_mismatch_without_size(tmp_path, server):
    with pytest.raises(DatasetError, match="expected MD5 0{32}, got " + server["md5"]):
        cifar10.download(url=server["base"] + "/good", md5="0" * 32, size=None,
                         cache_dir=tmp_path / "c", verbose=False)
    assert not (tmp_path / "c").exists()


def test_download_cut_connection_leaves_nothing(tmp_path, server):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError) as info:
        load_data(cache_dir=cache, url=server["base"] + "/short", md5=server["md5"],
                  size=server["size"], verbose=True)
    message = str(info.value)
    assert "/short" in message and str(server["size"]) in message
    assert str(server["size"] // 2) in message
    assert not cache.exists()  # no file, and not the folder it made for it


def test_download_http_error_leaves_nothing(tmp_path, server):
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError, match="Not Found"):
        load_data(cache_dir=cache, url=server["base"] + "/missing", verbose=False)
    assert not cache.exists()  # no file, and not the folder it made for it


def test_no_network_and_no_local_copy(tmp_path):
    url = closed_port_url()
    with pytest.raises(DatasetError) as info:
        load_data(cache_dir=tmp_path / "cache", url=url, verbose=False)
    message = str(info.value)
    for part in (url, "path=", "--data PATH", "MINICNN_CIFAR10=", cifar10.URL):
        assert part in message
    assert not (tmp_path / "cache").exists()


def test_failed_download_keeps_a_cache_folder_that_was_there(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(DatasetError):
        load_data(cache_dir=cache, url=closed_port_url(), verbose=False)
    assert cache.is_dir() and os.listdir(cache) == []


def test_cached_repacked_archive_and_no_network_says_how_to_use_it(tmp_path, capsys):
    cache = tmp_path / "cache"
    archive = write_tar(cache / "cifar-10-python.tar.gz")  # valid, but not the official MD5
    url = closed_port_url()
    with pytest.raises(DatasetError) as info:
        load_data(cache_dir=cache, url=url, verbose=True)
    message = str(info.value)
    assert f"the cached archive {archive} fails its checksum (expected MD5 {cifar10.MD5}" in message
    assert md5(archive.read_bytes()) in message and url in message
    assert "pass it explicitly: load_data(path=...) or the example's --data" in message
    assert "No local copy was found" not in message
    assert "downloading again" in capsys.readouterr().err
    assert os.listdir(cache) == ["cifar-10-python.tar.gz"]  # the cached copy is left alone
    check_arrays(load_data(path=archive, verbose=False))  # and works when given by path


def test_download_false_never_touches_network(tmp_path, server):
    with pytest.raises(DatasetError) as info:
        load_data(cache_dir=tmp_path / "cache", download=False, url=server["base"] + "/good")
    assert "download=False" in str(info.value) and "MINICNN_CIFAR10=" in str(info.value)
    assert server["hits"] == []


def test_keyboard_interrupt_removes_partial_file(tmp_path, monkeypatch):
    class Response(io.BytesIO):
        headers = {"Content-Length": str(3 << 20)}
        calls = 0

        def read(self, n=-1):
            Response.calls += 1
            if Response.calls > 1:
                raise KeyboardInterrupt
            return b"x" * (1 << 20)

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response())
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        cifar10.download(url="http://example.invalid/x", md5=None, size=None, cache_dir=cache,
                         verbose=False)
    assert Response.calls == 2  # it did write a first chunk
    assert not cache.exists()  # no file, and not the folder it made for it


# ------------------------------------------------------------------ broken data

def test_corrupt_tarball(tmp_path):
    bad = tmp_path / "garbage.tar.gz"
    bad.write_bytes(os.urandom(5000))
    with pytest.raises(DatasetError, match="garbage.tar.gz.*truncated or corrupt"):
        load_data(path=bad, verbose=False)


@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_truncated_tarball(tmp_path, keep):
    raw = tar_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(DatasetError, match="cut.tar.gz.*truncated or corrupt"):
        load_data(path=cut, verbose=False)


@pytest.mark.parametrize("missing", NAMES)
@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_missing_batch(tmp_path, missing, form):
    files = official_batches()
    del files[missing]
    target = write_folder(tmp_path, files) if form == "folder" else write_tar(
        tmp_path / "t.tar.gz", files)
    with pytest.raises(DatasetError) as info:
        load_data(path=target, verbose=False)
    message = str(info.value)
    assert f"missing batch file(s) {missing} " in message and str(target) in message


@pytest.mark.parametrize("form", ["folder", "tarball"])
def test_batch_that_does_not_unpickle(tmp_path, form):
    files = official_batches()
    files["data_batch_3"] = b"this is not a pickle"
    target = write_folder(tmp_path, files) if form == "folder" else write_tar(
        tmp_path / "t.tar.gz", files)
    with pytest.raises(DatasetError, match="'data_batch_3'.*could not be unpickled"):
        load_data(path=target, verbose=False)


def _batch(data=None, labels=None, drop=None):
    batch = {b"data": np.zeros((4, 3072), np.uint8) if data is None else data,
             b"labels": [0, 1, 2, 3] if labels is None else labels}
    if drop:
        del batch[drop]
    return pickle.dumps(batch)


@pytest.mark.parametrize("raw, pattern", [
    (_batch(drop=b"data"), r"lacks the key b'data'"),
    (_batch(drop=b"labels"), r"lacks the key b'labels'"),
    (pickle.dumps([1, 2, 3]), r"holds a list, expected a dict"),
    (_batch(data=np.zeros((4, 3071), np.uint8)), r"shape \(n, 3072\), found a uint8 array of shape \(4, 3071\)"),
    (_batch(data=np.zeros((4, 3, 32, 32), np.uint8)), r"found a uint8 array of shape \(4, 3, 32, 32\)"),
    (_batch(data=np.zeros((4, 3072), np.float32)), r"uint8 .* found a float32 array"),
    (_batch(labels=[0, 1, 2]), r"must be 4 integers.*shape \(3,\)"),
    (_batch(labels=[0, 1, 2, 10]), r"0\.\.9, found values from 0 to 10"),
    (_batch(labels=[0, 1, 2, -1]), r"0\.\.9, found values from -1 to 2"),
])
def test_malformed_batch(tmp_path, raw, pattern):
    files = official_batches()
    files["test_batch"] = raw
    with pytest.raises(DatasetError, match=r"'test_batch' in .*" + pattern):
        load_data(path=write_folder(tmp_path, files), verbose=False)


# ------------------------------------------------------------------ real data

def test_real_shared_dataset():
    if not REAL.is_file():
        pytest.skip(f"real CIFAR-10 not available at {REAL}")
    (x_train, y_train), (x_test, y_test) = load_data(path=REAL, verbose=False)
    assert x_train.shape == (50000, 32, 32, 3) and y_train.shape == (50000, 1)
    assert x_test.shape == (10000, 32, 32, 3) and y_test.shape == (10000, 1)
    for a in (x_train, y_train, x_test, y_test):
        assert a.dtype == np.uint8
    assert np.bincount(y_train[:, 0], minlength=10).tolist() == [5000] * 10
    assert np.bincount(y_test[:, 0], minlength=10).tolist() == [1000] * 10
    assert y_train.max() == 9 and y_test.max() == 9
    assert 0 < x_train.mean() < 255  # not blank



def test_a_batch_that_would_run_code_is_refused(tmp_path):
    """Local copies are not checksummed, so unpickling must not run what a file asks."""
    import pickle as pickle_module

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    with pytest.raises(cifar10.DatasetError, match="refusing to load"):
        cifar10._parse_batch(pickle_module.dumps(Payload()), "data_batch_1", tmp_path / "x")
    assert not (tmp_path / "pwned").exists()


def test_make_folders_and_remove_empty_folders(tmp_path):
    from minicnn.fileio import make_folders, remove_empty_folders
    (tmp_path / "a").mkdir()
    made = make_folders(tmp_path / "a" / "b" / "c")
    assert made == [tmp_path / "a" / "b" / "c", tmp_path / "a" / "b"]  # innermost first
    (tmp_path / "a" / "b" / "keep.txt").write_text("x")
    remove_empty_folders(made)
    assert not (tmp_path / "a" / "b" / "c").exists()
    assert (tmp_path / "a" / "b" / "keep.txt").is_file()  # a folder holding a file stays
    assert make_folders(tmp_path / "a") == []  # nothing made, nothing to undo

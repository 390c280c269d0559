"""CIFAR-10, loaded like ``keras.datasets.cifar10.load_data()``.

``load_data()`` returns ``((x_train, y_train), (x_test, y_test))``: uint8
images of shape ``(50000, 32, 32, 3)`` / ``(10000, 32, 32, 3)`` (channels last)
and uint8 labels of shape ``(N, 1)`` with values 0..9 (names in ``CLASS_NAMES``).

Where the data comes from, first match wins (offline first):

1. A local copy: the ``path`` argument, else the environment variable
   ``MINICNN_CIFAR10``. It may be the ``cifar-10-python.tar.gz`` archive (read
   directly, no extraction, and *not* checksum-verified so that re-packed
   copies work), the extracted ``cifar-10-batches-py/`` folder, or a folder
   containing either of them. A path that does not exist is an error; there
   is no fallback to the cache or the network.
2. The cache folder: the ``cache_dir`` argument, else the environment variable
   ``MINICNN_CACHE``, else ``~/.minicnn/datasets``. An extracted
   ``cifar-10-batches-py/`` there is used as is; a ``cifar-10-python.tar.gz``
   there is used only if its MD5 matches, and is then extracted next to it.
3. Download of the official archive ``URL`` (unless ``download=False``) into
   the cache folder. The file is streamed into a temporary ``*.part`` file in
   the cache folder while its MD5 is computed, and renamed to its final name
   only when size and checksum match; extraction likewise goes to a temporary
   folder that is renamed into place only once every batch has been read and
   validated. On any failure (network error, cut connection, checksum
   mismatch, Ctrl-C) the temporary files are removed, so the cache never holds
   a partial file.

Problems raise ``DatasetError`` (a ``RuntimeError``) or ``FileNotFoundError``
with a message naming the file or URL, what was expected and what was found.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from minicnn.fileio import make_folders, remove_empty_folders

__all__ = ["load_data", "download", "default_cache_dir", "DatasetError", "CLASS_NAMES",
           "URL", "MD5", "SIZE", "ENV_PATH", "ENV_CACHE"]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
SIZE = 170498071
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
ENV_PATH = "MINICNN_CIFAR10"
ENV_CACHE = "MINICNN_CACHE"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCHES = TRAIN_BATCHES + (TEST_BATCH,)
_EXTRA_FILES = ("batches.meta", "readme.html")  # copied when extracting, never required
_PIXELS = 32 * 32 * 3
_CHUNK = 1 << 20

# Errors that mean "this archive is not a complete, readable tar(.gz)".
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)

PathLike = Union[str, "os.PathLike[str]"]
Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


class DatasetError(RuntimeError):
    """A dataset could not be found, downloaded, verified or read."""


def _local_copy_hint() -> str:
    return (f"To use a local copy, pass load_data(path=...), --data PATH, or set "
            f"{ENV_PATH}=/path/to/{ARCHIVE_NAME} (the archive, or the extracted "
            f"{FOLDER_NAME}/ folder); the official archive is {URL}")


def default_cache_dir() -> Path:
    """``$MINICNN_CACHE`` if set, else ``~/.minicnn/datasets`` (not created here)."""
    env = os.environ.get(ENV_CACHE)
    return Path(env).expanduser() if env else Path.home() / ".minicnn" / "datasets"


def _cache_dir(cache_dir: Optional[PathLike]) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


# --------------------------------------------------------------------------- reading

class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what a CIFAR batch holds (dicts, lists, bytes, NumPy arrays).

    Local copies are not checksummed, and an arbitrary pickle can run code when
    loaded; this refuses every other global, so a crafted file only raises.
    """
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data batch")
        return super().find_class(module, name)


def _parse_batch(raw: bytes, name: str, source: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Unpickle one batch and check it; returns (data (n, 3072) uint8, labels (n,) uint8)."""
    where = f"batch {name!r} in {source}"
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # pickle raises many types on garbage input
        raise DatasetError(f"{where} could not be unpickled (expected a pickled dict, "
                           f"{len(raw)} bytes read): {type(exc).__name__}: {exc}") from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{where} holds a {type(batch).__name__}, expected a dict "
                           f"with keys b'data' and b'labels'")
    found = {}
    for key in ("data", "labels"):
        value = batch.get(key.encode(), batch.get(key))
        if value is None:
            raise DatasetError(f"{where} lacks the key b'{key}' (keys found: "
                               f"{sorted(map(repr, batch))})")
        found[key] = value
    data, labels = found["data"], found["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _PIXELS:
        got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
               else type(data).__name__)
        raise DatasetError(f"{where}: b'data' must be a uint8 array of shape (n, {_PIXELS}), "
                           f"found a {got}")
    try:
        labels = np.asarray(labels)
    except Exception as exc:
        raise DatasetError(f"{where}: b'labels' is not a list of ints: {exc}") from exc
    if labels.ndim != 1 or len(labels) != len(data) or (
            len(labels) and labels.dtype.kind not in "iu"):
        raise DatasetError(f"{where}: b'labels' must be {len(data)} integers (one per row of "
                           f"b'data'), found {labels.dtype} values of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"{where}: labels must lie in 0..9, found values from "
                           f"{labels.min()} to {labels.max()}")
    return data, labels.astype(np.uint8)


def _assemble(batches: Dict[str, Tuple[np.ndarray, np.ndarray]], source: Path) -> Arrays:
    """Stack the batches in official order into Keras-style channels-last arrays."""
    missing = [name for name in BATCHES if name not in batches]
    if missing:
        raise DatasetError(f"{source} is missing batch file(s) {', '.join(missing)} "
                           f"(expected {', '.join(BATCHES)} in {FOLDER_NAME}/; found "
                           f"{', '.join(sorted(batches)) or 'none'})")

    def stack(names: Tuple[str, ...]) -> Tuple[np.ndarray, np.ndarray]:
        n = sum(len(batches[name][0]) for name in names)
        x = np.empty((n, 32, 32, 3), dtype=np.uint8)
        y = np.empty((n, 1), dtype=np.uint8)
        i = 0
        for name in names:
            data, labels = batches[name]
            # rows are channel-first (3 planes of 32x32): (k,3,32,32) -> (k,32,32,3)
            x[i:i + len(data)] = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y[i:i + len(data), 0] = labels
            i += len(data)
        return x, y

    return stack(TRAIN_BATCHES), stack((TEST_BATCH,))


def _read_folder(folder: Path) -> Arrays:
    batches = {}
    for name in BATCHES:
        file = folder / name
        if file.is_file():
            batches[name] = _parse_batch(file.read_bytes(), name, folder)
    return _assemble(batches, folder)


def _scan_archive(archive: Path, extract_to: Optional[Path] = None
                  ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Read the batches from a tar(.gz) in one sequential pass.

    Members are matched by base name. With ``extract_to``, the batch files (and
    ``batches.meta``/``readme.html``) are also written there.
    """
    batches = {}
    try:
        # "r|*" streams the archive once, front to back: no seeking in the gzip
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = member.name.rstrip("/").rsplit("/", 1)[-1]
                if not member.isfile() or name not in BATCHES + _EXTRA_FILES:
                    continue
                raw = tar.extractfile(member).read()
                if extract_to is not None:
                    (extract_to / name).write_bytes(raw)
                if name in BATCHES:
                    batches[name] = _parse_batch(raw, name, archive)
    except _ARCHIVE_ERRORS as exc:
        raise DatasetError(f"archive {archive} is truncated or corrupt (expected a complete "
                           f"{ARCHIVE_NAME} holding {FOLDER_NAME}/): {type(exc).__name__}: "
                           f"{exc}") from exc
    return batches


def _read_archive(archive: Path) -> Arrays:
    return _assemble(_scan_archive(archive), archive)


def _extract(archive: Path, cache: Path, verbose: bool) -> Arrays:
    """Extract (and validate) ``archive`` into ``cache/cifar-10-batches-py``; return the arrays."""
    if verbose:
        print(f"Extracting {archive} to {cache / FOLDER_NAME}", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{FOLDER_NAME}.", suffix=".part"))
    try:
        arrays = _assemble(_scan_archive(archive, extract_to=tmp), archive)
        try:
            os.replace(tmp, cache / FOLDER_NAME)
        except OSError:
            if not (cache / FOLDER_NAME).is_dir():  # else another process won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed
    return arrays


def _md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _load_local(path: Path, origin: str) -> Arrays:
    """Load from a user-given archive or folder (no checksum)."""
    if not path.exists():
        raise FileNotFoundError(f"CIFAR-10 path {str(path)!r} (from {origin}) does not exist; "
                                f"expected {ARCHIVE_NAME}, an extracted {FOLDER_NAME}/ folder "
                                f"or a folder containing one of them")
    if path.is_file():
        return _read_archive(path)
    if any((path / name).exists() for name in BATCHES):
        return _read_folder(path)
    if (path / FOLDER_NAME).is_dir():
        return _read_folder(path / FOLDER_NAME)
    if (path / ARCHIVE_NAME).is_file():
        return _read_archive(path / ARCHIVE_NAME)
    raise DatasetError(f"CIFAR-10 folder {path} (from {origin}) holds neither the batch files "
                       f"({', '.join(BATCHES)}) nor {FOLDER_NAME}/ nor {ARCHIVE_NAME}")


# --------------------------------------------------------------------------- download

def _progress(done: int, total: Optional[int]) -> str:
    if total:
        return f"\r  {ARCHIVE_NAME}: {100 * done / total:5.1f}% {done / 1e6:7.1f}/{total / 1e6:.1f} MB"
    return f"\r  {ARCHIVE_NAME}: {done / 1e6:7.1f} MB"


def download(url: str = URL, md5: Optional[str] = MD5, size: Optional[int] = SIZE,
             cache_dir: Optional[PathLike] = None, verbose: bool = True,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``<cache>/cifar-10-python.tar.gz`` and return that path.

    The file only appears under its final name once its size (if ``size`` is not
    None) and MD5 (if ``md5`` is not None) match; otherwise the partial file is
    deleted and ``DatasetError`` raised (``KeyboardInterrupt`` is re-raised
    after the clean-up).
    """
    cache = _cache_dir(cache_dir)
    made = make_folders(cache)
    dest = cache / ARCHIVE_NAME
    if verbose:
        print(f"Downloading {url} to {dest}", file=sys.stderr)
    part = tempfile.NamedTemporaryFile(dir=cache, prefix=f".{ARCHIVE_NAME}.", suffix=".part",
                                       delete=False)
    digest, done, shown, length = hashlib.md5(), 0, 0.0, None
    try:
        with part:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "minicnn"})
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    length = response.headers.get("Content-Length")
                    length = int(length) if length and length.isdigit() else None
                    if size is not None and length is not None and length != size:
                        raise DatasetError(f"download of {url} failed: the server announces "
                                           f"{length} bytes, expected {size}")
                    while chunk := response.read(_CHUNK):
                        part.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if verbose and time.monotonic() - shown > 0.25:
                            shown = time.monotonic()
                            sys.stderr.write(_progress(done, length or size))
                            sys.stderr.flush()
            except DatasetError:
                raise
            except (urllib.error.URLError, http.client.HTTPException, OSError,
                    ValueError) as exc:
                # refused, DNS, HTTP status, timeouts, resets, cut chunked body, bad URL
                reason = getattr(exc, "reason", None) or exc
                raise DatasetError(f"could not download {url}: {reason}. No local copy was "
                                   f"found in {cache}. {_local_copy_hint()}") from exc
            finally:
                if verbose and done:
                    sys.stderr.write(_progress(done, length or size) + "\n")
        if length is not None and done != length:
            raise DatasetError(f"download of {url} was cut: the connection closed after "
                               f"{done} of {length} bytes")
        if size is not None and done != size:
            raise DatasetError(f"download of {url} has the wrong size: expected {size} bytes, "
                               f"got {done}")
        got = digest.hexdigest()
        if md5 is not None and got != md5.lower():
            raise DatasetError(f"checksum mismatch for {url}: expected MD5 {md5}, got {got} "
                               f"({done} bytes); the download was discarded")
        os.replace(part.name, dest)
    except BaseException:
        try:
            os.unlink(part.name)
        except FileNotFoundError:
            pass
        remove_empty_folders(made)  # leave no empty cache folder behind
        raise
    return dest


_download = download  # load_data's ``download`` argument shadows the function


# --------------------------------------------------------------------------- entry point

def load_data(path: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
              download: bool = True, verbose: bool = True, url: str = URL,
              md5: Optional[str] = MD5, size: Optional[int] = SIZE) -> Arrays:
    """Return ``((x_train, y_train), (x_test, y_test))`` like Keras' ``cifar10.load_data()``.

    ``x_*`` are uint8 ``(N, 32, 32, 3)``, ``y_*`` uint8 ``(N, 1)``. See the module
    docstring for the order in which ``path``/``$MINICNN_CIFAR10``, the cache
    folder and the download are tried. ``url``/``md5``/``size`` select what is
    downloaded and what a cached archive is verified against.
    """
    if path is not None:
        return _load_local(Path(path).expanduser(), "the path argument")
    if os.environ.get(ENV_PATH):
        return _load_local(Path(os.environ[ENV_PATH]).expanduser(), f"${ENV_PATH}")

    cache = _cache_dir(cache_dir)
    if (cache / FOLDER_NAME).is_dir():
        return _read_folder(cache / FOLDER_NAME)
    archive, stale = cache / ARCHIVE_NAME, None  # stale: a cached archive's wrong MD5
    if archive.is_file():
        got = _md5sum(archive) if md5 is not None else None
        if md5 is None or got == md5.lower():
            return _extract(archive, cache, verbose)
        if not download:
            raise DatasetError(f"cached archive {archive} fails its checksum: expected MD5 "
                               f"{md5}, got {got}. Delete it, or pass it explicitly with "
                               f"load_data(path=...) to skip verification")
        if verbose:
            print(f"Cached {archive} fails its checksum (expected MD5 {md5}, got {got}); "
                  f"downloading again", file=sys.stderr)
        stale = got
    elif not download:
        raise DatasetError(f"CIFAR-10 not found: no {FOLDER_NAME}/ or {ARCHIVE_NAME} in the "
                           f"cache folder {cache}, and download=False. {_local_copy_hint()}")
    try:
        fresh = _download(url=url, md5=md5, size=size, cache_dir=cache, verbose=verbose)
    except DatasetError as exc:
        if stale is None:
            raise
        # The network's own reason: download's message would go on to say that no
        # local copy was found, and here one was.
        reason = getattr(exc.__cause__, "reason", None) or exc.__cause__ or exc
        raise DatasetError(f"the cached archive {archive} fails its checksum (expected MD5 "
                           f"{md5}, got {stale}) and downloading a fresh one from {url} "
                           f"failed: {reason}. To use the cached copy as it is (a re-packed "
                           "archive, say), pass it explicitly: load_data(path=...) or the "
                           "example's --data") from None
    return _extract(fresh, cache, verbose)

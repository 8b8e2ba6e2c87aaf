"""Opt-in downloads of public dataset files: a URL list, a SHA-256 each, an atomic write. Imports no torch.

Nothing here runs unless a user asked for it (``dlkit download NAME`` or a command's ``--download``). Files
go to ``$DLKIT_HOME/data/<dataset>/``; each is streamed into a temp file beside its target while it is
hashed, and renamed into place only when its SHA-256 matches, so an interrupted or altered download never
looks like data. A file already there with the right checksum is not fetched again.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dlkit.core.errors import DataError

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    name: str                # file name under the dataset's folder
    urls: tuple[str, ...]    # tried in order (mirrors)
    sha256: str
    size: int | None = None  # bytes, when known: a longer stream is cut off and refused


@dataclass(frozen=True)
class Dataset:
    name: str
    about: str               # what it is, its licence, where it comes from (one line)
    files: tuple[RemoteFile, ...]


_CHAR_RNN = "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data"
_MULTI30K = ("https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a"
             "/data/task1/raw")
_MNIST = ("https://ossci-datasets.s3.amazonaws.com/mnist", "https://storage.googleapis.com/cvdf-datasets/mnist")
_MULTI30K_SHA = {
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
}
_MNIST_SHA = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
}

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("tinyshakespeare", "Tiny Shakespeare, karpathy/char-rnn (MIT; the text is public domain)",
            (RemoteFile("input.txt", (f"{_CHAR_RNN}/tinyshakespeare/input.txt",),
                        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394),)),
    Dataset("multi30k", "Multi30k task 1, multi30k/dataset (non-commercial research and education)",
            tuple(RemoteFile(f, (f"{_MULTI30K}/{f}",), sha) for f, sha in _MULTI30K_SHA.items())),
    Dataset("mnist", "MNIST IDX files, torchvision's mirrors (LeCun, Cortes, Burges)",
            tuple(RemoteFile(f, tuple(f"{m}/{f}" for m in _MNIST), sha, size)
                  for f, (sha, size) in _MNIST_SHA.items())),
    Dataset("cifar10", "CIFAR-10 binary release, University of Toronto (cite Krizhevsky 2009)",
            (RemoteFile("cifar-10-binary.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",),
                        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", 170052171),)),
)}


def data_dir() -> Path:
    """``$DLKIT_HOME/data``: where downloaded datasets live."""
    from dlkit.core.zoo import home_dir

    return home_dir() / "data"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(file: RemoteFile, folder: str | os.PathLike, timeout: float = 60.0) -> Path:
    """``folder/file.name`` with the right SHA-256: kept when already there, else fetched from the first URL
    that works. Raises one :class:`DataError` line naming the file when no URL gives the right bytes."""
    target = Path(folder) / file.name
    if target.is_file() and sha256_file(target) == file.sha256:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create '{target.parent}': {e.strerror or e}") from None
    reasons = []
    for url in file.urls:
        try:
            _fetch_one(url, file, target, timeout)
            return target
        except (OSError, ValueError, urllib.error.URLError) as e:  # HTTPError and timeouts are OSErrors too
            reasons.append(f"{url}: {_reason(e)}")
    raise DataError(f"could not download {file.name}: " + "; ".join(reasons))


def _fetch_one(url: str, file: RemoteFile, target: Path, timeout: float) -> None:
    tmp = target.with_name(f".{target.name}.part{os.getpid()}")
    h, n = hashlib.sha256(), 0
    limit = file.size if file.size is not None else 1 << 34
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
            while chunk := r.read(CHUNK):
                n += len(chunk)
                if n > limit:
                    raise ValueError(f"more than the expected {limit:,} bytes")
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != file.sha256:
            raise ValueError(f"SHA-256 {h.hexdigest()[:16]}... is not the expected {file.sha256[:16]}... "
                             "(file not kept)")
        os.replace(tmp, target)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e)
    return str(reason).splitlines()[0][:160] if str(reason) else type(e).__name__


def download(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Every file of dataset ``name`` in ``root/name`` (default ``$DLKIT_HOME/data``), checked."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}': dlkit can download {', '.join(DATASETS)}", exit_code=2)
    folder = Path(root if root is not None else data_dir()) / name
    return [fetch(f, folder) for f in DATASETS[name].files]

"""Reading ``.npz`` data files with a cap on memory, without pickle and without numpy's advice.

* ``open_npz(path, what="dataset", *, limit=NPZ_LIMIT) -> NpzFile``: a regular file, checked as a zip
  (member count, the sizes the zip declares) and member by member from each ``.npy`` header (dtype,
  shape) *before* any array is loaded. A member of Python objects, a pickle, a ``.safetensors`` model or a
  plain ``.npy`` given where a dataset ``.npz`` is meant is one :class:`~dlkit.core.errors.DataError` line
  that says what the file is; numpy's "allow_pickle=" advice never reaches the user.
* ``NpzFile.files``, ``key in npz``, ``npz.shape(key)``, ``npz.dtype(key)``, ``npz[key]`` (loaded on
  demand, ``allow_pickle=False``, at most ``limit`` bytes in all).

Why the header and not the declared size alone: a zip's declared sizes can lie, but the bytes read for
an array are exactly ``prod(shape) * itemsize`` from its header, so checking that against the cap (and
against the declared size, to catch a truncated or crafted member) bounds what loading can allocate.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from dlkit.core.errors import DataError
from dlkit.core.io import human_bytes, quote, regular_file

NPZ_LIMIT = 1_000_000_000  # bytes of arrays one .npz may hold (MNIST: 55 MB, CIFAR-10 as JPEG: 60 MB)
MAX_MEMBERS = 256


def _what_is(path: Path) -> str | None:
    """A sentence for a file that is not a zip at all, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "is empty"
    if head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05":
        return "is a Python pickle, not a dataset .npz (dlkit never unpickles)"
    if head[:6] == b"\x93NUMPY":
        return "is a single .npy array, not a dataset .npz (an archive of named arrays)"
    if len(head) >= 9 and head[8:9] == b"{":
        return "looks like a model file (.safetensors), not a dataset .npz"
    return None


class NpzFile:
    """A checked ``.npz``: member headers read, nothing loaded yet."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, headers: dict, limit: int, what: str):
        self.path, self._zf, self._headers, self.limit, self.what = path, zf, headers, limit, what
        self._members = {k[:-4] if k.endswith(".npy") else k: k for k in headers}
        self.files = list(self._members)
        self._loaded = 0

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def shape(self, key: str) -> tuple[int, ...]:
        return self._headers[self._members[key]][0]

    def dtype(self, key: str) -> np.dtype:
        return self._headers[self._members[key]][2]

    def __getitem__(self, key: str) -> np.ndarray:
        name = self._members[key]
        shape, fortran, dtype, nbytes = self._headers[name]
        if self._loaded + nbytes > self.limit:
            raise DataError(f"'{quote(self.path)}': its arrays take more than {human_bytes(self.limit)}; "
                            f"dlkit loads at most {human_bytes(self.limit)} from one .npz")
        try:
            with self._zf.open(name) as f:
                a = np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"'{quote(self.path)}': array '{quote(key)}' cannot be read "
                            f"({quote(str(e).splitlines()[0] if str(e) else type(e).__name__)})") from None
        self._loaded += nbytes
        return a

    def close(self) -> None:
        self._zf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, what: str):
    """(shape, fortran, dtype, nbytes) of one member from its .npy header, checked against the zip entry."""
    fmt = np.lib.format
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = reader(f, max_header_size=10000)
            header_len = f.tell() if f.seekable() else 128
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
        raise DataError(f"'{quote(path)}' is not a {what} .npz: member '{quote(info.filename)}' is not an "
                        f"array ({quote(str(e).splitlines()[0] if str(e) else type(e).__name__)})") from None
    if dtype.hasobject:
        raise DataError(f"'{quote(path)}' is not a {what} .npz (it holds Python objects in "
                        f"'{quote(info.filename)}'; dlkit never unpickles)")
    n = 1
    for d in shape:
        n *= int(d)
    nbytes = n * dtype.itemsize
    if nbytes > info.file_size:  # the header claims more data than the member holds
        raise DataError(f"'{quote(path)}' is damaged: array '{quote(info.filename)}' claims {human_bytes(nbytes)} "
                        f"but holds {human_bytes(max(0, info.file_size - header_len))}")
    return tuple(int(d) for d in shape), fortran, dtype, nbytes


def open_npz(path: str | os.PathLike, what: str = "dataset", *, limit: int = NPZ_LIMIT) -> NpzFile:
    """A checked :class:`NpzFile` (see the module docstring); every refusal is one DataError line."""
    p = regular_file(path, f"{what} file")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        reason = _what_is(p) or "is not an .npz file (not a zip archive)"
        raise DataError(f"'{quote(p)}' {reason}") from None
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > MAX_MEMBERS:
        zf.close()
        raise DataError(f"'{quote(p)}' holds {len(infos)} members; a {what} .npz holds a few arrays")
    declared = sum(i.file_size for i in infos)
    if declared > limit:
        zf.close()
        raise DataError(f"'{quote(p)}' would take {human_bytes(declared)} once decompressed; dlkit reads at most "
                        f"{human_bytes(limit)} from one .npz (a crafted or wrong file?)")
    headers = {}
    try:
        for info in infos:
            headers[info.filename] = _header(zf, info, p, what)
    except DataError:
        zf.close()
        raise
    return NpzFile(p, zf, headers, limit, what)

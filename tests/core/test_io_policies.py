"""The shared input/output policies: guard_output, capped readers (.gz, .npz), regular files only, quote."""

import gzip
import os
import pickle
import threading
import zipfile

import numpy as np
import pytest

from dlkit.core.errors import DataError, ModelFileError, OutputError
from dlkit.core.io import guard_output, quote, read_bytes, read_text, regular_file
from dlkit.core.npz import open_npz


# ---------------------------------------------------------------- guard_output
def test_guard_output_never_writes_over_an_input(tmp_path):
    photo = tmp_path / "x.png"
    photo.write_bytes(b"img")
    for out in (photo, tmp_path / "." / "x.png"):
        for overwrite in (False, True):
            with pytest.raises(OutputError, match="is an input file"):
                guard_output(out, inputs=[photo], overwrite=overwrite)
    link = tmp_path / "link.png"
    os.link(photo, link)  # same inode, other name
    with pytest.raises(OutputError, match="is an input file"):
        guard_output(link, inputs=[photo], overwrite=True)
    assert photo.read_bytes() == b"img"


def test_guard_output_existing_file_needs_overwrite(tmp_path):
    out = tmp_path / "r.png"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        guard_output(out)
    assert guard_output(out, overwrite=True) == out
    with pytest.raises(OutputError, match="is a folder"):
        guard_output(tmp_path)
    new = tmp_path / "sub" / "deeper" / "n.png"
    assert guard_output(new, inputs=[out]) == new and new.parent.is_dir()
    assert guard_output(os.devnull) == __import__("pathlib").Path(os.devnull)  # a device is a stream


def test_guard_output_message_is_one_short_line(tmp_path):
    out = tmp_path / ("a" * 200) / ("b" * 200) / "x.png"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"x")
    with pytest.raises(OutputError) as e:
        guard_output(out)
    assert "\n" not in str(e.value) and len(str(e.value)) < 200 and "--overwrite" in str(e.value)


# ---------------------------------------------------------------- regular files, FIFOs
def test_regular_file_refuses_fifo_folder_missing(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="is a FIFO or pipe, not a regular file"):
        regular_file(fifo, "--data")
    with pytest.raises(DataError, match="is a folder"):
        regular_file(tmp_path)
    with pytest.raises(ModelFileError, match="does not exist"):
        regular_file(tmp_path / "no", "model file", ModelFileError)
    f = tmp_path / "f"
    f.write_bytes(b"1")
    assert regular_file(f) == f


def test_model_fifo_is_refused_not_hung(tmp_path):
    from dlkit.core.modelfile import read_header

    fifo = tmp_path / "m.safetensors"
    os.mkfifo(fifo)  # no writer: opening it would block for ever
    with pytest.raises(ModelFileError, match="FIFO"):
        read_header(fifo)


def test_models_listing_with_a_fifo_in_home(tmp_path, monkeypatch):
    from dlkit.core.zoo import list_models

    (tmp_path / "models").mkdir()
    os.mkfifo(tmp_path / "models" / "evil.safetensors")
    monkeypatch.setenv("DLKIT_HOME", str(tmp_path))
    rows = [r for r in list_models() if r["name"] == "evil"]
    assert len(rows) == 1 and "FIFO" in rows[0]["error"]


def test_read_text_from_a_fifo_and_process_substitution(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "wb") as f:
            f.write(gzip.compress("a dog\nein Hund\n".encode()))

    t = threading.Thread(target=writer)
    t.start()
    assert read_text(fifo, "caption file") == "a dog\nein Hund\n"
    t.join()
    r, w = os.pipe()  # what bash's <(...) gives: /dev/fd/N
    os.write(w, b"two\nlines\n")
    os.close(w)
    try:
        assert read_text(f"/dev/fd/{r}") == "two\nlines\n"
    finally:
        os.close(r)


# ---------------------------------------------------------------- capped readers
def test_gzip_bomb_stops_at_the_cap(tmp_path):
    bomb = tmp_path / "captions.txt.gz"
    with gzip.open(bomb, "wb") as f:
        for _ in range(64):
            f.write(b"a" * (1 << 20))
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DataError, match="holds more than 10.5 MB once decompressed"):
        read_text(bomb, "caption file", limit=10 << 20)
    assert len(read_bytes(bomb, limit=64 << 20)) == 64 << 20
    plain = tmp_path / "big.txt"
    plain.write_bytes(b"b" * 5000)
    with pytest.raises(DataError, match="holds more than 4.0 KB;"):
        read_bytes(plain, limit=4000)


def test_damaged_gzip_is_one_line(tmp_path):
    f = tmp_path / "t.gz"
    f.write_bytes(gzip.compress(b"hello world\n" * 100)[:40])
    with pytest.raises(DataError, match="damaged gzip"):
        read_text(f)


def _npz_bomb(path, n):
    """A zip whose one member claims and holds ``n`` zero bytes (a few KB on disk per MB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("x_train.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (n,)})
            f.write(b"\0" * n)


def test_npz_sizes_checked_before_loading(tmp_path):
    _npz_bomb(tmp_path / "bomb.npz", 50_000_000)
    assert (tmp_path / "bomb.npz").stat().st_size < 200_000
    with pytest.raises(DataError, match="would take 50.0 MB once decompressed; dlkit reads at most 10.0 MB"):
        open_npz(tmp_path / "bomb.npz", limit=10_000_000)


def test_npz_header_claiming_more_than_the_member_holds(tmp_path):
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as zf:
        with zf.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
            f.write(b"\0" * 64)
    with pytest.raises(DataError, match="is damaged: array 'x.npy' claims 8.0 GB"):
        open_npz(tmp_path / "lie.npz")


def test_npz_says_what_a_wrong_file_is(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    np.save(tmp_path / "one.npy", np.zeros(3))
    cases = {"obj.npz": "it holds Python objects", "p.npz": "is a Python pickle, not a dataset .npz",
             "one.npy": "single .npy array"}
    for name, text in cases.items():
        with pytest.raises(DataError) as e:
            open_npz(tmp_path / name)
        assert text in str(e.value) and "allow_pickle" not in str(e.value)


def test_npz_reads_arrays(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", x=np.arange(12, dtype=np.uint8).reshape(3, 4), y=np.arange(3))
    with open_npz(tmp_path / "d.npz") as z:
        assert z.files == ["x", "y"] and "x" in z and z.shape("x") == (3, 4)
        assert z["x"].sum() == 66 and z.dtype("y").kind == "i"


def test_quote_cuts_long_and_multiline_input():
    assert quote("short") == "short"
    q = quote("a" * 10**6)
    assert len(q) < 120 and q.endswith("(1,000,000 characters)")
    assert "\n" not in quote("x\n" * 100)


# ---------------------------------------------------------------- threads, seeds, exit codes
def test_threads_are_capped_at_the_cores():
    from dlkit.core.threads import available_cores, choose_threads

    said = []
    assert choose_threads(100000, warn=said.append) == available_cores()
    assert len(said) == 1 and "100,000" in said[0]
    assert choose_threads(1, warn=said.append) == 1 and len(said) == 1


def test_doctor_takes_threads(invoke):
    r = invoke("doctor", "--threads", "100000")
    assert r.exit_code == 0 and "threads" in r.stdout and "more than the" in r.stderr


def test_seed_bounds():
    from dlkit.core.errors import UsageError
    from dlkit.core.runtime import check_seed

    check_seed(0)
    check_seed(2**32 - 1)
    for bad in (-1, 10**23):
        with pytest.raises(UsageError, match="--seed"):
            check_seed(bad)


@pytest.mark.parametrize("args", [
    ["caption-train", "--data", "MISSING"],
    ["gan-train", "--dataset", "mnist", "--data", "MISSING"],
    ["gan-eval", "-m", "mnist-dcgan", "--dataset", "mnist", "--data", "MISSING"],
    ["fit-random-labels", "--dataset", "mnist", "--data", "MISSING"],
    ["lm-sample", "--model", "MISSING"],
])
def test_a_missing_input_file_is_exit_2_everywhere(invoke, tmp_path, args):
    r = invoke(*[str(tmp_path / "none.npz") if a == "MISSING" else a for a in args], "--out"
               if args[0].endswith("train") or args[0] == "fit-random-labels" else "--seed",
               tmp_path / "o" if args[0].endswith("train") or args[0] == "fit-random-labels" else "0")
    assert r.exit_code == 2, r.stderr
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr

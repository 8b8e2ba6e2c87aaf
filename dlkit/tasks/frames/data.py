"""Moving MNIST (Srivastava, Mansimov and Salakhutdinov 2015) generated from MNIST digits, and its standard file.

The protocol of the paper's generator: a 64x64 canvas, 2 digits of 28x28, 20 frames (10 in, 10 out). Each digit
starts at a uniform position (top-left corner in [0, 36]^2) with a uniform direction and moves at a constant
speed of 0.1 of the free range (3.6 px) per frame, bouncing off the walls (the velocity component flips when a
coordinate leaves [0, 1]); the position is advanced before each frame is drawn and truncated to whole pixels, and
the digits are combined with a pixel-wise max. Everything is vectorised over sequences, digits and frames.

* Training sequences come from MNIST *train* digits, made on the fly: batch ``step`` of rank ``rank`` is drawn
  from ``numpy.random.default_rng([seed, step, rank])``, so a resumed run sees exactly the batches an
  uninterrupted one would, and DDP ranks see different ones.
* The test set is 10,000 sequences from MNIST *test* digits, in chunks of 100: chunk ``c`` is drawn from
  ``default_rng([TEST_SEED, c])`` (TEST_SEED = 2015), so its first N sequences do not depend on how many are read.
* ``mnist_test_seq.npy`` (uint8 (20, N, 64, 64), the file torchvision's MovingMNIST reads) is opened as a
  memory map after its header was checked against the file's size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlkit.core.errors import DataError
from dlkit.core.io import human_bytes, quote, regular_file

CANVAS, DIGIT, FRAMES, T_IN, DIGITS = 64, 28, 20, 10, 2
STEP_LENGTH = 0.1  # Srivastava et al.'s generator: of the free range per frame
TEST_SEED, TEST_SIZE, CHUNK = 2015, 10_000, 100
VAL_SEED = 7  # validation during training: sequences of *train* digits with another seed (fit, not the test)


def trajectories(rng: np.random.Generator, n: int, frames: int = FRAMES, canvas: int = CANVAS,
                 digit: int = DIGIT, step_length: float = STEP_LENGTH) -> np.ndarray:
    """Top-left corners (n, frames, 2) int of ``n`` bouncing digits, as (row, col) in [0, canvas - digit]."""
    pos = rng.random((n, 2))  # (n, 2) in [0, 1)
    theta = rng.random(n) * 2 * np.pi
    vel = np.stack([np.sin(theta), np.cos(theta)], axis=1)  # (n, 2): unit speed
    out = np.empty((n, frames, 2))
    for t in range(frames):  # a loop over 20 frames, vectorised over digits
        pos = pos + vel * step_length
        low, high = pos <= 0.0, pos >= 1.0
        vel = np.where(low | high, -vel, vel)
        pos = np.clip(pos, 0.0, 1.0)
        out[:, t] = pos
    return (out * (canvas - digit)).astype(np.int64)


def compose(digits: np.ndarray, corners: np.ndarray, canvas: int = CANVAS) -> np.ndarray:
    """Paste ``digits`` uint8 (n, D, h, w) at ``corners`` (n, D, T, 2) onto (n, T, canvas, canvas) with a max."""
    n, d, h, w = digits.shape
    t = corners.shape[2]
    video = np.zeros((n, t, canvas, canvas), dtype=np.uint8)
    seq = np.arange(n)[:, None, None, None]  # (n, 1, 1, 1)
    frame = np.arange(t)[None, :, None, None]  # (1, T, 1, 1)
    for k in range(d):  # D = 2 pastes; each writes all sequences and frames at once
        rows = corners[:, k, :, 0, None, None] + np.arange(h)[None, None, :, None]  # (n, T, h, 1)
        cols = corners[:, k, :, 1, None, None] + np.arange(w)[None, None, None, :]  # (n, T, 1, w)
        patch = video[seq, frame, rows, cols]  # (n, T, h, w)
        video[seq, frame, rows, cols] = np.maximum(patch, digits[:, k, None])
    return video


def moving_mnist(digits: np.ndarray, n: int, rng: np.random.Generator, frames: int = FRAMES,
                 num_digits: int = DIGITS, canvas: int = CANVAS) -> np.ndarray:
    """``n`` sequences uint8 (n, frames, canvas, canvas) from the digit images ``digits`` uint8 (N, h, w)."""
    h = digits.shape[1]
    corners = trajectories(rng, n * num_digits, frames, canvas, h).reshape(n, num_digits, frames, 2)
    idx = rng.integers(0, len(digits), size=(n, num_digits))
    return compose(digits[idx], corners, canvas)


def train_batch(digits: np.ndarray, batch: int, seed: int, step: int, rank: int = 0) -> np.ndarray:
    """Training batch ``step`` of ``rank``: uint8 (batch, 20, 64, 64), the same for the same (seed, step, rank)."""
    return moving_mnist(digits, batch, np.random.default_rng([seed, step, rank]))


def fixed_sequences(digits: np.ndarray, start: int, count: int, seed: int = TEST_SEED) -> np.ndarray:
    """Sequences ``start`` .. ``start + count`` of the fixed set drawn with ``seed`` (chunks of 100)."""
    first, last = start // CHUNK, (start + count - 1) // CHUNK
    parts = [moving_mnist(digits, CHUNK, np.random.default_rng([seed, c])) for c in range(first, last + 1)]
    video = np.concatenate(parts)
    off = start - first * CHUNK
    return video[off:off + count]


def read_digits(path: str | os.PathLike, split: str) -> np.ndarray:
    """The MNIST digits uint8 (N, 28, 28) of ``split`` from an mnist.npz (dlkit's MNIST reader)."""
    from dlkit.vision.datasets import load_mnist

    images = load_mnist(path, split).images  # (N, 1, H, W) uint8
    if len(images) == 0:
        raise DataError(f"'{quote(path)}' holds no {split} digits")
    if images.shape[-1] > CANVAS or images.shape[-2] > CANVAS:
        raise DataError(f"'{quote(path)}': digits of {tuple(images.shape[-2:])} px do not fit a {CANVAS} px canvas")
    return images[:, 0].numpy()


# ------------------------------------------------------------------ sequence sources for evaluation
@dataclass
class Sequences:
    """A read-only set of sequences: the generated test set or a mnist_test_seq.npy memory map."""

    name: str
    size: int
    digits: np.ndarray | None = None  # generated: the test digits
    array: np.ndarray | None = None  # file: (T, N, H, W) memory map
    seed: int = TEST_SEED

    def get(self, start: int, count: int) -> np.ndarray:
        """uint8 (count, T, H, W)."""
        if self.digits is not None:
            return fixed_sequences(self.digits, start, count, self.seed)
        return np.ascontiguousarray(self.array[:, start:start + count].transpose(1, 0, 2, 3))


def open_sequences(path: str | os.PathLike, size: int = TEST_SIZE) -> Sequences:
    """``mnist.npz`` -> the generated test set (its first ``size`` sequences, at most 10,000); ``*.npy`` -> the
    standard file (its first ``size``)."""
    p = regular_file(path, "Moving MNIST data")
    if p.suffix.lower() == ".npy":
        arr = open_moving_mnist_npy(p)
        return Sequences(p.name, min(size, arr.shape[1]), array=arr)
    return Sequences(f"Moving MNIST test (generated, seed {TEST_SEED})", min(size, TEST_SIZE), digits=read_digits(p, "test"))


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of a .npy file, read without loading or unpickling it."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            version = fmt.read_magic(f)
            reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = reader(f, max_header_size=10000)
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"'{quote(path)}' is not a readable .npy array ({quote(first)})") from None
    if dtype.hasobject:
        raise DataError(f"'{quote(path)}' holds Python objects; dlkit never unpickles")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise DataError(f"'{quote(path)}' is truncated: its header promises {human_bytes(need)}, the file has "
                        f"{human_bytes(size)}")
    return tuple(int(d) for d in shape), dtype, fortran, offset


def open_moving_mnist_npy(path: Path) -> np.ndarray:
    """The standard ``mnist_test_seq.npy``: uint8 (T, N, 64, 64), T >= 2, as a read-only memory map."""
    shape, dtype, fortran, _ = npy_header(path)
    if dtype != np.uint8 or len(shape) != 4 or shape[0] < 2 or shape[1] < 1 or fortran:
        raise DataError(f"'{quote(path)}' is not in the Moving MNIST format: expected uint8 (frames, sequences, H, W) "
                        f"as in mnist_test_seq.npy, found {dtype} {shape}")
    return np.load(path, mmap_mode="r", allow_pickle=False)

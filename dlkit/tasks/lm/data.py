"""Tokenizers (characters, byte-level BPE) and a memory-mapped token corpus for language modelling.

The corpus is encoded once, chunk by chunk, into ``tokens.bin`` in the run's output folder and read back
with ``np.memmap``, so a 1 GB text file never has to sit in RAM as Python strings or int64 tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from dlkit.core.atomic import atomic_write, atomic_write_bytes
from dlkit.core.errors import DataError
from dlkit.core.io import spool_streams, text_files

CHUNK_CHARS = 1 << 22  # 4M characters per encoding chunk


# ------------------------------------------------------------------ tokenizers
class CharTokenizer:
    """One token per Unicode character seen in the training text (nanoGPT's shakespeare_char)."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = "".join(sorted(set(chars)))
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        return sorted({c for c in text if c not in self._index})

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        ids = np.clip(ids, 0, len(self._codes) - 1)
        if len(codes) and not np.array_equal(self._codes[ids], codes):
            raise DataError(f"text has characters the model does not know: {_show(self.unknown(text))}")
        return ids.astype(np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_meta(self) -> dict:
        return {"type": "char", "chars": self.chars}


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) learned on the corpus with Hugging Face ``tokenizers``."""

    kind = "bpe"

    def __init__(self, tok):
        self.tok = tok

    @classmethod
    def train(cls, files: list[Path], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train_from_iterator(_iter_chunks(files), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def unknown(self, text: str) -> list[str]:
        return []  # bytes cover every string

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.tok.encode(text).ids, dtype=np.int64)

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids))

    def to_meta(self) -> dict:
        return {"type": "bpe", "json": self.tok.to_str()}


def tokenizer_from_meta(meta: dict):
    """A tokenizer from its saved form; a malformed one raises ValueError (callers name the file)."""
    kind = meta.get("type") if isinstance(meta, dict) else None
    if kind == "char" and isinstance(meta.get("chars"), str) and meta["chars"]:
        return CharTokenizer(meta["chars"])
    if kind == "bpe" and isinstance(meta.get("json"), str):
        from tokenizers import Tokenizer

        try:
            return BPETokenizer(Tokenizer.from_str(meta["json"]))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise ValueError(f"broken BPE tokenizer ({str(e).splitlines()[0][:100]})") from None
    raise ValueError(f"unknown or malformed tokenizer {str(kind)[:20]!r}")


def _show(chars: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(c) for c in chars[:limit])
    return shown + (f" and {len(chars) - limit} more" if len(chars) > limit else "")


# ------------------------------------------------------------------ corpus
def _iter_chunks(files: list[Path]) -> Iterator[str]:
    """The text of all files, in chunks of about CHUNK_CHARS, files joined by a newline."""
    for i, f in enumerate(files):
        try:
            with open(f, encoding="utf-8") as fh:
                while chunk := fh.read(CHUNK_CHARS):
                    yield chunk
        except UnicodeDecodeError as e:
            raise DataError(f"data file '{f}' is not UTF-8 text (bad byte at offset {e.start})") from None
        if i < len(files) - 1:
            yield "\n"


@dataclass
class Corpus:
    """Token ids of the training and validation text, memory-mapped."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: object
    source: str

    def batch(self, split: str, offsets: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.train if split == "train" else self.val
        # one fancy-indexing gather of all B windows (no Python loop over the batch): (B, T+1)
        idx = offsets.numpy().astype(np.int64)[:, None] + np.arange(block_size + 1)
        t = torch.from_numpy(data[idx].astype(np.int64))
        return t[:, :-1].contiguous(), t[:, 1:].contiguous()  # x, y: (B, T)


def _signature(files: list[Path]) -> list:
    return [[str(f.resolve()), f.stat().st_size, int(f.stat().st_mtime)] for f in files]


def _encode_to(path: Path, files: list[Path], tok) -> int:
    """Stream the encoded text into ``path`` chunk by chunk (atomically: a failed run leaves no half file)."""
    dtype = np.uint16 if tok.vocab_size <= 65535 else np.uint32
    n = 0

    def write(out) -> None:
        nonlocal n
        for chunk in _iter_chunks(files):
            ids = tok.encode(chunk).astype(dtype)
            out.write(ids.tobytes())
            n += len(ids)

    atomic_write(path, write)
    return n


def _char_vocab(files: list[Path]) -> str:
    seen: set[str] = set()
    for chunk in _iter_chunks(files):
        seen.update(chunk)
    return "".join(sorted(seen))


def prepare_corpus(
    data: Path, cache_dir: Path, tokenizer: str = "char", vocab_size: int = 4096,
    val_fraction: float = 0.1, val_path: Path | None = None, tokenizer_meta: dict | None = None,
) -> Corpus:
    """Encode ``data`` (a file or folder) into ``cache_dir`` once and memory-map it.

    Without ``val_path`` the last ``val_fraction`` of the tokens is the validation split (for a char
    tokenizer: of the characters, nanoGPT's 90/10 split). ``tokenizer_meta`` reuses a saved tokenizer
    (on --resume)."""
    # a FIFO or <(...) is read once, into the run folder: the char vocabulary needs a second pass
    files = spool_streams(text_files(data), cache_dir, "data")
    val_files = spool_streams(text_files(val_path), cache_dir, "val") if val_path else []
    sig = {"files": _signature(files), "val": _signature(val_files), "tokenizer": tokenizer,
           "vocab_size": vocab_size, "val_fraction": val_fraction}
    index = cache_dir / "tokens.json"
    if index.exists() and tokenizer_meta is not None:
        info = json.loads(index.read_text())
        if info.get("signature") == json.loads(json.dumps(sig)):
            return _open(cache_dir, info, tokenizer_from_meta(tokenizer_meta), str(data))
    if tokenizer_meta is not None:
        tok = tokenizer_from_meta(tokenizer_meta)
    elif tokenizer == "char":
        tok = CharTokenizer(_char_vocab(files + val_files))
    elif tokenizer == "bpe":
        tok = BPETokenizer.train(files, vocab_size)
    else:
        raise DataError(f"unknown tokenizer {tokenizer!r} (char or bpe)")
    n = _encode_to(cache_dir / "tokens.bin", files, tok)
    n_val = _encode_to(cache_dir / "tokens-val.bin", val_files, tok) if val_files else 0
    info = {"signature": sig, "n": n, "n_val": n_val, "dtype": "uint16" if tok.vocab_size <= 65535 else "uint32",
            "tokenizer": tok.to_meta()}
    atomic_write_bytes(index, json.dumps(info).encode())
    return _open(cache_dir, info, tok, str(data))


def _open(cache_dir: Path, info: dict, tok, source: str) -> Corpus:
    dtype = np.dtype(info["dtype"])
    if info["n"] == 0:
        raise DataError(f"training text '{source}' holds no tokens")
    tokens = np.memmap(cache_dir / "tokens.bin", dtype=dtype, mode="r", shape=(info["n"],))
    if info["n_val"]:
        train = tokens
        val = np.memmap(cache_dir / "tokens-val.bin", dtype=dtype, mode="r", shape=(info["n_val"],))
    else:
        cut = int(info["n"] * (1 - info["signature"]["val_fraction"]))
        train, val = tokens[:cut], tokens[cut:]
    return Corpus(train, val, tok, source)


def check_length(corpus: Corpus, block_size: int) -> None:
    for name, split in (("training", corpus.train), ("validation", corpus.val)):
        if len(split) <= block_size + 1:
            raise DataError(
                f"the {name} split of '{corpus.source}' has {len(split)} tokens, fewer than one context window "
                f"({block_size + 1}); give more text or a smaller --block-size"
            )


def make_text(n_chars: int = 20_000, seed: int = 0) -> str:
    """Tiny synthetic corpus for tests: a small grammar of repeated, learnable phrases."""
    rng = np.random.default_rng(seed)
    words = ["the cat", "a dog", "my king", "sweet love", "the night"]
    verbs = ["sleeps", "runs", "speaks", "sings"]
    out, size = [], 0
    while size < n_chars:
        line = f"{words[rng.integers(len(words))]} {verbs[rng.integers(len(verbs))]}.\n"
        out.append(line)
        size += len(line)
    return "".join(out)[:n_chars]

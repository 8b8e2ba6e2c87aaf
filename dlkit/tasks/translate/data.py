"""Text for translation: Moses normalisation/tokenisation, sentencepiece subwords, aligned line files, batches
(TSV files, mixing and the held-out split: :mod:`dlkit.tasks.translate.corpus`).

The whole text pipeline (languages, Moses settings, sentencepiece model bytes) is a :class:`TextPipeline`
whose ``to_meta()`` goes into the model file, so ``dlkit translate`` needs nothing else.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from dlkit.core.errors import DataError, UsageError
from dlkit.core.io import check_text_file, is_stream
from dlkit.text.tokens import BOS, EOS, PAD, UNK
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def clean(text: str) -> str:
    """Control characters become spaces; runs of whitespace collapse (NFC)."""
    return " ".join(_CONTROL.sub(" ", unicodedata.normalize("NFC", text)).split())


# ------------------------------------------------------------------ subwords
class Subwords:
    """A sentencepiece model (BPE or unigram) trained in memory; its bytes live in the model file."""

    def __init__(self, model_bytes: bytes):
        import sentencepiece as spm

        self.model_bytes = model_bytes
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int, model_type: str = "bpe") -> "Subwords":
        import sentencepiece as spm

        sentences = [s for s in sentences if s]
        if not sentences:
            raise DataError("no non-empty sentences to learn subwords from")
        buf = io.BytesIO()
        kw = dict(
            sentence_iterator=iter(sentences), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
            character_coverage=1.0, pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, num_threads=1,
            input_sentence_size=2_000_000, shuffle_input_sentence=False, minloglevel=2,
            hard_vocab_limit=False,  # tiny corpora cannot fill a large vocabulary: take what there is
        )
        try:
            spm.SentencePieceTrainer.train(**kw)
        except RuntimeError as e:
            raise DataError(f"sentencepiece could not learn {vocab_size} subwords: {e}") from None
        return cls(buf.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([i for i in ids if i > EOS])

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def to_meta(self) -> str:
        return base64.b64encode(self.model_bytes).decode("ascii")

    @classmethod
    def from_meta(cls, b64: str) -> "Subwords":
        return cls(base64.b64decode(b64))


# ------------------------------------------------------------------ whole pipeline
class TextPipeline:
    """Moses punctuation normalisation + tokenisation per language, then subwords; and back."""

    def __init__(self, src_lang: str, tgt_lang: str, src_sp: Subwords, tgt_sp: Subwords, joint: bool):
        from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer

        self.src_lang, self.tgt_lang, self.joint = src_lang, tgt_lang, joint
        self.src_sp, self.tgt_sp = src_sp, tgt_sp
        self._norm = {lang: MosesPunctNormalizer(lang=lang) for lang in {src_lang, tgt_lang}}
        self._tok = {lang: MosesTokenizer(lang=lang) for lang in {src_lang, tgt_lang}}
        self._detok = MosesDetokenizer(lang=tgt_lang)

    def moses(self, text: str, lang: str) -> str:
        text = self._norm[lang].normalize(clean(text))
        return " ".join(self._tok[lang].tokenize(text, escape=False, aggressive_dash_splits=True))

    def encode_src(self, text: str) -> list[int]:
        return self.src_sp.encode(self.moses(text, self.src_lang))

    def encode_tgt(self, text: str) -> list[int]:
        return self.tgt_sp.encode(self.moses(text, self.tgt_lang))

    def decode_tgt(self, ids: Sequence[int]) -> str:
        tokens = self.tgt_sp.decode(ids).split()
        return self._detok.detokenize(tokens).replace(" @-@ ", "-")

    def to_meta(self) -> dict:
        meta = {"src_lang": self.src_lang, "tgt_lang": self.tgt_lang, "joint": self.joint,
                "moses": {"normalize": True, "aggressive_dash_splits": True}, "src_spm": self.src_sp.to_meta()}
        if not self.joint:
            meta["tgt_spm"] = self.tgt_sp.to_meta()
        return meta

    @classmethod
    def from_meta(cls, meta: dict) -> "TextPipeline":
        src = Subwords.from_meta(meta["src_spm"])
        tgt = src if meta["joint"] else Subwords.from_meta(meta["tgt_spm"])
        return cls(meta["src_lang"], meta["tgt_lang"], src, tgt, meta["joint"])

    @classmethod
    def learn(cls, src_tok: list[str], tgt_tok: list[str], src_lang: str, tgt_lang: str, vocab_size: int,
              model_type: str = "bpe", joint: bool = True) -> "TextPipeline":
        """Learn subwords from Moses-tokenised text (see :meth:`moses`)."""
        if joint:
            sp = Subwords.train(src_tok + tgt_tok, vocab_size, model_type)
            return cls(src_lang, tgt_lang, sp, sp, True)
        return cls(src_lang, tgt_lang, Subwords.train(src_tok, vocab_size, model_type),
                   Subwords.train(tgt_tok, vocab_size, model_type), False)


def moses_all(src: list[str], tgt: list[str], src_lang: str, tgt_lang: str) -> tuple[list[str], list[str]]:
    """Moses-normalised, tokenised text of both sides (the input of subword learning and encoding)."""
    pipe = TextPipeline(src_lang, tgt_lang, None, None, True)
    # each distinct sentence once: weighted mixes repeat pairs, and Tatoeba repeats English sentences
    s_map = {x: pipe.moses(x, src_lang) for x in dict.fromkeys(src)}
    t_map = {x: pipe.moses(x, tgt_lang) for x in dict.fromkeys(tgt)}
    return [s_map[x] for x in src], [t_map[x] for x in tgt]


# ------------------------------------------------------------------ reading parallel data
def read_lines(path: str | Path) -> list[str]:
    """A plain or gzipped UTF-8 text file, one sentence per line; FIFOs and ``<(...)`` are read as streams."""
    p = Path(path)
    if p.suffix == ".gz":
        if not p.exists():
            raise DataError(f"data file '{p}' does not exist")
        try:
            with gzip.open(p, "rt", encoding="utf-8", errors="replace") as f:
                return [line.rstrip("\r\n") for line in f]
        except (OSError, EOFError) as e:
            raise DataError(f"'{p}' is not a readable gzip file: {e}") from None
    if is_stream(p):  # a FIFO, /dev/stdin, <(...): read once, front to back
        return _read_stream(p)
    check_text_file(p)
    with open(p, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\r\n") for line in f]


def _read_stream(p: Path) -> list[str]:
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"cannot read '{p}': {e.strerror}") from None
    if b"\x00" in data[: 1 << 16]:
        raise DataError(f"'{p}' looks binary (it holds NUL bytes); expected UTF-8 text")
    if not data:
        raise DataError(f"'{p}' gave no text")
    lines = data.decode("utf-8", errors="replace").split("\n")
    if data.endswith(b"\n"):
        lines.pop()  # the text after the last newline is empty
    return [line.rstrip("\r") for line in lines]


def read_pairs(src: str | Path, tgt: str | Path) -> tuple[list[str], list[str]]:
    s, t = read_lines(src), read_lines(tgt)
    if len(s) != len(t):
        raise DataError(f"--src '{src}' has {len(s):,} lines but --tgt '{tgt}' has {len(t):,}; they must align line by line")
    return s, t


def multi30k_files(folder: str | Path, split: str, pair: str) -> tuple[Path, Path]:
    """``train``/``val``/``test_2016_flickr`` files of a Multi30k-style folder for ``pair`` (e.g. en-fr)."""
    s, t = split_pair(pair)
    folder = Path(folder)
    found = []
    for lang in (s, t):
        cands = [folder / f"{split}.{lang}.gz", folder / f"{split}.{lang}"]
        hit = next((c for c in cands if c.exists()), None)
        if hit is None:
            raise DataError(f"folder '{folder}' has no {split}.{lang}(.gz) for --pair {pair}")
        found.append(hit)
    return found[0], found[1]


def split_pair(pair: str) -> tuple[str, str]:
    parts = pair.split("-")
    if len(parts) != 2 or not all(re.fullmatch(r"[a-z]{2,3}", p) for p in parts):
        raise UsageError(f"--pair {pair}: expected SRC-TGT language codes such as en-fr")
    return parts[0], parts[1]


# ------------------------------------------------------------------ encoded corpus and batches
@dataclass
class Encoded:
    src: list[list[int]]
    tgt: list[list[int]]  # without bos/eos


def encode_corpus(pipe: TextPipeline, src_tok: list[str], tgt_tok: list[str], max_len: int) -> Encoded:
    """Subword ids of Moses-tokenised pairs, cut to ``max_len`` (target: room for bos/eos); empty pairs dropped."""
    out = Encoded([], [])
    for s, t in zip(src_tok, tgt_tok):
        si, ti = pipe.src_sp.encode(s)[:max_len], pipe.tgt_sp.encode(t)[: max_len - 1]
        if not si or not ti:
            continue
        out.src.append(si)
        out.tgt.append(ti)
    return out


def token_batches(lengths: list[int], max_tokens: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Length-bucketed batches of at most ``max_tokens`` (padded) tokens, a pure function of (seed, epoch).

    Sentences are sorted by length with random tie-breaking, cut into batches, and the batches shuffled:
    little padding, yet a different order every epoch (fairseq's batching by tokens)."""
    g = torch.Generator().manual_seed(seed * 7919 + epoch)
    noise = torch.rand(len(lengths), generator=g).tolist() if shuffle else [0.0] * len(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], noise[i]))
    batches, cur, longest = [], [], 0
    for i in order:
        longest_new = max(longest, lengths[i])
        if cur and longest_new * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, longest_new = [], lengths[i]
        cur.append(i)
        longest = longest_new
    if cur:
        batches.append(cur)
    if shuffle:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[j] for j in perm]
    return batches


def pad(seqs: list[list[int]], device=None) -> torch.Tensor:
    T = max(1, max(len(s) for s in seqs))
    out = torch.full((len(seqs), T), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out.to(device) if device is not None else out


def collate(data: Encoded, idx: list[int], device=None):
    """(src, tgt_in, tgt_out): tgt_in = bos + y, tgt_out = y + eos."""
    src = pad([data.src[i] for i in idx], device)
    tin = pad([[BOS] + data.tgt[i] for i in idx], device)
    tout = pad([data.tgt[i] + [EOS] for i in idx], device)
    return src, tin, tout


# ------------------------------------------------------------------ toy data for tests and demos
def toy_pairs(n: int, seed: int = 0, task: str = "reverse", vocab: int = 12, max_words: int = 6) -> tuple[list[str], list[str]]:
    """A synthetic language pair: source words w1..wN, target the same words reversed (or copied), upper-cased."""
    g = torch.Generator().manual_seed(seed)
    words = [f"w{chr(97 + i)}" for i in range(vocab)]
    src, tgt = [], []
    for _ in range(n):
        k = int(torch.randint(1, max_words + 1, (1,), generator=g))
        ws = [words[int(j)] for j in torch.randint(0, vocab, (k,), generator=g)]
        src.append(" ".join(ws))
        out = ws[::-1] if task == "reverse" else ws
        tgt.append(" ".join(w.upper() for w in out))
    return src, tgt

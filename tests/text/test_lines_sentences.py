"""dlkit.text.lines and dlkit.text.sentences: bounded reading, argument clean-up, sentence splitting."""

from __future__ import annotations

import io
import os
import tracemalloc

from dlkit.text.lines import bounded_lines, clean_args, count_lines
from dlkit.text.sentences import join_sentences, split_sentences


class LazyLine(io.RawIOBase):
    """A stream of one huge line (made on the fly, never held in memory) and then a short one."""

    def __init__(self, size: int):
        self.left, self.tail = size, b"\nnext line\n"

    def readable(self):
        return True

    def readinto(self, b):
        if self.left:
            n = min(len(b), self.left)
            b[:n] = b"ab. " * (n // 4) + b"x" * (n % 4)
            self.left -= n
            return n
        n = min(len(b), len(self.tail))
        b[:n], self.tail = self.tail[:n], self.tail[n:]
        return n


def test_a_huge_line_costs_only_the_cut():
    warnings = []
    tracemalloc.start()
    lines = list(bounded_lines(io.BufferedReader(LazyLine(50_000_000)), max_chars=1000, warn=warnings.append))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [len(x) for x in lines] == [1000, 9] and lines[1] == "next line"
    assert peak < 2_000_000, peak  # a 50 MB line, read in bounded chunks
    assert len(warnings) == 1 and "50,000,000 bytes" in warnings[0]


def test_lines_utf8_and_cuts_at_character_boundaries():
    warnings = []
    data = "héllo\r\nwörld\n\n".encode() + b"bad \xff byte\n" + ("€" * 10 + "\n").encode() + b"last"
    lines = list(bounded_lines(io.BytesIO(data), max_chars=4, warn=warnings.append))
    assert lines == ["héll", "wörl", "", "bad ", "€€€€", "last"]
    assert not any("\ufffd" in x for x in lines[:3])
    warnings.clear()
    lines = list(bounded_lines(io.BytesIO(data), warn=warnings.append))
    assert lines[3] == "bad \ufffd byte" and lines[4] == "€" * 10
    assert sum("not UTF-8" in w for w in warnings) == 1  # once per stream


def test_clean_args_replaces_undecodable_bytes_once():
    escaped = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")  # how Python hands over bad argv bytes
    warnings = []
    out = clean_args([escaped, "fine", "\udcff\udcfe", "x" * 50], max_chars=20, warn=warnings.append)
    assert out[0] == "caf\ufffd au lait" and out[1] == "fine" and out[2] == "\ufffd\ufffd" and len(out[3]) == 20
    for x in out:
        x.encode("utf-8")  # printable
    assert sum("not UTF-8" in w for w in warnings) == 1 and any("cut" in w for w in warnings)


def test_count_lines_of_files_not_pipes(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"a\nb\nc")
    with open(p, "rb") as f:
        f.readline()
        assert count_lines(f) == 2 and f.readline() == b"b\n"  # counted from here, then rewound
    r, w = os.pipe()
    with os.fdopen(r, "rb") as f, os.fdopen(w, "wb"):
        assert count_lines(f) is None
    assert count_lines(io.BytesIO(b"x\n")) is None


def test_sentences():
    assert split_sentences("A dog runs. A cat sleeps.", "en") == ["A dog runs.", "A cat sleeps."]
    assert split_sentences("Mr. Smith saw E.S.E. Electronics and paid 3.5 dollars. Then he left!", "en") == [
        "Mr. Smith saw E.S.E. Electronics and paid 3.5 dollars.", "Then he left!"]
    assert split_sentences("Il dit « Bonjour. » Puis il part.", "fr") == ["Il dit « Bonjour. »", "Puis il part."]
    assert split_sentences("no end mark", "xx") == ["no end mark"] and split_sentences("  ", "en") == []
    assert join_sentences(["Un chien court.", "", "Un chat dort."], "fr") == "Un chien court. Un chat dort."
    assert join_sentences(["狗在跑。", "猫在睡。"], "zh") == "狗在跑。猫在睡。"

"""Parallel data for translate-train: the TSV reader, weighted mixing, the split by English sentence, the bundled
model lookup of `translate --to`, and `translate --eval`. Tiny data made here; nothing reads ../shared."""

from __future__ import annotations

import gzip
import json
import random

import pytest
from typer.testing import CliRunner

from dlkit.cli import app
from dlkit.core.errors import DataError, UsageError
from dlkit.tasks.translate import corpus as C
from dlkit.tasks.translate.bundled import default_model
from dlkit.tasks.translate.data import toy_pairs
from dlkit.tasks.translate.train import TrainConfig

runner = CliRunner()


def write(path, text: str):
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ the TSV reader
def test_tsv_reader_skips_bad_lines_with_a_warning_naming_file_and_line(tmp_path):
    huge = "a" * 1_000_000
    text = ("Hello.\tBonjour.\r\n"  # CRLF
            "no tab here\n"  # 2
            "\n"  # 3: blank, silently skipped
            "Two\ttabs\there\n"  # 4: a tab inside a field
            "\tempty english\n"  # 5
            "empty french\t  \n"  # 6
            f"{huge}\t{huge}\n"  # 7: a 2 MB line
            "Thank you.\tMerci.\n")  # 8, no final blank line issue
    for name in ("pairs.tsv", "pairs.tsv.gz"):
        warnings = []
        en, fr = C.read_tsv(write(tmp_path / name, text), warn=warnings.append)
        assert en == ["Hello.", "Thank you."] and fr == ["Bonjour.", "Merci."]
        assert [w.split(":")[0] for w in warnings] == [f"'{tmp_path / name}' line {i}" for i in (2, 4, 5, 6, 7)]
        assert "no tab" in warnings[0] and "2 tabs" in warnings[1] and "empty side" in warnings[2]
        assert "2,000,001 characters" in warnings[4] and all(len(w) < 300 for w in warnings)
    assert C.read_tsv(tmp_path / "pairs.tsv", reverse=True) == (["Bonjour.", "Merci."], ["Hello.", "Thank you."])


def test_tsv_reader_counts_the_bad_lines_it_does_not_name(tmp_path):
    warnings = []
    text = "".join(f"bad {i}\n" for i in range(20)) + "good\tbon\n"
    assert C.read_tsv(write(tmp_path / "p.tsv", text), warn=warnings.append) == (["good"], ["bon"])
    assert len(warnings) == C.WARN_LINES + 1 and "15 more bad lines skipped (20 in all)" in warnings[-1]


def test_tsv_reader_refuses_files_with_no_pairs_broken_gzip_and_oversize(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no usable"):
        C.read_tsv(write(tmp_path / "none.tsv", "only\none column\n"))
    (tmp_path / "broken.tsv.gz").write_bytes(gzip.compress(b"a\tb\n" * 1000)[:-30])
    with pytest.raises(DataError, match="damaged gzip"):
        C.read_tsv(tmp_path / "broken.tsv.gz")
    with pytest.raises(DataError, match="does not exist"):
        C.read_tsv(tmp_path / "missing.tsv")
    # a small gzip that inflates past the cap stops at the cap (the shared bounded reader)
    bomb = write(tmp_path / "bomb.tsv.gz", "a\tb\n" * 100_000)
    import dlkit.core.io as io

    real = io.read_text
    monkeypatch.setattr(C, "read_text", lambda p, what, errors: real(p, what, errors, limit=10_000))
    with pytest.raises(DataError, match="more than 10.0 KB once decompressed"):
        C.read_tsv(bomb)


# ------------------------------------------------------------------ sources and weights
def test_parse_source_weights(tmp_path):
    assert C.parse_source("news.tsv.gz:2") == C.Source("news.tsv.gz", 2.0)
    assert C.parse_source("tatoeba.tsv.gz") == C.Source("tatoeba.tsv.gz", 1.0)
    assert C.parse_source("multi30k/:0.5") == C.Source("multi30k/", 0.5)
    odd = write(tmp_path / "a:2", "x\ty\n")  # an existing path with a colon is a path
    assert C.parse_source(str(odd)) == C.Source(str(odd), 1.0)
    for bad in ("x.tsv:0", "x.tsv:-1", "x.tsv:nan", "x.tsv:inf"):
        with pytest.raises(UsageError, match="positive number"):
            C.parse_source(bad)


def test_weighted_indices_counts_and_determinism():
    idx = C.weighted_indices(10, 2.5, seed=1)
    assert len(idx) == 25 and sorted(set(idx)) == list(range(10))
    assert sorted(idx.count(i) for i in range(10)) == [2] * 5 + [3] * 5
    assert idx == C.weighted_indices(10, 2.5, seed=1) and idx != C.weighted_indices(10, 2.5, seed=2)
    assert len(C.weighted_indices(100, 0.3, seed=0)) == 30 and len(set(C.weighted_indices(100, 0.3, 0))) == 30
    assert C.weighted_indices(7, 1.0, seed=0) == list(range(7))


def test_mix_weights_each_source_and_holds_out_by_english_sentence():
    a_en = [f"sentence {i}" for i in range(100)]
    b_en = [f"news {i}" for i in range(40)] + ["Sentence   3"]  # the same English sentence as a_en[3]
    parts = [(C.Source("a.tsv", 1.0), a_en, [f"fr {i}" for i in range(100)]),
             (C.Source("b.tsv", 2.0), b_en, [f"nouvelles {i}" for i in range(41)])]
    m = C.mix(parts, english_side=0, seed=1, valid_sentences=20, valid_fraction=0.5)
    held = {C.sentence_key(s) for s in m.valid_src}
    assert len(held) == 20 and not held & {C.sentence_key(s) for s in m.src}
    by = {x["name"]: x for x in m.sources}
    a_train = sum(1 for s in m.src if s.startswith("sentence") or s == "Sentence   3")
    assert by["a.tsv"]["train"] + by["b.tsv"]["train"] == len(m.src) == len(m.tgt)
    n_b_kept = by["b.tsv"]["train"] // 2
    assert by["b.tsv"]["train"] == 2 * n_b_kept and len(m.valid_src) == 141 - a_train - n_b_kept
    # given validation pairs: their English sentences are dropped from training, nothing else is held out
    m2 = C.mix(parts, 0, seed=1, valid=(["sentence 5", "news 7"], ["x", "y"]))
    assert m2.valid_src == ["sentence 5", "news 7"] and len(m2.src) == 99 + 2 * 40


# ------------------------------------------------------------------ the split by English sentence
def test_split_by_sentence_keeps_translations_together_and_is_deterministic():
    rng = random.Random(0)
    english = [f"sentence {rng.randrange(300)}" for _ in range(2000)]  # many lines per English sentence
    train, held = C.split_by_sentence(english, 30, seed=7)
    assert sorted(train + held) == list(range(2000))
    assert not {english[i] for i in train} & {english[i] for i in held}
    assert len({english[i] for i in held}) == 30
    assert (train, held) == C.split_by_sentence(english, 30, seed=7)
    assert held != C.split_by_sentence(english, 30, seed=8)[1]
    shuffled = english[:]
    rng.shuffle(shuffled)  # the held-out sentences do not depend on the order of the lines
    assert C.held_out_keys(shuffled, 30, 7) == C.held_out_keys(english, 30, 7)
    assert C.held_out_size(100_000) == 2000 and C.held_out_size(1000) == 50 and C.held_out_size(3) == 1
    with pytest.raises(DataError, match="too few"):
        C.held_out_size(1)


def test_load_text_reverses_columns_for_xx_en_and_mixes_a_folder(tmp_path):
    write(tmp_path / "t.tsv", "".join(f"English {i}.\tDeutsch {i}.\n" for i in range(60)))
    m, sl, tl = C.load_text(TrainConfig(data=[str(tmp_path / "t.tsv")], pair="de-en", valid_sentences=3))
    assert (sl, tl) == ("de", "en") and all(s.startswith("Deutsch") for s in m.src + m.valid_src)
    assert all(t.startswith("English") for t in m.tgt) and len(m.valid_src) == 3 and len(m.src) == 57
    folder = tmp_path / "m30k"
    folder.mkdir()
    write(folder / "train.en.gz", "A dog.\nA cat.\n")
    write(folder / "train.de", "Ein Hund.\nEine Katze.\n")
    m, _, _ = C.load_text(TrainConfig(data=[str(tmp_path / "t.tsv") + ":2", str(folder)], pair="en-de",
                                      valid_sentences=3))
    held_tsv = sum(s.startswith("English") for s in m.valid_src)
    held_folder = len(m.valid_src) - held_tsv
    assert len(m.valid_src) == 3 and m.src.count("A dog.") + m.src.count("A cat.") == 2 - held_folder
    assert len(m.src) == 2 * (60 - held_tsv) + (2 - held_folder)  # TSV pairs twice (weight 2), held out once
    write(tmp_path / "dev.tsv", "English 1.\tDeutsch eins.\nNew one.\tNeu.\n")
    m, _, _ = C.load_text(TrainConfig(data=[str(tmp_path / "t.tsv")], pair="en-de", valid_tsv=str(tmp_path / "dev.tsv")))
    assert m.valid_src == ["English 1.", "New one."] and len(m.src) == 59 and "English 1." not in m.src
    with pytest.raises(UsageError, match="is a folder: give --pair"):
        C.load_text(TrainConfig(data=[str(folder)]))


def test_write_tsv_round_trips(tmp_path):
    p = C.write_tsv(tmp_path / "x.tsv.gz", ["Bonjour."], ["Hello."], reverse=True)
    assert C.read_tsv(p) == (["Hello."], ["Bonjour."])


def test_split_script_keeps_test_sentences_out_of_every_training_file(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "translate_split", Path(__file__).resolve().parents[2] / "benchmarks" / "translate_split.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    a = write(tmp_path / "a.tsv", "".join(f"S{i % 50}.\tT{i}.\n" for i in range(200)))
    b = write(tmp_path / "b.tsv.gz", "".join(f"S{i}.\tN{i}.\n" for i in range(40)))
    counts = mod.split_files([str(a), str(b)], 5, 1, tmp_path / "out")
    test_en = {e for e in C.read_tsv(tmp_path / "out" / "test.tsv")[0]}
    assert len(test_en) == 5 and counts["test"]["pairs"] == 20
    for name in ("a.tsv.gz", "b.tsv.gz"):
        assert not test_en & set(C.read_tsv(tmp_path / "out" / "train" / name)[0])
    assert counts["a.tsv"]["train"] == 180 and counts["b.tsv.gz"]["removed"] == 5 - sum(
        1 for e in test_en if int(e[1:-1]) >= 40)


# ------------------------------------------------------------------ translate --to
def test_to_picks_the_general_model_or_falls_back_to_multi30k():
    have = {"en-fr"}
    find = lambda name: name if name in have else None  # noqa: E731
    assert default_model(None, find) == "en-fr" and default_model("fr", find) == "en-fr"
    assert default_model("DE", find) == "multi30k-en-de"  # en-de absent: no error
    have.clear()
    assert default_model(None, find) == "multi30k-en-fr"
    with pytest.raises(UsageError, match="--to es"):
        default_model("es", find)


def test_translate_to_conflicts_with_model_and_unknown_language_is_one_line():
    r = runner.invoke(app, ["translate", "--to", "de", "-m", "multi30k-en-de", "Hello."])
    assert r.exit_code == 2 and "not both" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, ["translate", "--to", "xx", "Hello."])
    assert r.exit_code == 2 and "--to xx" in r.stderr and r.stdout == ""
    r = runner.invoke(app, ["translate", "-m", "a", "-m", "b", "Hello."])
    assert r.exit_code == 2 and "several only with --eval" in r.stderr


# ------------------------------------------------------------------ end to end: train on two TSVs, then --eval
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mix")
    s, t = toy_pairs(400, seed=3, task="copy")
    write(tmp / "a.tsv", "".join(f"{x}\t{y}\n" for x, y in zip(s[:300], t[:300])))
    write(tmp / "b.tsv.gz", "".join(f"{x}\t{y}\n" for x, y in zip(s[300:], t[300:])) + "a bad line\n")
    out = tmp / "run"
    r = runner.invoke(app, ["translate-train", "--data", str(tmp / "a.tsv"), "--data", f"{tmp / 'b.tsv.gz'}:2",
                            "--pair", "en-fr", "--preset", "tiny", "--vocab-size", "50", "--epochs", "1",
                            "--max-tokens", "400", "--valid-sentences", "10", "--out", str(out), "--device", "cpu",
                            "--threads", "1"])
    return tmp, out, r


def test_train_on_a_weighted_mix_of_two_tsv_files(trained):
    tmp, out, r = trained
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out / "model.safetensors")
    assert f"'{tmp / 'b.tsv.gz'}' line 101: no tab; skipped" in r.stderr and "Traceback" not in r.stderr
    line = next(x for x in r.stderr.splitlines() if "training pairs" in x)
    assert "a.tsv x1:" in line and "b.tsv.gz x2:" in line
    from dlkit.core.modelfile import read_meta

    meta = read_meta(out / "model.safetensors", "translate")
    assert meta["training"]["data"] == "a.tsv + b.tsv.gz" and meta["text"]["src_lang"] == "en"


def test_eval_prints_the_table_for_a_test_tsv(trained):
    tmp, out, r = trained
    assert r.exit_code == 0, r.stderr
    model = str(out / "model.safetensors")
    write(tmp / "test.tsv", "wa wb\tWA WB\nwc\tWC\nbroken line\n")
    r = runner.invoke(app, ["translate", "--eval", str(tmp / "test.tsv"), "-m", model, "-m", model, "--beam", "2"])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "test.tsv: 2 pairs, en -> fr, beam 2" and lines[1].split() == ["model", "BLEU", "chrF", "seconds"]
    assert lines[2].split()[0] == lines[3].split()[0] == str(out / "model")  # the path, less .safetensors
    assert lines[2].split()[1:3] == lines[3].split()[1:3]
    assert lines[4].startswith("BLEU signature: nrefs:1|") and lines[5].startswith("chrF signature: ")
    assert "line 3: no tab" in r.stderr
    r = runner.invoke(app, ["translate", "--eval", str(tmp / "test.tsv"), "-m", model, "--json", "-q"])
    res = json.loads(r.stdout)
    row = res["results"][str(out / "model")]
    assert res["pairs"] == 2 and 0 <= row["bleu"] <= 100 and 0 <= row["chrf"] <= 100
    r = runner.invoke(app, ["translate", "--eval", str(tmp / "test.tsv"), "-m", model, "extra text"])
    assert r.exit_code == 2 and "--eval reads its sentences from the TSV" in r.stderr

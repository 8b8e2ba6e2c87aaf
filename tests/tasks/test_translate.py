"""Translation: model contract, learning a toy language pair, decoding, checkpoints, CLI, bad input.

Everything runs on the CPU on tiny data made here; nothing reads ../shared.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import StopAt
from typer.testing import CliRunner

from dlkit.cli import app
from dlkit.core.modelfile import load_model_file, save_model
from dlkit.core.state import load_state
from dlkit.core.errors import DataError, Interrupted, ModelFileError, UsageError
from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.translate import data as D
from dlkit.tasks.translate.infer import DecodeConfig, load_translator, translate_lines, translate_stream
from dlkit.tasks.translate.model import ARCHS, BOS, build_model, preset, reverse_padded
from dlkit.tasks.translate.train import TrainConfig, train

runner = CliRunner()


def write_toy(path, n=1200, seed=0):
    s, t = D.toy_pairs(n, seed=seed, task="copy")
    path.write_text("".join(f"{a}\t{b}\n" for a, b in zip(s, t)))
    return path


def toy_config(tmp, **kw) -> TrainConfig:
    base = dict(tsv=str(write_toy(tmp / "toy.tsv")), out=str(tmp / "run"), arch="transformer", preset="tiny",
                d_model=64, vocab_size=80, max_tokens=500, epochs=20, lr=5e-3, warmup=30, label_smoothing=0.0,
                patience=0, pair="xx-yy", seed=1)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory):
    """A tiny Transformer trained on the toy pair (source words -> the same words upper-cased)."""
    tmp = tmp_path_factory.mktemp("toy")
    torch.set_num_threads(1)
    result = train(toy_config(tmp, average_last=2), make_runtime("cpu", "fp32", 1), Reporter(quiet=True))
    return result, load_translator(result.model_path)


# ------------------------------------------------------------------ 1. model contract
@pytest.mark.parametrize("arch", ARCHS)
def test_model_shapes_gradients_determinism(arch):
    cfg = preset(arch, "tiny", src_vocab=30, tgt_vocab=30, dropout=0.1)
    torch.manual_seed(0)
    m1 = build_model(cfg)
    torch.manual_seed(0)
    m2 = build_model(cfg)
    src = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    tin = torch.tensor([[BOS, 11, 12], [BOS, 13, 0]])
    torch.manual_seed(1)
    y1 = m1(src, tin)
    torch.manual_seed(1)
    y2 = m2(src, tin)
    assert y1.shape == (2, 3, 30)
    assert torch.equal(y1, y2)
    y1.logsumexp(-1).sum().backward()
    for name, p in m1.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("arch", ARCHS)
def test_incremental_decoding_matches_teacher_forcing(arch):
    """step() with its caches must give the logits forward() gives (the KV cache and input feeding agree)."""
    cfg = preset(arch, "tiny", src_vocab=30, tgt_vocab=30)
    m = build_model(cfg).eval()
    src = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    tin = torch.tensor([[BOS, 11, 12, 13], [BOS, 14, 15, 16]])
    with torch.no_grad():
        full = m(src, tin)
        enc = m.encode(src)
        state = m.init_state(enc)
        for t in range(tin.size(1)):
            logits, state, _ = m.step(enc, state, tin[:, t])
            assert torch.allclose(logits, full[:, t], atol=1e-5), t


def test_source_reversal_keeps_padding():
    src = torch.tensor([[5, 6, 7], [8, 9, 0]])
    assert reverse_padded(src).tolist() == [[7, 6, 5], [9, 8, 0]]


# ------------------------------------------------------------------ 2. learning
def test_tiny_transformer_learns_toy_pair(toy_model):
    result, tr = toy_model
    src, tgt = D.toy_pairs(100, seed=99, task="copy")  # unseen sentences
    from dlkit.text.bleu import translation_bleu

    hyps = translate_lines(tr, src, DecodeConfig(beam=1))
    score = translation_bleu(hyps, tgt, "yy")
    assert score.sacrebleu > 90, (score, hyps[:3], tgt[:3])
    assert result.history and result.history[-1]["val_loss"] < result.history[0]["val_loss"]


@pytest.mark.parametrize("arch", ["lstm", "lstm-attention"])
def test_lstms_learn(arch, tmp_path):
    cfg = toy_config(tmp_path, arch=arch, epochs=2, max_tokens=500)
    result = train(cfg, make_runtime("cpu", "fp32", 1), Reporter(quiet=True))
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    assert last < first - 0.2, result.history


# ------------------------------------------------------------------ 3. decoding
def _toy_src(tr, lines):
    return D.pad([tr.pipe.encode_src(x) for x in lines])


def _enc(tr, lines):
    from dlkit.text.search import max_lengths

    src = _toy_src(tr, lines)
    return tr.model.encode(src), max_lengths((src != 0).sum(1), 1.5, 10, tr.model.cfg.max_len)


def test_beam_one_equals_greedy_on_a_trained_model(toy_model):
    from dlkit.text.search import beam_search, greedy

    _, tr = toy_model
    enc, lens = _enc(tr, ["wa wb wc", "wd we", "wf wg wh wi wj", "wk"])
    g = greedy(tr.model, enc, lens)
    b = beam_search(tr.model, enc, lens, beam=1, n_best=1)
    assert [h[0].tokens for h in b] == [h.tokens for h in g]
    assert [h[0].score for h in b] == pytest.approx([h.score for h in g], abs=1e-4)


def test_n_best_sorted_and_distinct(toy_model):
    from dlkit.text.search import beam_search

    _, tr = toy_model
    enc, lens = _enc(tr, ["wa wb wc", "wd we wf wg"])
    for hyps in beam_search(tr.model, enc, lens, beam=4, n_best=4):
        assert len(hyps) == 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 4


def test_stream_keeps_order_blank_lines_and_flushes_per_batch(toy_model):
    _, tr = toy_model
    lines = ["wa wb wc wd we", "", "wk", "   ", "wb wa"]
    res = list(translate_stream(tr, lines, DecodeConfig(beam=2, batch_size=2)))
    assert [r["source"] for r in res] == lines
    assert res[1]["translation"] == "" and res[3]["translation"] == ""
    assert res[0]["translation"] == "WA WB WC WD WE" and res[2]["translation"] == "WK"
    assert [bool(r.get("flush")) for r in res] == [False, True, False, True, True]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=40),
                max_size=6))
def test_arbitrary_unicode_one_line_per_line(toy_model, lines):
    _, tr = toy_model
    res = list(translate_stream(tr, lines, DecodeConfig(beam=2, batch_size=4)))
    assert len(res) == len(lines)
    for r in res:
        assert "\n" not in r["translation"] and "\r" not in r["translation"]


# ------------------------------------------------------------------ 4. checkpoints
def test_save_load_roundtrip_gives_identical_outputs(tmp_path):
    """The model file gives the trained network's outputs. One validation, at the end of the only epoch, so the
    model file holds the final weights, which the state also holds (written by torch.save, not the model file)."""
    result = train(toy_config(tmp_path, epochs=1, max_tokens=1500), make_runtime("cpu", "fp32", 1, threads=1),
                   Reporter(quiet=True))
    state = load_state(tmp_path / "run" / "model.state.pt")
    assert state["progress"]["step"] == result.steps and [h["step"] for h in state["progress"]["history"]] == [result.steps]
    tr = load_translator(result.model_path)
    trained = build_model(tr.model.cfg)
    trained.load_state_dict(state["model"])
    trained.eval()
    src = _toy_src(tr, ["wa wb wc", "wd"])
    with torch.no_grad():
        tin = torch.tensor([[BOS, 5], [BOS, 6]])
        assert torch.equal(tr.model(src, tin), trained(src, tin))


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    rt = lambda: make_runtime("cpu", "fp32", 3)  # noqa: E731
    cfg_a = toy_config(tmp_path, out=str(tmp_path / "a"), epochs=3, max_tokens=1500, average_last=2, seed=3)
    train(cfg_a, rt(), Reporter(quiet=True))
    cfg_b = toy_config(tmp_path, out=str(tmp_path / "b"), epochs=3, max_tokens=1500, average_last=2, seed=3)
    with pytest.raises(Interrupted):
        train(cfg_b, rt(), Reporter(quiet=True), StopAt(5))
    cfg_b.resume = True
    train(cfg_b, rt(), Reporter(quiet=True))
    sa = load_state(tmp_path / "a" / "model.state.pt")
    sb = load_state(tmp_path / "b" / "model.state.pt")
    assert sa["progress"]["step"] == sb["progress"]["step"]
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    ma, _ = load_model_file(tmp_path / "a" / "model.safetensors", "translate")
    mb, _ = load_model_file(tmp_path / "b" / "model.safetensors", "translate")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_refuses_other_task_truncated_and_pickle(toy_model, tmp_path):
    other = save_model(tmp_path / "lm.safetensors", {"w": torch.zeros(2)}, {"task": "lm"})
    with pytest.raises(ModelFileError, match="'lm' model"):
        load_translator(other)
    data = open(toy_model[0].model_path, "rb").read()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_translator(tmp_path / "cut.safetensors")
    torch.save({"w": torch.zeros(2)}, tmp_path / "p.safetensors")
    with pytest.raises(ModelFileError, match="pickle"):
        load_translator(tmp_path / "p.safetensors")


# ------------------------------------------------------------------ 5. CLI end to end
@pytest.fixture(scope="module")
def model_path(toy_model):
    return toy_model[0].model_path


def test_cli_train_then_translate(tmp_path):
    s, t = D.toy_pairs(300, seed=5, task="copy")
    (tmp_path / "train.xx").write_text("\n".join(s) + "\n")
    with gzip.open(tmp_path / "train.yy.gz", "wt") as f:
        f.write("\n".join(t) + "\n")
    out = tmp_path / "run"
    r = runner.invoke(app, ["translate-train", "--src", str(tmp_path / "train.xx"), "--tgt", str(tmp_path / "train.yy.gz"),
                            "--preset", "tiny", "--vocab-size", "60", "--epochs", "1", "--max-tokens", "400",
                            "--out", str(out), "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.stderr
    events = [json.loads(x) for x in r.stdout.splitlines()]
    assert events[0]["event"] == "start" and events[-1]["event"] == "result"
    assert any(e["event"] == "eval" for e in events)
    assert (out / "model.safetensors").exists() and (out / "model.state.pt").exists()
    r = runner.invoke(app, ["translate", "-m", str(out / "model.safetensors"), "--beam", "2", "wa wb", "wc"])
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2


def test_cli_translate_stdin_blank_lines_json_and_nbest(model_path):
    r = runner.invoke(app, ["translate", "-m", model_path, "--beam", "3"], input="wa wb\n\nwc wd we\n")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split("\n") == ["WA WB", "", "WC WD WE", ""]
    r = runner.invoke(app, ["translate", "-m", model_path, "--json", "--beam", "3", "--n-best", "2"], input="wa\n\n")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 2 and rows[0]["translation"] == "WA" and len(rows[0]["n_best"]) == 2 and rows[1]["n_best"] == []
    assert set(rows[1]) == {"source", "translation", "score", "n_best"}
    r = runner.invoke(app, ["translate", "-m", model_path, "--beam", "3", "--n-best", "2", "wa"])
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("\tWA")


def test_cli_ref_bleu_and_mismatch(model_path, tmp_path):
    (tmp_path / "ref").write_text("WA WB WC WD WE\nWF WG WH WI\n")
    r = runner.invoke(app, ["translate", "-m", model_path, "--ref", str(tmp_path / "ref")], input="wa wb wc wd we\nwf wg wh wi\n")
    assert r.exit_code == 0, r.stderr
    assert "sacreBLEU 100.00" in r.stderr and "nrefs:1|case:mixed" in r.stderr and "lower-cased tokenised BLEU" in r.stderr
    assert r.stdout.splitlines() == ["WA WB WC WD WE", "WF WG WH WI"]
    r = runner.invoke(app, ["translate", "-m", model_path, "--ref", str(tmp_path / "ref")], input="wa\n")
    assert r.exit_code == 1 and "2 lines but the input had 1" in r.stderr


def test_cli_bad_inputs(model_path, tmp_path):
    r = runner.invoke(app, ["translate", "-m", model_path], input="")
    assert r.exit_code == 0 and r.stdout == ""
    long = " ".join(["wa"] * 10_000)
    r = runner.invoke(app, ["translate", "-m", model_path, "--beam", "1"], input=f"{long}\n{long}\nwb\n")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3
    assert r.stderr.count("cut to the model's limit") == 1
    r = runner.invoke(app, ["translate", "-m", model_path], input=b"wa \xff\xfe wb\n\x07\x1b[31mwc\n\xe4\xbd\xa0\xe5\xa5\xbd\n")
    assert r.exit_code == 0 and len(r.stdout.splitlines()) == 3
    assert "not UTF-8" in r.stderr
    lm = save_model(tmp_path / "lm.safetensors", {"w": torch.zeros(2)}, {"task": "lm"})
    r = runner.invoke(app, ["translate", "-m", str(lm), "x"])
    assert r.exit_code == 1 and r.stderr.startswith("error:") and "'lm' model" in r.stderr
    r = runner.invoke(app, ["translate", "-m", model_path, "--n-best", "3", "--beam", "2", "x"])
    assert r.exit_code == 2


def test_cli_train_mismatched_line_counts(tmp_path):
    (tmp_path / "a.en").write_text("a\nb\nc\n")
    (tmp_path / "b.fr").write_text("a\nb\n")
    r = runner.invoke(app, ["translate-train", "--src", str(tmp_path / "a.en"), "--tgt", str(tmp_path / "b.fr"),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert "3 lines" in r.stderr and "has 2" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_attention_plot(model_path, tmp_path):
    png = tmp_path / "att.png"
    r = runner.invoke(app, ["translate", "-m", model_path, "--attention-plot", str(png)], input="\nwa wb wc\n")
    assert r.exit_code == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_help_does_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from dlkit.cli import app; "
            "r = CliRunner().invoke(app, ['translate', '--help']); assert r.exit_code == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_head_closes_pipe_quietly(model_path, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("wa wb wc\n" * 3000)
    p = subprocess.run(f"{sys.executable} -m dlkit translate -m {model_path} --beam 1 < {big} | head -1",
                       shell=True, capture_output=True, text=True)
    assert p.stdout == "WA WB WC\n"
    assert "Traceback" not in p.stderr and "error" not in p.stderr.lower()


def test_data_errors_are_one_line():
    with pytest.raises(DataError):
        D.read_lines("/nonexistent/file.gz")


def test_cli_lstm_attention_separate_unigram_vocab(tmp_path):
    write_toy(tmp_path / "toy.tsv", n=300)
    out = tmp_path / "run"
    r = runner.invoke(app, ["translate-train", "--tsv", str(tmp_path / "toy.tsv"), "--pair", "en-fr", "--arch",
                            "lstm-attention", "--attention", "bahdanau", "--preset", "tiny", "--subword", "unigram",
                            "--separate-vocab", "--vocab-size", "40", "--epochs", "1", "--max-tokens", "400",
                            "--out", str(out), "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(out / "model.safetensors") and r.stderr == ""
    tr = load_translator(out / "model.safetensors")
    assert not tr.pipe.joint and tr.model.cfg.attention == "bahdanau"
    r = runner.invoke(app, ["translate", "-m", str(out / "model.safetensors"), "--attention-plot",
                            str(tmp_path / "a.png"), "wa wb", ""])
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.split("\n")) == 3 and (tmp_path / "a.png").exists()


def test_token_batches_are_deterministic_bounded_and_complete():
    lengths = [int(x) for x in torch.randint(1, 40, (500,), generator=torch.Generator().manual_seed(0))]
    a = D.token_batches(lengths, 200, seed=1, epoch=3)
    assert a == D.token_batches(lengths, 200, seed=1, epoch=3)
    assert a != D.token_batches(lengths, 200, seed=1, epoch=4)
    assert sorted(i for b in a for i in b) == list(range(500))
    assert all(max(lengths[i] for i in b) * len(b) <= 200 for b in a)


def test_attention_plot_needs_attention(toy_model):
    from dlkit.core.errors import DlkitError
    from dlkit.tasks.translate.infer import Translator, attention_matrix

    _, tr = toy_model
    cfg = preset("lstm", "tiny", src_vocab=tr.model.cfg.src_vocab, tgt_vocab=tr.model.cfg.tgt_vocab)
    plain = Translator(build_model(cfg).eval(), tr.pipe, {}, torch.device("cpu"))
    with pytest.raises(DlkitError, match="no attention"):
        attention_matrix(plain, "wa wb")
    mat, src, tgt = attention_matrix(tr, "wa wb wc")
    assert mat.shape == (len(tgt), len(src)) and torch.allclose(mat.sum(1), torch.ones(len(tgt)), atol=1e-4)


@pytest.mark.slow
def test_ddp_two_processes_split_each_epoch(tmp_path):
    """torchrun with 2 gloo processes: each rank takes half of every epoch's batches, both validate once per
    epoch in step, only rank 0 talks and writes, and its model file loads and translates."""
    import os

    write_toy(tmp_path / "toy.tsv", n=400)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    common = ["translate-train", "--tsv", str(tmp_path / "toy.tsv"), "--pair", "xx-yy", "--preset", "tiny",
              "--vocab-size", "60", "--epochs", "2", "--max-tokens", "400", "--device", "cpu", "--seed", "4", "--json"]
    one = subprocess.run([sys.executable, "-m", "dlkit", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=180)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "dlkit", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    ev1 = [json.loads(x) for x in one.stdout.splitlines()]
    ev2 = [json.loads(x) for x in two.stdout.splitlines()]  # rank 0's events only: one start, one result
    assert [e["event"] for e in ev2].count("start") == 1 and ev2[-1]["event"] == "result"
    assert ev2[0]["world_size"] == 2 and two.stderr.count("2 processes") == 1
    steps1 = [e for e in ev1 if e["event"] == "step"][-1]["step"]
    steps2 = [e for e in ev2 if e["event"] == "step"][-1]["step"]
    assert steps2 * 2 in (steps1, steps1 - 1, steps1 - 2)  # each rank half the batches (odd counts drop one)
    assert len([e for e in ev2 if e["event"] == "eval"]) == 2  # one validation per epoch
    state = load_state(tmp_path / "two" / "model.state.pt")
    assert state["progress"]["step"] == steps2 and state["progress"]["epoch"] == 2
    tr = load_translator(tmp_path / "two" / "model.safetensors")
    assert len(translate_lines(tr, ["wa wb", ""], DecodeConfig(beam=2))) == 2


def test_cli_bf16_on_cpu_agrees_with_fp32_and_fp16_is_refused(model_path):
    lines = ["wa wb wc", "", "wd we", "wb wb wa wc"]
    args = ["translate", "-m", str(model_path), "--device", "cpu", *lines]
    fp32 = runner.invoke(app, args)
    bf16 = runner.invoke(app, [*args, "--precision", "bf16"])
    assert fp32.exit_code == 0 and bf16.exit_code == 0, bf16.stderr
    assert fp32.stdout.splitlines() == ["WA WB WC", "", "WD WE", "WB WB WA WC"]
    assert bf16.stdout.splitlines() == fp32.stdout.splitlines()  # the toy task is easy enough for bf16
    r = runner.invoke(app, [*args, "--precision", "fp16"])
    assert r.exit_code == 2 and "needs a GPU" in r.stderr


# ------------------------------------------------------------------ 6. hardening (issue 9) and shared layers (issue 8)
def test_lines_are_split_into_sentences_translated_and_joined(toy_model):
    """One line in, one line out, and no sentence dropped: a line of two sentences gives both translations."""
    from dataclasses import replace

    _, tr = toy_model
    dc = DecodeConfig(beam=2, n_best=2, batch_size=3)
    first, second = translate_stream(tr, ["wa wb wc.", "Wd we."], dc)
    [both] = translate_stream(tr, ["wa wb wc. Wd we."], dc)
    assert both["translation"] == f"{first['translation']} {second['translation']}"
    assert both["score"] == pytest.approx(first["score"] + second["score"], abs=2e-4)
    assert [h["translation"] for h in both["n_best"]] == [
        f"{a['translation']} {b['translation']}" for a, b in zip(first["n_best"], second["n_best"])]
    [whole] = translate_stream(tr, ["wa wb wc. Wd we."], replace(dc, split=False))
    assert whole["translation"] != both["translation"]  # --no-split: the model sees one long sentence
    r = runner.invoke(app, ["translate", "-m", toy_model[0].model_path, "--beam", "2", "wa wb wc. Wd we.", "wk"])
    assert r.exit_code == 0 and r.stdout.splitlines()[0] == both["translation"] and len(r.stdout.splitlines()) == 2


def test_long_stdin_line_is_cut_before_tokenising_with_bounded_memory(model_path, tmp_path):
    """A 40 MB single line: read in chunks, cut before Moses; one output line, one warning, small peak RSS."""
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        for _ in range(40):
            f.write("wa wb wc " * 116_508 + "wd ")
        f.write("\nwb\n")
    code = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], stdin=open(%r), capture_output=True, "
            "text=True); print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.stderr.write(p.stderr); sys.stdout.write(p.stdout)" % str(big))
    p = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "dlkit", "translate", "-m", model_path,
                        "--beam", "1", "--threads", "1"], capture_output=True, text=True, timeout=120)
    head, *out = p.stdout.splitlines()
    rc, rss_kb = map(int, head.split())
    assert rc == 0, p.stderr
    assert len(out) == 2 and out[1] == "WB"
    assert p.stderr.count("warning:") == 1 and "was cut" in p.stderr and "Traceback" not in p.stderr
    assert rss_kb < 1_000_000, f"peak RSS {rss_kb / 1024:.0f} MB"  # 2.8 GB for 50 MB before the cut moved


def test_non_utf8_arguments_are_replaced_with_a_warning(model_path):
    escaped = b"wa \xff\xfe wb".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    r = runner.invoke(app, ["translate", "-m", model_path, "--beam", "1", escaped, "wc"])
    assert r.exit_code == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2 and r.stderr.count("not UTF-8") == 1 and "unexpected" not in r.stderr


def test_ref_may_be_a_fifo_or_process_substitution(model_path, tmp_path):
    import os
    import threading

    def feed(path, text):
        with open(path, "w") as f:
            f.write(text)

    fifo = tmp_path / "ref.fifo"
    os.mkfifo(fifo)
    t = threading.Thread(target=feed, args=(fifo, "WA WB WC WD WE\nWF WG WH WI\n"))
    t.start()
    r = runner.invoke(app, ["translate", "-m", model_path, "--ref", str(fifo)], input="wa wb wc wd we\nwf wg wh wi\n")
    t.join(timeout=10)
    assert r.exit_code == 0, r.stderr
    assert "sacreBLEU 100.00" in r.stderr
    rd, wr = os.pipe()  # bash's <(...) hands over /dev/fd/N of a pipe
    t = threading.Thread(target=feed, args=(wr, "WA WB WC WD WE\n"))
    t.start()
    try:
        r = runner.invoke(app, ["translate", "-m", model_path, "--beam", "1", "--ref", f"/dev/fd/{rd}", "wa wb wc wd we"])
    finally:
        t.join(timeout=10)
        os.close(rd)
    assert r.exit_code == 0 and "sacreBLEU 100.00" in r.stderr, r.stderr


def test_progress_only_for_more_than_a_batch_of_lines():
    import io

    from dlkit.tasks.translate.jobs import _with_progress

    for total, n, shown in ((1000, 1000, True), (None, 200, True), (3, 3, False), (None, 5, False)):
        err = io.StringIO()
        report = Reporter(stderr=err, rich=False, plain_interval=0.0)
        assert list(_with_progress(iter(range(n)), report, total, batch_size=64)) == list(range(n))
        assert ("translate" in err.getvalue()) == shown, (total, n, err.getvalue())
        if total:
            assert err.getvalue().splitlines()[-1].startswith(f"translate {n}/{total}") if shown else True


def test_cli_train_guards_out_resume_settings_and_divergence(tmp_path):
    write_toy(tmp_path / "toy.tsv", n=200)
    out = tmp_path / "run"
    base = ["translate-train", "--tsv", str(tmp_path / "toy.tsv"), "--pair", "xx-yy", "--preset", "tiny",
            "--vocab-size", "40", "--epochs", "1", "--max-tokens", "400", "--device", "cpu", "--threads", "1", "-q"]
    assert runner.invoke(app, [*base, "--out", str(out)]).exit_code == 0
    r = runner.invoke(app, [*base, "--out", str(out)])
    assert r.exit_code == 1 and "already holds a run" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(app, [*base, "--out", str(out), "--resume", "--preset", "small"])
    assert r.exit_code == 2 and "--preset small (the run used tiny)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "size mismatch" not in r.stderr
    r = runner.invoke(app, [*base, "--out", str(out), "--overwrite", "--epochs", "2"])
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "nan"), "--lr", "1e6", "--warmup", "1", "--log-every", "1",
                            "--clip", "0"])
    assert r.exit_code == 1 and "diverged" in r.stderr and "unexpected" not in r.stderr, r.stderr
    for bad in (["--beam", "0"], ["--batch-size", "0"], ["--max-line-chars", "0"]):
        r = runner.invoke(app, ["translate", "-m", str(out / "model.safetensors"), *bad, "wa"])
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (bad, r.stderr)


# ------------------------------------------------------------------ the command's job: validated, results returned
def test_translate_job_validates_itself():
    from dlkit.core.errors import UsageError
    from dlkit.tasks.translate.jobs import TranslateJob

    with pytest.raises(UsageError, match="--n-best 3 needs --beam of at least 3"):
        TranslateJob(decode=DecodeConfig(beam=2, n_best=3))
    assert TranslateJob(decode=DecodeConfig(beam=3, n_best=3)).texts is None


def test_translate_job_returns_what_the_command_prints(model_path, tmp_path):
    import io

    from dlkit.tasks.translate.jobs import TranslateJob, translate_job

    rt = make_runtime("cpu", "fp32", 0, distributed=False)
    (tmp_path / "ref.txt").write_text("\nWA WB\n\nWC\n")
    got = []
    job = TranslateJob(model=model_path, decode=DecodeConfig(beam=2, batch_size=2), ref=str(tmp_path / "ref.txt"),
                       attention_plot=str(tmp_path / "att.png"))
    stdin = io.BytesIO(b"\nwa wb\n\nwc\n")  # a blank first line: the plot is of the first line with words
    done = translate_job(job, rt, Reporter(quiet=True), emit=lambda r: got.append(r) or True, stdin=stdin)
    assert done.lines == 4 and done.delivered and [r["translation"] for r in got] == ["", "WA WB", "", "WC"]
    assert done.attention_plot == str(tmp_path / "att.png") and (tmp_path / "att.png").stat().st_size > 0
    assert done.bleu is not None and done.bleu.sentences == 4
    first = []
    done = translate_job(TranslateJob(model=model_path, texts=["wa", "wb", "wc"], ref=str(tmp_path / "ref.txt")), rt,
                         Reporter(quiet=True), emit=lambda r: first.append(r) and False)
    assert len(first) == 1 and not done.delivered and done.bleu is None  # the reader left: no BLEU either


def test_init_fine_tunes_from_a_model_with_its_shape_and_subwords(toy_model, tmp_path):
    """--init: the run starts from the model's weights and subwords (its shape options win over this run's), and
    a model for other languages is refused."""
    base = toy_model[1]
    cfg = toy_config(tmp_path, init=str(toy_model[0].model_path), d_model=32, vocab_size=40, epochs=1, lr=1e-12,
                     warmup=0)
    result = train(cfg, make_runtime("cpu", "fp32", 1, threads=1), Reporter(quiet=True))
    tuned = load_translator(result.model_path)
    assert tuned.model.cfg == base.model.cfg and tuned.model.cfg.d_model == 64
    assert tuned.pipe.to_meta() == base.pipe.to_meta()
    a, b = base.model.state_dict(), tuned.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # lr ~0: still the init model
    assert result.history[0]["bleu"] == pytest.approx(toy_model[0].history[-1]["bleu"], abs=5.0)
    assert result.history[0]["bleu"] > 50
    with pytest.raises(UsageError, match="translates xx-yy; this run is xx-zz"):
        train(toy_config(tmp_path, init=str(toy_model[0].model_path), pair="xx-zz", out=str(tmp_path / "z")),
              make_runtime("cpu", "fp32", 1, threads=1), Reporter(quiet=True))

"""Language modelling: model contract, learning, checkpoints and resume, sampling, CLI, DDP."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import StopAt

from dlkit.core.errors import Interrupted
from dlkit.core.report import Reporter
from dlkit.core.runtime import make_runtime
from dlkit.tasks.lm.data import CharTokenizer, make_text, prepare_corpus
from dlkit.tasks.lm.infer import filter_logits, generate, load_lm
from dlkit.tasks.lm.model import GPT, preset
from dlkit.tasks.lm.train import TrainConfig, train


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(make_text(12_000))
    return p


def _cfg(corpus_file, out, **kw):
    base = dict(data=str(corpus_file), out=str(out), preset="tiny", steps=30, batch_size=8, eval_every=10,
                eval_iters=2, sample_tokens=0, warmup=5, lr=3e-3, seed=1)
    base.update(kw)
    return TrainConfig(**base)


def _quiet():
    return Reporter(quiet=True)


# ------------------------------------------------------------------ 1. model contract
def test_model_shapes_gradients_and_determinism():
    cfg = preset("tiny", vocab_size=11)
    torch.manual_seed(0)
    m = GPT(cfg)
    x = torch.randint(11, (3, 16))
    logits, loss = m(x, x)
    assert logits.shape == (3, 16, 11) and loss.ndim == 0
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    assert m.lm_head.weight is m.wte.weight  # tied
    torch.manual_seed(0)
    m2 = GPT(cfg)
    assert torch.equal(m2(x), m(x))


def test_causality_future_tokens_do_not_change_the_past():
    torch.manual_seed(0)
    m = GPT(preset("tiny", vocab_size=7)).eval()
    a = torch.randint(7, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 7
    assert torch.allclose(m(a)[0, :8], m(b)[0, :8], atol=1e-6)
    assert not torch.allclose(m(a)[0, 8:], m(b)[0, 8:])


def test_kv_cache_matches_full_recompute():
    torch.manual_seed(0)
    m = GPT(preset("tiny", vocab_size=9)).eval()
    prompt = torch.randint(9, (2, 5))
    runs = []
    for cache in (True, False):
        g = torch.Generator().manual_seed(4)
        runs.append(torch.stack(list(generate(m, prompt, 60, 1.0, None, None, g, use_cache=cache)), 1))
    # the first block_size-5 tokens are computed identically; past the window the cache slides by half
    n = m.cfg.block_size - prompt.size(1)
    assert torch.equal(runs[0][:, :n], runs[1][:, :n])
    assert runs[0].shape == (2, 60)


def test_top_k_and_top_p_filtering():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    p = filter_logits(logits, 1.0, 2, None)
    assert (p[0, 2:] == 0).all() and p.sum() == pytest.approx(1.0)
    p = filter_logits(logits, 1.0, None, 0.5)  # the top token alone holds ~64% of the mass
    assert p[0, 0] == pytest.approx(1.0)
    cold = filter_logits(logits, 0.1, None, None)
    assert cold[0, 0] > 0.99
    assert filter_logits(logits, 0.0, 2, 0.9).tolist() == [[1.0, 0.0, 0.0, 0.0]]  # temperature 0: greedy


def test_char_tokenizer_round_trip_and_unknown():
    tok = CharTokenizer("hello world")
    assert tok.decode(tok.encode("low hell")) == "low hell"
    assert tok.unknown("hey!") == ["!", "y"]


# ------------------------------------------------------------------ 2. learning
def test_training_learns_the_toy_grammar(tmp_path, corpus_file):
    rt = make_runtime("cpu", "fp32", seed=1, distributed=False)
    result = train(_cfg(corpus_file, tmp_path / "run", steps=150, eval_every=50, eval_iters=4), rt, _quiet())
    # uniform over ~25 characters is ln(25) ~ 3.2 nats; the grammar is far more predictable
    assert result.best_val_loss < 1.3
    model, tok, meta = load_lm(result.model_path)
    assert meta["metrics"]["val_loss"] < 1.4 and meta["headline"].startswith("val loss")


def test_bpe_tokenizer_corpus(tmp_path, corpus_file):
    corpus = prepare_corpus(corpus_file, tmp_path, "bpe", vocab_size=300)
    assert 256 < corpus.tokenizer.vocab_size <= 300
    text = corpus_file.read_text()
    assert corpus.tokenizer.decode(corpus.tokenizer.encode(text[:500])) == text[:500]
    assert len(corpus.train) + len(corpus.val) < len(text) / 2  # merges compress the repetitive text


def test_memmapped_corpus_is_reused_and_split_90_10(tmp_path, corpus_file):
    c = prepare_corpus(corpus_file, tmp_path, "char")
    assert len(c.val) == pytest.approx(0.1 * 12_000, abs=2)
    assert isinstance(c.train, __import__("numpy").memmap)
    mtime = (tmp_path / "tokens.bin").stat().st_mtime_ns
    prepare_corpus(corpus_file, tmp_path, "char", tokenizer_meta=c.tokenizer.to_meta())
    assert (tmp_path / "tokens.bin").stat().st_mtime_ns == mtime


# ------------------------------------------------------------------ 3. checkpoints and resume
def _state(run_dir):
    from dlkit.core.state import load_state

    return load_state(Path(run_dir) / "model.state.pt")


def _weights(run_dir):
    return _state(run_dir)["model"]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, corpus_file):
    kw = dict(steps=24, dropout=0.1)
    train(_cfg(corpus_file, tmp_path / "a", **kw), make_runtime("cpu", "fp32", 1, False), _quiet())
    with pytest.raises(Interrupted, match="--resume"):
        train(_cfg(corpus_file, tmp_path / "b", **kw), make_runtime("cpu", "fp32", 1, False), _quiet(), StopAt(13))
    torch.manual_seed(999)  # a resumed process starts with other RNG state
    train(_cfg(corpus_file, tmp_path / "b", resume=True, **kw), make_runtime("cpu", "fp32", 1, False), _quiet())
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_saved_model_reproduces_outputs(tmp_path, corpus_file):
    """The model file gives the outputs of the trained network: one evaluation, at the last step, so the best
    model is the final one, whose weights the state holds (written by torch.save, not through the model file)."""
    res = train(_cfg(corpus_file, tmp_path / "r", steps=10, eval_every=10), make_runtime("cpu", "fp32", 1, False), _quiet())
    state = _state(tmp_path / "r")
    assert state["step"] == 10 and [h["step"] for h in state["history"]] == [10]
    assert state["best_val"] == state["history"][0]["val"] == res.best_val_loss
    loaded, tok, meta = load_lm(res.model_path)
    trained = GPT(loaded.cfg)
    trained.load_state_dict(state["model"])
    trained.eval()
    x = torch.from_numpy(tok.encode("the cat sat"))[None]
    assert torch.equal(loaded(x), trained(x))
    assert meta["metrics"]["val_loss"] == pytest.approx(res.val_loss, abs=1e-4)  # finalize measured this model


# ------------------------------------------------------------------ 4. CLI
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    (d / "c.txt").write_text(make_text(6000))
    res = train(_cfg(d / "c.txt", d / "run", steps=20), make_runtime("cpu", "fp32", 1, False), _quiet())
    return Path(res.model_path)


def test_cli_train_stdout_has_only_the_model_path(invoke, tmp_path, corpus_file):
    r = invoke("lm-train", "--data", corpus_file, "--preset", "tiny", "--steps", 12, "--eval-every", 6,
               "--eval-iters", 2, "--out", tmp_path / "o", "--batch-size", 4, "--sample-tokens", 10)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "o" / "model.safetensors")
    assert "eval: step 6" in r.stderr and "sample:" in r.stderr


def test_cli_train_json_events(invoke, tmp_path, corpus_file):
    r = invoke("lm-train", "--data", corpus_file, "--preset", "tiny", "--steps", 12, "--eval-every", 3,
               "--eval-iters", 1, "--out", tmp_path / "o", "--json", "--quiet", "--log-every", 5)
    assert r.exit_code == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "result" and "eval" in kinds
    # the loss is read from the device only at the logging interval (and at the last step)
    assert [e["step"] for e in events if e["event"] == "step"] == [5, 10, 12]
    assert r.stderr == ""


def test_cli_sample_streams_and_json(invoke, trained):
    r = invoke("lm-sample", "--model", trained, "--prompt", "the", "-n", 30, "--seed", 3)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("the") and len(r.stdout) >= 30
    r2 = invoke("lm-sample", "--model", trained, "--prompt", "the", "-n", 30, "--seed", 3)
    assert r2.stdout == r.stdout  # same seed, same text
    r = invoke("lm-sample", "--model", trained, "-n", 12, "--num-samples", 2, "--json")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["sample"] for x in rows] == [0, 1] and all(x["new_tokens"] == 12 for x in rows)


def test_cli_sample_is_fresh_without_seed_and_reports_the_seed(invoke, trained):
    runs = [json.loads(invoke("lm-sample", "--model", trained, "-n", 40, "--json").stdout) for _ in range(2)]
    assert runs[0]["seed"] != runs[1]["seed"] and runs[0]["text"] != runs[1]["text"]
    again = json.loads(invoke("lm-sample", "--model", trained, "-n", 40, "--json", "--seed", runs[0]["seed"]).stdout)
    assert again["text"] == runs[0]["text"]  # the printed seed reproduces the sample


def test_cli_sample_precision_and_threads(invoke, trained):
    r = invoke("lm-sample", "--model", trained, "-n", 20, "--precision", "bf16", "--threads", 1, "--seed", 1,
               "--temperature", 0)
    assert r.exit_code == 0, r.stderr
    r = invoke("lm-sample", "--model", trained, "--precision", "fp16", "--device", "cpu")
    assert r.exit_code == 2 and "fp16 needs a GPU" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "Invalid value for '--temperature'"),
        (["--top-k", "0"], "Invalid value for '--top-k'"),
        (["--top-p", "1.5"], "Invalid value for '--top-p'"),
        (["--prompt", "ZZZ§"], "does not know"),
        (["--max-new-tokens", "-1"], "Invalid value for '--max-new-tokens'"),
        (["--threads", "0"], "Invalid value for '--threads'"),
    ],
)
def test_cli_sample_bad_input(invoke, trained, args, message):
    r = invoke("lm-sample", "--model", trained, *args)
    assert r.exit_code != 0
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_bad_models(invoke, tmp_path):
    from dlkit.core.modelfile import save_model

    save_model(tmp_path / "gan.safetensors", {"w": torch.zeros(1)}, {"task": "gan"})
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    torch.save({"a": 1}, tmp_path / "pickle.pt")
    for spec, msg in [(tmp_path / "gan.safetensors", "'gan' model"), (tmp_path / "junk.safetensors", "not a valid"),
                      (tmp_path / "pickle.pt", "pickle"), (tmp_path / "missing.safetensors", "does not exist"),
                      ("no-such-model", "no model named")]:
        r = invoke("lm-sample", "--model", spec)
        assert r.exit_code == (2 if msg == "does not exist" else 1), (spec, r.stderr)  # missing path: usage
        assert msg in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "content, extra, message",
    [
        (None, [], "does not exist"),
        (b"", [], "is empty"),
        (b"\x00\x01\x02binary", [], "looks binary"),
        ("d\xe9j\xe0 vu".encode("latin-1") * 10, [], "not UTF-8"),
        (b"short text", [], "fewer than one context window"),
        (b"abc " * 2000, ["--steps", "-3"], "Invalid value for '--steps'"),
        (b"abc " * 2000, ["--block-size", "0"], "Invalid value for '--block-size'"),
        (b"abc " * 2000, ["--preset", "huge"], "Invalid value for '--preset'"),
        (b"abc " * 2000, ["--lr", "0"], "Invalid value for '--lr'"),
    ],
)
def test_cli_train_bad_data(invoke, tmp_path, content, extra, message):
    data = tmp_path / "d.txt"
    if content is not None:
        data.write_bytes(content)
    r = invoke("lm-train", "--data", data, "--preset", "tiny", "--out", tmp_path / "o", *extra)
    assert r.exit_code != 0 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_run_that_failed_on_its_data_leaves_no_run_behind(invoke, tmp_path, corpus_file):
    short = tmp_path / "short.txt"
    short.write_text("too short")
    r = invoke("lm-train", "--data", short, "--preset", "tiny", "--out", tmp_path / "o")
    assert r.exit_code == 1 and "fewer than one context window" in r.stderr
    r = invoke("lm-train", "--data", corpus_file, "--preset", "tiny", "--steps", 2, "--eval-every", 2,
               "--eval-iters", 1, "--sample-tokens", 0, "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 0, r.stderr  # no --overwrite needed: nothing was trained there


def test_cli_unwritable_output(invoke, tmp_path, corpus_file):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = invoke("lm-train", "--data", corpus_file, "--out", blocker / "sub")
    assert r.exit_code == 1 and "cannot create output folder" in r.stderr


# ------------------------------------------------------------------ signals and DDP (subprocesses)
def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_sigterm_saves_state_exits_130_and_resume_finishes(tmp_path, corpus_file):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dlkit", "lm-train", "--data", str(corpus_file), "--preset", "tiny", "--steps",
           "100000", "--eval-every", "100000", "--out", str(out), "--device", "cpu"]
    p = subprocess.Popen(cmd + ["--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    state = out / "model.state.pt"
    for line in p.stdout:  # wait until the loop runs (a signal before that interrupts without saving)
        if b'"event": "step"' in line:
            break
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err.decode()
    assert state.exists() and "--resume" in err.decode() and b"Traceback" not in err
    from dlkit.core.state import load_state

    step = load_state(state)["step"]
    assert step > 0
    r = subprocess.run(cmd[:9] + [str(step + 3)] + cmd[10:] + ["--resume"], capture_output=True, env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    assert f"resuming at step {step}" in r.stderr.decode()
    assert load_state(state)["step"] == step + 3


@pytest.mark.slow
def test_ddp_two_processes_match_one_with_same_global_batch(tmp_path, corpus_file):
    common = ["--data", str(corpus_file), "--preset", "tiny", "--steps", "8", "--eval-every", "4", "--eval-iters",
              "1", "--sample-tokens", "0", "--device", "cpu", "--dropout", "0", "--seed", "5"]
    one = subprocess.run([sys.executable, "-m", "dlkit", "lm-train", *common, "--batch-size", "8", "--out",
                          str(tmp_path / "one")], capture_output=True, env=_env(), timeout=120)
    assert one.returncode == 0, one.stderr.decode()
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "dlkit", "lm-train", *common, "--batch-size", "4", "--out", str(tmp_path / "two")],
                         capture_output=True, env=_env(), timeout=180)
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    assert two.stdout.decode().count("model.safetensors") == 1  # rank 0 alone prints the result
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_cli_cuda_out_of_memory_suggests_smaller_batch(invoke, tmp_path, corpus_file, monkeypatch):
    import dlkit.tasks.lm.train as lm_train

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(lm_train, "train", oom)
    r = invoke("lm-train", "--data", corpus_file, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "smaller --batch-size" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.gpu
def test_gpu_bf16_training_step_and_sampling(tmp_path, corpus_file):
    rt = make_runtime("cuda", "auto", seed=0, distributed=False)
    assert rt.precision in ("bf16", "fp16")
    res = train(_cfg(corpus_file, tmp_path / "g", steps=40, eval_every=20), rt, _quiet())
    assert res.best_val_loss < 3.0
    model, tok, _ = load_lm(res.model_path)
    model.cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = list(generate(model, torch.zeros(1, 1, dtype=torch.long, device="cuda"), 20, 1.0, 5, None, g))
    assert len(out) == 20


def test_sample_into_a_closed_pipe_ends_quietly(trained):
    # `dlkit lm-sample ... | head -c 10`: head leaves early; dlkit stops without a BrokenPipe traceback
    # (policy in dlkit.core.io: an inference command stops printing and exits 141, as `cat` would)
    cmd = f"set -o pipefail; {sys.executable} -m dlkit lm-sample --model {trained} -n 20000 | head -c 10"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, env=_env())
    assert len(r.stdout) == 10 and r.returncode == 141
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr and "error" not in r.stderr


# ------------------------------------------------------------------ hardening (issue 9)
def _hostile(path, trained, **changes):
    """A copy of the trained model whose metadata is changed (tensors untouched)."""
    from dlkit.core.modelfile import load_model_file, save_model

    tensors, meta = load_model_file(trained)
    meta = {k: v for k, v in meta.items() if k not in ("format", "aliases")}
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    save_model(path, tensors, meta)
    return path


@pytest.mark.parametrize("change, message", [
    ({"config": {"n_layer": 100000}}, "far larger than"),
    ({"config": {"n_embd": 64}}, "is stored as"),
    ({"config": {"n_layer": "six"}}, "field 'n_layer' should be int"),
    ({"config": {"n_head": 3}}, "not a multiple of n_head"),
    ({"config": None}, "no config"),
    ({"tokenizer": {"type": "char"}}, "no usable tokenizer"),
])
def test_sample_refuses_models_whose_config_does_not_match_their_tensors(invoke, trained, tmp_path, change, message):
    from dlkit.core.modelfile import read_meta

    cfg = change.get("config", {})
    meta_cfg = None if cfg is None else {**read_meta(trained)["config"], **cfg}
    extra = {k: v for k, v in change.items() if k != "config"}
    bad = _hostile(tmp_path / "bad.safetensors", trained, **({"config": meta_cfg} if "config" in change else {}), **extra)
    r = invoke("lm-sample", "--model", bad, "-n", 5)
    assert r.exit_code == 1 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "unexpected" not in r.stderr


def test_lr_1e6_stops_with_one_line_and_keeps_the_last_good_model(invoke, tmp_path, corpus_file):
    out = tmp_path / "o"
    common = ["lm-train", "--data", corpus_file, "--preset", "tiny", "--eval-every", 3, "--eval-iters", 1,
              "--sample-tokens", 0, "--warmup", 0, "--out", out, "--quiet"]
    r = invoke(*common, "--steps", 200, "--lr", "1e6", "--log-every", 1)
    assert r.exit_code == 1 and "training diverged: the loss became" in r.stderr and "lower --lr" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # a run with a good model, resumed with a crazy learning rate: the good model stays, and is named
    r = invoke(*common, "--steps", 3, "--overwrite")
    assert r.exit_code == 0, r.stderr
    good = (out / "model.safetensors").read_bytes()
    r = invoke(*common, "--steps", 200, "--lr", "1e6", "--resume")
    assert r.exit_code == 1 and f"the last good model is kept in {out / 'model.safetensors'}" in r.stderr, r.stderr
    assert (out / "model.safetensors").read_bytes() == good
    load_lm(out / "model.safetensors")


def test_resume_with_another_preset_is_refused_in_one_line(invoke, tmp_path, corpus_file):
    common = ["lm-train", "--data", corpus_file, "--steps", 4, "--eval-every", 2, "--eval-iters", 1,
              "--sample-tokens", 0, "--out", tmp_path / "o", "--quiet"]
    assert invoke(*common, "--preset", "tiny").exit_code == 0
    r = invoke(*common, "--preset", "small", "--resume")
    assert r.exit_code == 2 and "--preset small (the run used tiny)" in r.stderr, r.stderr
    r = invoke(*common, "--preset", "tiny", "--block-size", 16, "--resume")
    assert r.exit_code == 2 and "--block-size 16" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_state_of_another_task_or_a_tampered_state_is_refused(tmp_path, corpus_file):
    from dlkit.core.errors import ModelFileError
    from dlkit.core.state import load_state, save_state

    train(_cfg(corpus_file, tmp_path / "r", steps=4, eval_every=2), make_runtime("cpu", "fp32", 1, False), _quiet())
    path = tmp_path / "r" / "model.state.pt"
    state = load_state(path)
    save_state(path, {**state, "model": {k: v[:1] for k, v in state["model"].items()}}, task="lm")
    with pytest.raises(ModelFileError, match="does not match its own config"):
        train(_cfg(corpus_file, tmp_path / "r", steps=8, resume=True), make_runtime("cpu", "fp32", 1, False), _quiet())
    save_state(path, state, task="gan")
    with pytest.raises(ModelFileError, match="'gan' run"):
        train(_cfg(corpus_file, tmp_path / "r", steps=8, resume=True), make_runtime("cpu", "fp32", 1, False), _quiet())


def test_out_guard_overwrite_and_lock(invoke, tmp_path, corpus_file):
    import fcntl

    args = ["lm-train", "--data", corpus_file, "--preset", "tiny", "--steps", 3, "--eval-every", 3, "--eval-iters", 1,
            "--sample-tokens", 0, "--out", tmp_path / "o", "--quiet"]
    assert invoke(*args).exit_code == 0
    first = (tmp_path / "o" / "model.safetensors").read_bytes()
    r = invoke(*args)
    assert r.exit_code == 1 and "already holds a run" in r.stderr and "--overwrite" in r.stderr
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == first  # untouched
    r = invoke(*args, "--overwrite", "--seed", 9)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "o" / "model.safetensors").read_bytes() != first
    with open(tmp_path / "o" / ".dlkit.lock", "a+") as held:  # another run holds the folder
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = invoke(*args, "--resume", "--steps", 6)
    assert r.exit_code == 1 and "in use by another dlkit run" in r.stderr


def test_max_time_counts_only_the_new_run(tmp_path, corpus_file):
    from dlkit.core.state import load_state, save_state

    with pytest.raises(Interrupted):
        train(_cfg(corpus_file, tmp_path / "r", steps=12), make_runtime("cpu", "fp32", 1, False), _quiet(), StopAt(4))
    path = tmp_path / "r" / "model.state.pt"
    save_state(path, {**load_state(path), "elapsed": 1e7}, task="lm")  # earlier runs took "months"
    res = train(_cfg(corpus_file, tmp_path / "r", steps=12, resume=True, max_time=600.0),
                make_runtime("cpu", "fp32", 1, False), _quiet())
    assert res.steps == 12  # not stopped at once by the earlier runs' time


def test_data_from_a_fifo_is_read_as_a_stream(invoke, tmp_path):
    import threading

    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)
    text = make_text(8000)

    def feed():
        with open(fifo, "w") as f:
            f.write(text)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    r = invoke("lm-train", "--data", fifo, "--preset", "tiny", "--steps", 3, "--eval-every", 3, "--eval-iters", 1,
               "--sample-tokens", 0, "--out", tmp_path / "o", "--quiet")
    t.join(timeout=10)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "o" / "data-0.txt").read_text() == text


def test_train_json_into_head_saves_state_and_fails(tmp_path, corpus_file):
    out = tmp_path / "run"
    cmd = (f"set -o pipefail; {sys.executable} -m dlkit lm-train --data {corpus_file} --preset tiny --steps 100000 "
           f"--eval-every 100000 --log-every 1 --out {out} --device cpu --json | head -3")
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120, env=_env())
    assert r.returncode == 141, r.stderr
    assert len(r.stdout.splitlines()) == 3
    assert "stdout was closed" in r.stderr and "--resume" in r.stderr and "Traceback" not in r.stderr
    from dlkit.core.state import load_state

    assert load_state(out / "model.state.pt")["step"] >= 1

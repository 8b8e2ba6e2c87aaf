"""Every ``*-train`` command under ``torchrun --nproc_per_node=2`` (gloo, CPU), on tiny data made here.

Each command is stopped twice and resumed twice: SIGINT to one rank only (the other must learn of it
through the ranks' agreement, :func:`dlkit.core.training.stop_reason`, or it would wait in an all-reduce
forever), then ``--resume --max-time`` (the clock runs out on the ranks at different moments), then
``--resume`` once more. Every run must end, both ranks with it, within a timeout; the state is written by
rank 0 alone and the resumed runs continue where the state stops. Torchrun itself reports a worker's
non-zero exit (130 after an interrupt) with its own summary; what is checked here is that no *worker*
ends in a traceback, an "unexpected" error or a lost peer.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dlkit.core.state import load_state

pytestmark = pytest.mark.slow

TIMEOUT = 240  # seconds for one torchrun run (start-up of two processes is a few seconds of it)
MAX_TIME = "0.05"  # minutes: 3 s of this run, set-up included (torch's lazy imports alone can take that)
LONGER = "0.25"  # 15 s: an epoch of every command even on a busy machine


# ------------------------------------------------------------------ tiny data and each command's arguments
def _lm(tmp: Path) -> list[str]:
    from dlkit.tasks.lm.data import make_text

    (tmp / "c.txt").write_text(make_text(6000))
    return ["lm-train", "--data", str(tmp / "c.txt"), "--preset", "tiny", "--steps", "1000000", "--eval-every",
            "1000000", "--eval-iters", "1", "--sample-tokens", "0", "--batch-size", "4", "--log-every", "1"]


def _translate(tmp: Path) -> list[str]:
    from dlkit.tasks.translate import data as D

    s, t = D.toy_pairs(300, seed=0, task="copy")
    (tmp / "toy.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in zip(s, t)))
    return ["translate-train", "--tsv", str(tmp / "toy.tsv"), "--pair", "xx-yy", "--preset", "tiny", "--vocab-size",
            "60", "--epochs", "100000", "--max-tokens", "300", "--log-every", "1", "--patience", "0"]


def _superres(tmp: Path) -> list[str]:
    from PIL import Image

    from dlkit.tasks.superres.data import block_images

    (tmp / "hr").mkdir()
    for name, img in block_images(6, 48, seed=3):
        Image.fromarray(img).save(tmp / "hr" / name)
    return ["superres-train", "--data", str(tmp / "hr"), "--preset", "tiny", "--scale", "2", "--patch", "12",
            "--batch-size", "2", "--steps", "1000000", "--eval-every", "1000000", "--val-split", "1", "--log-every", "1"]


def _caption(tmp: Path) -> list[str]:
    from dlkit.tasks.caption.data import make_shapes_dataset

    data = make_shapes_dataset(tmp / "shapes", n=32)
    return ["caption-train", "--data", str(data), "--encoder", "tiny-cnn", "--preset", "tiny", "--arch", "nic",
            "--min-count", "1", "--val-images", "4", "--epochs", "100000", "--batch-size", "4", "--no-feature-cache",
            "--patience", "100000"]


def _gan(tmp: Path) -> list[str]:
    return ["gan-train", "--dataset", "gaussian", "--steps", "1000000", "--log-every", "1", "--sample-every",
            "1000000", "--batch-size", "16"]


def _random_labels(tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    np.savez(tmp / "m.npz", x_train=rng.integers(0, 256, (200, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 10, 200).astype(np.uint8), x_test=rng.integers(0, 256, (50, 8, 8), dtype=np.uint8),
             y_test=rng.integers(0, 10, 50).astype(np.uint8))
    return ["fit-random-labels", "--dataset", "mnist", "--data", str(tmp / "m.npz"), "-c", "true,random",
            "--max-epochs", "100000", "--batch-size", "10", "--no-figures"]


def _frames(tmp: Path) -> list[str]:
    g = np.random.default_rng(0)
    x = np.zeros((60, 28, 28), np.uint8)
    for i in range(60):  # bright textured blocks: something to predict
        r, c = g.integers(2, 12, 2)
        x[i, r:r + 14, c:c + 10] = g.integers(120, 256, (14, 10))
    np.savez(tmp / "mnist.npz", x_train=x[:40], y_train=np.arange(40) % 10, x_test=x[40:], y_test=np.arange(20) % 10)
    return ["frame-predict-train", "--data", str(tmp / "mnist.npz"), "--width", "8", "--depth", "1", "--batch-size",
            "2", "--steps", "1000000", "--val-size", "4", "--log-every", "1"]


def _adv(tmp: Path) -> list[str]:
    rng = np.random.default_rng(0)
    np.savez(tmp / "m.npz", x_train=rng.integers(0, 256, (256, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 256).astype(np.uint8), x_test=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 64).astype(np.uint8))
    return ["adv-train", "--data", str(tmp / "m.npz"), "--method", "fgsm-rs", "--eps", "0.1", "--epochs", "100000",
            "--batch-size", "16", "--subset", "128", "--eval-images", "16"]


def _step(state: dict) -> tuple:
    """How far a saved state has come, comparable across the commands' layouts."""
    if "done" in state:  # fit-random-labels: finished runs, then the current run's step
        return len(state["done"]), (state["current"] or {}).get("step", 0)
    if "progress" in state:
        return (state["progress"]["step"],)
    return (state["step"],)


COMMANDS = {  # command -> (arguments, state file in --out)
    "lm-train": (_lm, "model.state.pt"),
    "translate-train": (_translate, "model.state.pt"),
    "superres-train": (_superres, "model.state.pt"),
    "caption-train": (_caption, "model.state.pt"),
    "gan-train": (_gan, "model.state.pt"),
    "fit-random-labels": (_random_labels, "state.pt"),
    "frame-predict-train": (_frames, "model.state.pt"),
    "adv-train": (_adv, "state.pt"),
}


# ------------------------------------------------------------------ running torchrun
def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _torchrun(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dlkit", *args,
           "--device", "cpu", "--threads", "1", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), start_new_session=True)


def _workers(launcher: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of the worker processes torchrun started."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid != launcher.pid:
                continue
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_bytes().decode(errors="replace").split("\0") if "=" in kv)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(d.name)
    return found


class _Launch:
    """A torchrun run in the background: its stdout lines (rank 0's JSON events) and stderr, read as they come."""

    def __init__(self, args: list[str]):
        self.p = _torchrun(args)
        self.lines: list[str] = []
        self.err: list[bytes] = []
        self.stepped, self.steps = threading.Event(), 0
        self.readers = [threading.Thread(target=self._read_out, daemon=True),
                        threading.Thread(target=lambda: self.err.extend(self.p.stderr), daemon=True)]
        for t in self.readers:
            t.start()

    def _read_out(self) -> None:
        for raw in self.p.stdout:
            line = raw.decode(errors="replace").strip()
            self.lines.append(line)
            try:
                if json.loads(line).get("event") in ("step", "epoch"):
                    self.steps += 1
            except ValueError:
                pass
            if self.steps >= 2:  # rank 0 is past step 2, so every rank has polled its stop signal once
                self.stepped.set()

    def finish(self) -> tuple[int, str]:
        """Wait for the launcher (and so both workers) to end; a hang fails the test instead of the suite."""
        try:
            self.p.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            pytest.fail(f"torchrun did not end within {TIMEOUT} s (a rank left alone waits forever)")
        for t in self.readers:
            t.join(timeout=10)
        return self.p.returncode, b"".join(self.err).decode(errors="replace")


def _no_crash(err: str) -> None:
    """The ranks ended by dlkit's own handling: no worker traceback, no "unexpected", no lost peer."""
    assert "unexpected" not in err and "Connection closed by peer" not in err, err[-4000:]
    assert not re.search(r'File ".*/dlkit/', err), err[-4000:]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_sigint_to_one_rank_then_max_time_then_resume(command, tmp_path):
    make_args, state_name = COMMANDS[command]
    out = tmp_path / "run"
    args = make_args(tmp_path) + ["--out", str(out)]
    state_file = out / state_name

    # 1. SIGINT to rank 1 alone, once the loop runs: both ranks stop after the same step, rank 0 saves
    run = _Launch(args)
    assert run.stepped.wait(TIMEOUT), f"{command} never reported a step"
    workers = _workers(run.p)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGINT)
    rc, err = run.finish()
    assert rc != 0 and err.count("continue with --resume") == 2, err[-4000:]  # both ranks say it, exit 130
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers.values())
    _no_crash(err)
    first = _step(load_state(state_file))
    assert [f.name for f in out.iterdir() if ".tmp" in f.name] == []  # one writer, no torn temp files

    # 2. --resume with --max-time: resumes the state, stops on time on both ranks, exit 0
    rc, err = _Launch(args + ["--resume", "--max-time", MAX_TIME]).finish()
    assert rc == 0, err[-4000:]
    assert "resuming" in err and "max-time" in err, err[-4000:]
    _no_crash(err)
    second = _step(load_state(state_file))
    assert second >= first, err[-4000:]  # a state saved per epoch may not move in a short budget on a busy machine

    # 3. and --resume once more, with time for an epoch however busy the machine, continues past that
    rc, err = _Launch(args + ["--resume", "--max-time", LONGER]).finish()
    assert rc == 0, err[-4000:]
    assert _step(load_state(state_file)) > second, err[-4000:]


def test_ctrl_c_to_the_whole_group_then_resume_equals_uninterrupted(tmp_path):
    """Ctrl-C in a terminal reaches torchrun and both workers, and torchrun forwards it once more: the workers
    must not take the second copy for an impatient second Ctrl-C, which would cut the state save short. The
    resumed run then ends with the weights of a run never interrupted (caption-train: batches, dropout, the
    learning-rate schedule and the model selection all continue exactly)."""
    args = _caption(tmp_path)
    args[args.index("--epochs") + 1] = "3"
    rc, err = _Launch(args + ["--out", str(tmp_path / "whole")]).finish()
    assert rc == 0, err[-4000:]

    out = tmp_path / "cut"
    run = _Launch(args + ["--out", str(out)])
    assert run.stepped.wait(TIMEOUT)
    os.killpg(run.p.pid, signal.SIGINT)  # what the terminal does: the launcher's process group
    rc, err = run.finish()
    assert rc != 0 and "state saved to" in err, err[-4000:]
    _no_crash(err)
    rc, err = _Launch(args + ["--out", str(out), "--resume"]).finish()
    assert rc == 0, err[-4000:]
    a, b = load_state(tmp_path / "whole" / "model.state.pt"), load_state(out / "model.state.pt")
    assert a["progress"]["step"] == b["progress"]["step"] and a["progress"]["history"] == b["progress"]["history"]
    differ = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert differ == [], f"{len(differ)} of {len(a['model'])} tensors differ"


def test_a_refusal_is_one_line_per_rank(tmp_path):
    """A setting refused under DDP stops both ranks with dlkit's sentence, never a worker's traceback."""
    run = _Launch(["gan-train", "--dataset", "gaussian", "--loss", "wgan-gp", "--steps", "5", "--out",
                   str(tmp_path / "run")])
    rc, err = run.finish()
    assert rc != 0 and err.count("wgan-gp") >= 2, err[-4000:]
    _no_crash(err)


def test_classifier_train_sigint_to_one_rank_then_resume_on_time(tmp_path):
    """classifier-train's schedule ends annealed on --max-time (it follows steps or time, whichever is further),
    so a run stopped on time is complete; a run stopped by SIGINT to one rank is not: both ranks exit, rank 0 has
    saved the state of the last finished epoch once, and ``--resume --max-time`` trains on from it, the rest of
    the schedule spread over its time, until both ranks stop together on the agreed clock."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("test", 16)):
        for k, name in enumerate(("red", "blue")):
            (tmp_path / "img" / split / name).mkdir(parents=True)
            for i in range(n // 2):
                a = rng.integers(0, 90, (16, 16, 3)).astype(np.uint8)
                a[..., 2 * k] += 140
                Image.fromarray(a).save(tmp_path / "img" / split / name / f"{i}.png")
    out = tmp_path / "run"
    args = ["classifier-train", "--data", str(tmp_path / "img"), "--batch-size", "4", "--epochs", "100000",
            "--out", str(out)]

    run = _Launch(args)  # 8 steps an epoch per rank; the lookahead average starts in epoch 4
    assert run.stepped.wait(TIMEOUT), "classifier-train never reported an epoch"
    workers = _workers(run.p)
    assert sorted(workers) == [0, 1], workers
    os.kill(workers[1], signal.SIGINT)
    rc, err = run.finish()
    assert rc != 0 and err.count("continue with --resume") == 2, err[-4000:]
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers.values())
    _no_crash(err)
    first = load_state(out / "model.state.pt", "classifier-train")
    assert first["step"] == 8 * first["epoch"] and first["epoch"] >= 2 and first["p"] < 0.01
    assert [f.name for f in out.iterdir() if ".tmp" in f.name] == []
    assert not (out / "model.safetensors").exists()

    rc, err = _Launch(args + ["--resume", "--max-time", MAX_TIME]).finish()
    assert rc == 0, err[-4000:]
    assert "resuming at epoch" in err and "--max-time reached" in err, err[-4000:]
    _no_crash(err)
    second = load_state(out / "model.state.pt", "classifier-train")
    assert second["step"] > first["step"] and second["p"] >= 1.0, err[-4000:]
    assert (out / "model.safetensors").exists()

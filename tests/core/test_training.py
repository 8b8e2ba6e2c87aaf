"""The training-command runner and the closed-stdout policy; streams (FIFOs) as text inputs."""

import io
import os
import threading

import pytest

from dlkit.core.errors import EXIT_BROKEN_PIPE, DataError, Interrupted, OutputError, StdoutClosed
from dlkit.core.io import ResultStream, check_text_file, is_stream, spool_streams, text_files
from dlkit.core.report import Reporter
from dlkit.core.training import run_training


class ClosedPipe(io.StringIO):
    """A stdout whose reader has gone after ``keep`` writes."""

    def __init__(self, keep=0):
        super().__init__()
        self.keep = keep

    def write(self, s):
        if self.keep <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.keep -= 1
        return super().write(s)


def fake_train(steps=5, events=True):
    """A task loop of the standard shape: poll the stop signal each step, save and raise Interrupted."""

    def train(cfg, rt, report, stop):
        for step in range(steps):
            if events:
                report.event("step", step=step)
            if stop.poll(step + 1):
                (cfg / "state").write_text(str(step + 1))
                raise Interrupted(f"interrupted at step {step + 1}; state saved, continue with --resume")
        (cfg / "model").write_text("done")
        return "result"

    return train


def _run(out, train, **kw):
    return run_training(train, out, out=out, device="cpu", precision="fp32", distributed=False, threads=1, **kw)


def test_runner_returns_the_result_and_renders_it(tmp_path):
    seen = []
    assert _run(tmp_path / "o", fake_train(), quiet=True, render=lambda r, rep: seen.append(r)) == "result"
    assert seen == ["result"] and (tmp_path / "o" / "model").exists()


def test_runner_guards_the_output_folder(tmp_path):
    out = tmp_path / "o"
    _run(out, fake_train(), quiet=True)
    with pytest.raises(OutputError, match="already holds a run"):
        _run(out, fake_train(), quiet=True)
    _run(out, fake_train(), quiet=True, overwrite=True)
    _run(out, fake_train(), quiet=True, resume=True)


def test_closed_stdout_saves_state_and_exits_141(tmp_path, monkeypatch):
    import dlkit.core.io as cio

    monkeypatch.setattr(cio, "results", ResultStream(ClosedPipe(keep=2)))
    with pytest.raises(StdoutClosed, match="stdout was closed .* interrupted at step 3") as e:
        _run(tmp_path / "o", fake_train(steps=100), json_out=True, quiet=True)
    assert e.value.exit_code == EXIT_BROKEN_PIPE == 141
    assert (tmp_path / "o" / "state").read_text() == "3"  # the step whose event could not be written


def test_closed_stdout_after_the_work_is_done_still_fails(tmp_path, monkeypatch):
    import dlkit.core.io as cio

    monkeypatch.setattr(cio, "results", ResultStream(ClosedPipe(keep=0)))
    with pytest.raises(StdoutClosed, match="the run finished and its files are in"):
        _run(tmp_path / "o", fake_train(events=False), quiet=True, render=lambda r, rep: rep.result("path"))
    assert (tmp_path / "o" / "model").exists()


def test_interrupt_without_closed_stdout_stays_an_interrupt(tmp_path):
    class Stop:
        def __call__(self, cfg, rt, report, stop):
            stop.request(15)
            return fake_train()(cfg, rt, report, stop)

    with pytest.raises(Interrupted):
        _run(tmp_path / "o", Stop(), quiet=True)


def test_result_stream_and_reporter_policy():
    out = ResultStream(ClosedPipe(keep=1))
    assert out.line("a") is True and out.line("b") is False and out.closed
    assert out.write("c") is False
    with pytest.raises(StdoutClosed) as e:
        out.finish()
    assert str(e.value) == ""  # inference: no message, exit 141
    ResultStream(io.StringIO()).finish()  # nothing happened: no error

    called = []
    rep = Reporter(json_mode=True, stdout=ClosedPipe(), stderr=io.StringIO())
    rep.on_stdout_closed = lambda: called.append(1)
    rep.event("step", step=1)
    assert rep.stdout_closed and called == [1]


# ------------------------------------------------------------------ streams as inputs
def _fifo(tmp_path, data: bytes, name="f"):
    path = tmp_path / name
    os.mkfifo(path)

    def feed():
        with open(path, "wb") as f:
            f.write(data)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    return path, t


def test_fifo_is_a_stream_and_is_not_consumed_by_the_checks(tmp_path):
    path, t = _fifo(tmp_path, "héllo\n".encode() * 1000)
    assert is_stream(path) and not is_stream(tmp_path) and not is_stream(tmp_path / "missing")
    assert check_text_file(path) == path and text_files(path) == [path]
    with open(path, encoding="utf-8") as f:
        assert f.read() == "héllo\n" * 1000  # all of it is still there
    t.join(timeout=5)


def test_spooled_streams_are_checked_like_files(tmp_path):
    path, t = _fifo(tmp_path, b"some text\n")
    (tmp_path / "spool").mkdir()
    regular = tmp_path / "r.txt"
    regular.write_text("x")
    spooled = spool_streams([regular, path], tmp_path / "spool", "data")
    t.join(timeout=5)
    assert spooled[0] == regular and spooled[1].read_text() == "some text\n" and spooled[1].name == "data-1.txt"
    path2, t2 = _fifo(tmp_path, b"", name="g")
    with pytest.raises(DataError, match="is empty"):
        spool_streams([path2], tmp_path / "spool", "val")
    t2.join(timeout=5)


# ------------------------------------------------------------------ the shared tail of the training loops
class _OneProcess:
    distributed = False


class _Ranks:
    """A stand-in for a Runtime of several ranks: all_reduce_max sees the other ranks' codes."""

    distributed = True

    def __init__(self, others):
        self.others, self.barriers = others, 0

    def all_reduce_max(self, code):
        return max([code, *self.others])

    def barrier(self):
        self.barriers += 1


def test_stop_reason_on_one_process():
    import time

    from conftest import StopAt

    from dlkit.core.interrupt import StopSignal
    from dlkit.core.training import stop_reason

    now = time.monotonic()
    rt = _OneProcess()
    assert stop_reason(StopSignal(), rt, t0=now, max_time_s=60, step=3, max_steps=10) is None
    assert stop_reason(StopSignal(), rt, t0=now, step=10, max_steps=10) == "steps"
    assert stop_reason(StopSignal(), rt, t0=now - 61, max_time_s=60, step=3, max_steps=10) == "max-time"
    assert stop_reason(StopAt(3), rt, t0=now - 61, max_time_s=60, step=3) == "interrupted"  # beats the clock
    asked = StopSignal()
    asked.request(2)  # SIGINT, or a closed stdout (request(None))
    assert stop_reason(asked, rt, t0=now, step=1) == "interrupted"


def test_stop_reason_is_the_ranks_strongest():
    """A signal to another rank, or its clock running out first, stops this rank after the same step."""
    import time

    from dlkit.core.interrupt import StopSignal
    from dlkit.core.training import STOP_REASONS, stop_reason

    now = time.monotonic()
    for other in STOP_REASONS:
        code = STOP_REASONS.index(other)
        assert stop_reason(StopSignal(), _Ranks([code]), t0=now, max_time_s=60, step=1, max_steps=10) == other
    assert stop_reason(StopSignal(), _Ranks([2]), t0=now, step=10, max_steps=10) == "max-time"


def test_save_and_interrupt_saves_waits_for_the_ranks_and_raises(tmp_path):
    from dlkit.core.training import save_and_interrupt

    saved, rt = [], _Ranks([0])
    with pytest.raises(Interrupted, match=r"interrupted at step 7; state saved to '.*s\.pt', continue with --resume"):
        save_and_interrupt(rt, lambda: saved.append(1), "at step 7", tmp_path / "s.pt")
    assert saved == [1] and rt.barriers == 1
    with pytest.raises(Interrupted):
        save_and_interrupt(_OneProcess(), lambda: None, "at step 1", tmp_path / "s.pt")


def test_resume_state_one_behaviour_for_every_command(tmp_path):
    from dlkit.core.errors import EXIT_USAGE, ModelFileError, UsageError
    from dlkit.core.state import save_state
    from dlkit.core.training import resume_state

    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(UsageError, match=r"--resume: there is no saved training state in '.*run' to resume") as e:
        resume_state(out / "model.state.pt", "lm")
    assert e.value.exit_code == EXIT_USAGE and "--overwrite" not in str(e.value)
    (out / "tokens.bin").write_bytes(b"x")  # a run stopped before its first state: replace it with --overwrite
    with pytest.raises(UsageError, match="add --overwrite"):
        resume_state(out / "model.state.pt", "lm")

    save_state(out / "model.state.pt", {"step": 3, "config": {"preset": "tiny", "lr": 0.1}}, task="gan")
    with pytest.raises(ModelFileError, match="saved by a 'gan' run; a 'caption' run cannot resume it"):
        resume_state(out / "model.state.pt", "caption")
    state = resume_state(out / "model.state.pt", "gan", required=("step",), config={"preset": "tiny", "lr": 0.5},
                         shape_keys=("preset",))
    assert state["step"] == 3  # --lr may change on resume
    with pytest.raises(ModelFileError, match="incomplete"):
        resume_state(out / "model.state.pt", "gan", required=("optimizer",))
    with pytest.raises(UsageError, match="--preset small \\(the run used tiny\\)"):
        resume_state(out / "model.state.pt", "gan", config={"preset": "small"}, shape_keys=("preset",))


def test_resume_and_overwrite_exclude_each_other(tmp_path):
    from dlkit.core.errors import UsageError

    with pytest.raises(UsageError, match="--resume and --overwrite exclude each other"):
        _run(tmp_path / "o", fake_train(), quiet=True, resume=True, overwrite=True)
    assert not (tmp_path / "o").exists()


def test_a_lost_peer_is_one_sentence(tmp_path, monkeypatch):
    """Under torchrun a rank whose peer died (killed, or stopped by a Ctrl-C before its loop ran) says so."""
    import dlkit.core.runtime as runtime
    from dlkit.core.errors import DlkitError

    class Rt:
        distributed, is_main = True, True

    monkeypatch.setattr(runtime, "make_runtime", lambda *a, **k: Rt())
    monkeypatch.setattr(runtime, "shutdown", lambda rt: None)

    def train(cfg, rt, report, stop):
        raise RuntimeError("[gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:65214")

    with pytest.raises(DlkitError, match="another process of this torchrun run ended first") as e:
        _run(tmp_path / "o", train, quiet=True)
    assert type(e.value) is DlkitError and e.value.exit_code == 1

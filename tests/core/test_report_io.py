import io
import json

import pytest

from dlkit.core.errors import DataError, OutputError
from dlkit.core.io import check_text_file, ensure_can_write, text_files
from dlkit.core.report import Reporter


def test_plain_mode_writes_people_lines_to_stderr_only():
    err, out = io.StringIO(), io.StringIO()
    r = Reporter(stderr=err, stdout=out, rich=False)
    r.info("hello")
    r.warn("careful")
    r.metrics("eval", step=3, loss=1.23456)
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == ["hello", "warning: careful", "eval: step 3 | loss 1.235"]


def test_json_mode_events_on_stdout_and_quiet_silences_stderr():
    err, out = io.StringIO(), io.StringIO()
    r = Reporter(quiet=True, json_mode=True, stderr=err, stdout=out)
    r.info("hidden")
    r.metrics("eval", step=1, loss=2.0)
    assert err.getvalue() == ""
    assert json.loads(out.getvalue()) == {"event": "eval", "step": 1, "loss": 2.0}


def test_plain_progress_is_throttled_by_clock():
    err = io.StringIO()
    now = [0.0]
    r = Reporter(stderr=err, rich=False, clock=lambda: now[0], plain_interval=10)
    with r.progress(5, "work") as update:
        for _ in range(4):
            now[0] += 3
            update(1, loss=1.0)
        update(1)
    lines = err.getvalue().splitlines()
    assert lines == ["work 4/5 | loss 1", "work 5/5"]


def test_non_main_rank_is_silent(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    err, out = io.StringIO(), io.StringIO()
    r = Reporter(json_mode=True, stderr=err, stdout=out)
    r.info("x"), r.warn("y"), r.event("e")
    assert err.getvalue() == out.getvalue() == ""


def test_text_file_guards(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        check_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="is empty"):
        check_text_file(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"abc\x00\x01\x02")
    with pytest.raises(DataError, match="binary"):
        check_text_file(tmp_path / "bin.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait, tr\xe8s bien".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        check_text_file(tmp_path / "latin.txt")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="no text files"):
        text_files(tmp_path / "d")


def test_output_equal_to_input_is_refused(tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    with pytest.raises(OutputError, match="--overwrite"):
        ensure_can_write(f, [f])
    assert ensure_can_write(f, [f], overwrite=True) == f


def test_rich_mode_draws_progress_on_stderr_not_stdout():
    err, out = io.StringIO(), io.StringIO()
    r = Reporter(stderr=err, stdout=out, rich=True)
    with r.progress(3, "train") as update:
        for _ in range(3):
            update(1, loss=0.5)
    r.info("done")
    assert out.getvalue() == ""
    assert "train" in err.getvalue() and "done" in err.getvalue()


def test_signal_before_the_first_step_interrupts_at_once_then_is_deferred():
    import os
    import signal

    from dlkit.core.interrupt import StopSignal, catch_signals

    with catch_signals(StopSignal()) as stop:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # still preparing: nothing to save yet
        assert stop.poll(1) is False  # the loop has started
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.poll(2) is True and stop.signum == signal.SIGTERM


def test_read_text_plain_gzip_and_bad_files(tmp_path):
    import gzip

    from dlkit.core.errors import DataError
    from dlkit.core.io import read_text

    (tmp_path / "a.txt").write_text("a dog runs\n", encoding="utf-8")
    (tmp_path / "b.txt.gz").write_bytes(gzip.compress("ein Hund läuft\n".encode()))
    assert read_text(tmp_path / "a.txt") == "a dog runs\n"
    assert read_text(tmp_path / "b.txt.gz") == "ein Hund läuft\n"
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b\x08garbage")
    (tmp_path / "latin").write_bytes(b"caf\xe9\n")
    for name, words in [("bin", "binary"), ("bad.gz", "damaged gzip"), ("latin", "not UTF-8"), ("missing", "does not exist")]:
        with pytest.raises(DataError, match=words) as e:
            read_text(tmp_path / name, "caption file")
        assert "\n" not in str(e.value) and "caption file" in str(e.value)
    assert read_text(tmp_path / "latin", errors="replace") == "caf\ufffd\n"

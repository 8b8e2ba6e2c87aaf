"""The batch-mode policy: a bad item is a warning (and a --json record), the rest go on, exit 1 at the end."""

import io
import json

import pytest

from dlkit.core.batch import BatchFailed, run_each
from dlkit.core.errors import DataError, Interrupted
from dlkit.core.report import Reporter


def reporter(json_mode=False):
    out, err = io.StringIO(), io.StringIO()
    return Reporter(json_mode=json_mode, stdout=out, stderr=err, rich=False), out, err


def process(item):
    if item == "bad":
        raise DataError("image 'bad' is damaged")
    if item == "oserr":
        raise PermissionError(13, "Permission denied", "out/oserr.png")
    if item == "value":
        raise ValueError("win_size exceeds image extent")
    return item.upper()


def test_failures_are_warned_and_the_rest_processed():
    rep, out, err = reporter()
    seen = []
    outcome = run_each(["a", "bad", "b", "oserr", "value", "c"], process, rep, progress=lambda n: seen.append(n))
    assert outcome.results == ["A", "B", "C"] and outcome.total == 6 and outcome.ok == 3
    assert [n for n, _ in outcome.failed] == ["bad", "oserr", "value"]
    lines = err.getvalue().splitlines()
    assert lines == ["warning: bad: image 'bad' is damaged", "warning: oserr: Permission denied: 'out/oserr.png'",
                     "warning: value: win_size exceeds image extent"]
    assert out.getvalue() == "" and len(seen) == 6
    with pytest.raises(BatchFailed, match="3 of 6 items failed") as e:
        outcome.raise_if_failed()
    assert e.value.exit_code == 1


def test_json_mode_adds_one_error_record_per_failure():
    rep, out, err = reporter(json_mode=True)
    outcome = run_each(["x", "bad"], process, rep, name=lambda s: f"dir/{s}.png", what="images")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records == [{"event": "error", "path": "dir/bad.png", "error": "image 'bad' is damaged"}]
    with pytest.raises(BatchFailed, match="1 of 2 images failed"):
        outcome.raise_if_failed()
    run_each(["a"], process, rep).raise_if_failed()  # nothing failed: no error


def test_bugs_interrupts_and_closed_pipes_propagate():
    rep, _, _ = reporter()
    for exc in (KeyError("bug"), KeyboardInterrupt(), BrokenPipeError(32, "Broken pipe"), Interrupted("stop")):
        def boom(item, exc=exc):
            raise exc

        with pytest.raises(type(exc)):
            run_each(["a"], boom, rep)

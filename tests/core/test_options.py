"""The one way task commands declare options: plain str choices checked at parse time, exclusive bounds,
--max-time in minutes handed over as seconds."""

from typing import Annotated, Optional

import typer
from typer.testing import CliRunner

from dlkit.core.options import Lr, MaxTime, opt

runner = CliRunner()


def _app():
    app = typer.Typer()

    @app.command()
    def cmd(kind: Annotated[str, opt("--kind", choices=("a", "b"), renamed={"old": "b"}, help="A or B.")] = "a",
            lr: Lr = 1e-3, max_time: MaxTime = None, ratio: Annotated[Optional[float], opt("--ratio", above=0.5,
                                                                                           help="Above a half.")] = None):
        print(repr((kind, lr, max_time, ratio)))

    return app


def test_choices_are_plain_strings_checked_at_parse_time_and_shown_in_help():
    app = _app()
    r = runner.invoke(app, ["--kind", "b"])
    assert r.exit_code == 0 and r.stdout.strip() == "('b', 0.001, None, None)"
    r = runner.invoke(app, ["--kind", "old"])  # an earlier name is still accepted, and renamed
    assert r.exit_code == 0 and r.stdout.startswith("('b'")
    r = runner.invoke(app, ["--kind", "c"])
    assert r.exit_code == 2 and "'c' is not one of a, b" in r.output
    assert "a|b" in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout


def test_bounds_and_minutes():
    app = _app()
    for args in (["--lr", "0"], ["--lr", "-1"], ["--ratio", "0.5"], ["--max-time", "-1"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
    r = runner.invoke(app, ["--lr", "1e-9", "--ratio", "0.51", "--max-time", "1.5"])
    assert r.exit_code == 0 and r.stdout.strip() == "('a', 1e-09, 90.0, 0.51)"
    r = runner.invoke(app, ["--max-time", "0"])  # 0: no limit
    assert r.stdout.strip() == "('a', 0.001, None, None)"


def test_task_choices_match_the_libraries():
    """The CLIs list choices literally (they must not import torch); they must agree with the code."""
    from dlkit.tasks.lm import cli as lm_cli
    from dlkit.tasks.lm.model import PRESETS, RENAMED_PRESETS, preset
    from dlkit.tasks.random_labels import cli as rl_cli
    from dlkit.tasks.random_labels.model import ARCHS

    assert lm_cli.PRESETS == tuple(PRESETS) and lm_cli.RENAMED_PRESETS == RENAMED_PRESETS
    assert preset("baby") == PRESETS["large"]  # states saved under the earlier name still resume
    assert rl_cli.ARCHS == ARCHS

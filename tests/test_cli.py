"""The CLI shell: help without torch, version, doctor, models, man pages, error contract."""

import json
import subprocess
import sys

import pytest
import typer

from dlkit import __version__
from dlkit.cli import app


def _commands():
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="dlkit")
    return root.list_commands(ctx)


def test_every_task_command_is_mounted():
    assert {"lm-train", "lm-sample", "models", "doctor"} <= set(_commands())


@pytest.mark.parametrize("args", [[], ["lm-train"], ["lm-sample"], ["models"], ["doctor"], ["models", "show"]])
def test_help_does_not_import_torch(args):
    code = (
        "import sys; from dlkit.cli import main\n"
        "try:\n    main(sys.argv[1:] + ['--help'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('OK')"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("OK") and "Usage" in r.stdout


def test_all_commands_help_without_torch():
    code = (
        "import sys\nfrom dlkit.cli import main\n"
        f"for c in {_commands()!r}:\n"
        "    try:\n        main([c, '--help'])\n    except SystemExit as e:\n        assert e.code in (0, None)\n"
        "assert 'torch' not in sys.modules\nprint('ALL OK')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ALL OK" in r.stdout


def test_version(invoke):
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"dlkit {__version__}"


def test_doctor_json(invoke):
    r = invoke("doctor", "--json")
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    import torch

    assert info["torch"] == torch.__version__ and info["cuda_available"] == torch.cuda.is_available()
    assert isinstance(info["models"], list) and info["threads"] >= 1


def test_models_lists_home_models_and_shows_cards(invoke, tmp_path, monkeypatch):
    import torch

    from dlkit.core.checkpoint import save_model

    monkeypatch.setenv("DLKIT_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    save_model(tmp_path / "models" / "mine.safetensors", {"w": torch.zeros(10, 3)},
               {"task": "lm", "headline": "val loss 1.23", "training": {"data": "x.txt"}})
    (tmp_path / "models" / "mine.md").write_text("# mine\nA card.\n")
    r = invoke("models", "--json")
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows["mine"]["parameters"] == 30 and rows["mine"]["task"] == "lm" and rows["mine"]["where"] == "home"
    r = invoke("models")
    assert "mine" in r.stdout and "val loss 1.23" in r.stdout
    r = invoke("models", "show", "mine")
    assert r.exit_code == 0 and r.stdout == "# mine\nA card.\n"
    r = invoke("models", "show", "nothing-here")
    assert r.exit_code == 1 and "no model named 'nothing-here'" in r.stderr


def test_bundled_models_have_cards_and_fit_the_budget():
    from dlkit.core.zoo import ZOO_DIR, list_models

    files = list(ZOO_DIR.glob("*.safetensors"))
    assert sum(f.stat().st_size for f in files) <= 48 * 2**20
    for f in files:
        assert f.stat().st_size <= 12 * 2**20, f
        assert f.with_suffix(".md").exists(), f"{f.name} has no model card"
    assert all("error" not in m for m in list_models() if m["where"] == "bundled")


def test_man_pages_are_up_to_date():
    from pathlib import Path

    from dlkit.manpages import generate

    man = Path(__file__).resolve().parent.parent / "man"
    pages = generate()
    assert set(pages) == {p.name for p in man.glob("*.1")}, "run: python -m dlkit.manpages man/"
    for name, text in pages.items():
        assert (man / name).read_text(encoding="utf-8") == text, f"{name} is stale: python -m dlkit.manpages man/"


def test_unknown_option_is_a_usage_error(invoke):
    r = invoke("lm-sample", "--no-such-option")
    assert r.exit_code == 2

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


COMMANDS = {  # every command a user has; a new one is added here, so that it cannot go missing unnoticed
    "lm-train", "lm-sample", "translate-train", "translate", "superres-train", "superres", "caption-train", "caption",
    "adv-attack", "adv-train", "gan-train", "gan-sample", "gan-eval", "fit-random-labels", "frame-predict-train",
    "frame-predict", "classifier-train", "explain", "download", "doctor", "models",
}


def test_every_task_command_is_mounted():
    from dlkit.cli import TASK_APPS

    assert set(_commands()) == COMMANDS
    for sub in TASK_APPS:  # each mounted app brings its commands (an empty app is a wiring mistake)
        assert sub.registered_commands or sub.registered_groups, sub.info.name


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
    assert len(r.stdout.splitlines()) == 1  # one JSON document per line, as --json promises everywhere
    info = json.loads(r.stdout)
    import torch

    assert info["torch"] == torch.__version__ and info["cuda_available"] == torch.cuda.is_available()
    assert isinstance(info["models"], list) and info["threads"] >= 1
    assert isinstance(info["cpu_bf16"], bool) and info["bf16_supported"] >= info["cpu_bf16"]


def test_doctor_bf16_on_cpu_and_cuda_build_without_gpu(invoke, monkeypatch):
    import torch

    import dlkit.info as info

    monkeypatch.setattr(info, "cpu_bf16", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    r = invoke("doctor")
    assert r.exit_code == 0 and "bf16         yes on this CPU" in r.stdout
    assert "is a CUDA build but no CUDA GPU" in r.stderr and "download.pytorch.org/whl/cpu" in r.stderr


def test_cpu_bf16_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    import dlkit.info as info

    real_open = builtins.open
    for flags, want in [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_bf16", True), ("fpu avx2", False)]:
        fake = tmp_path / "cpuinfo"
        fake.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p, *a, **k))
        assert info.cpu_bf16() is want
        monkeypatch.setattr(builtins, "open", real_open)


def test_broken_model_files_in_home_are_skipped_with_a_warning(invoke, tmp_path, monkeypatch):
    import struct

    import torch

    from dlkit.core.modelfile import save_model

    monkeypatch.setenv("DLKIT_HOME", str(tmp_path))
    models = tmp_path / "models"
    models.mkdir()
    save_model(models / "good.safetensors", {"w": torch.zeros(2)}, {"task": "lm"})
    for name, header in [("badjson", {"__metadata__": {"dlkit": "{oops"}}),
                         ("notdict", {"__metadata__": {"dlkit": "{}"}, "w": [1, 2]})]:
        raw = json.dumps(header).encode()
        (models / f"{name}.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    (models / "junk.safetensors").write_bytes(b"\x00" * 50)
    for args in (["models"], ["models", "--json"], ["doctor"], ["doctor", "--json"]):
        r = invoke(*args)
        assert r.exit_code == 0, (args, r.stderr)
        assert r.stderr.count("warning: skipping a model file: ") >= 3 and "unexpected" not in r.stderr
    r = invoke("models", "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert "good" in {m["name"] for m in rows} and not {"badjson", "notdict", "junk"} & {m["name"] for m in rows}
    r = invoke("models", "show", "badjson")
    assert r.exit_code == 1 and "broken dlkit metadata" in r.stderr and r.stderr.count("\n") == 1


def test_usage_errors_are_one_line(invoke):
    for args, what in [(["lm-sample", "--top-k", "0"], "--top-k"), (["lm-train"], "Missing option '--data'"),
                       (["lm-train", "--data", "x", "--preset", "huge"], "--preset")]:
        r = invoke(*args)
        assert r.exit_code == 2 and what in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_closed_stdout_is_never_success(invoke, monkeypatch):
    import dlkit.info as info

    def closed(*a, **k):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(info, "doctor_report", closed)
    r = invoke("doctor")
    assert r.exit_code == 141 and r.stderr == ""


@pytest.mark.slow
def test_bounded_openmp_spin_is_set_before_torch_loads_and_the_users_choice_wins():
    from dlkit.core.threads import SPIN_COUNT, WAIT_KEYS

    code = ("import os, sys, dlkit.__main__; assert 'torch' not in sys.modules; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in __import__("os").environ.items() if k not in WAIT_KEYS}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.split() == ["None", SPIN_COUNT], r.stderr  # python -m dlkit and the dlkit script alike
    for key, value, expected in (("OMP_WAIT_POLICY", "ACTIVE", ["ACTIVE", "None"]),
                                 ("GOMP_SPINCOUNT", "123", ["None", "123"])):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, key: value},
                           timeout=60)
        assert r.stdout.split() == expected, r.stderr



@pytest.mark.parametrize("argv, code", [(["--version"], 0), (["lm-train", "--bogus"], 2)])
def test_a_torchrun_worker_leaves_without_interpreter_teardown(argv, code):
    """Under torchrun (WORLD_SIZE > 1) the worker exits at once with the command's status and its output
    flushed; the interpreter's teardown (atexit, C++ statics after gloo) is skipped. Alone, it runs."""
    import os

    script = ("import atexit, sys; from dlkit.cli import main; "
              "atexit.register(lambda: print('teardown', flush=True)); main(sys.argv[1:])")
    for world, teardown in (("2", False), ("1", True)):
        env = {**os.environ, "WORLD_SIZE": world}
        r = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == code, r.stderr
        assert ("teardown" in r.stdout) is teardown, (world, r.stdout)
        if code == 0:
            assert r.stdout.startswith(f"dlkit {__version__}\n")
        else:
            assert r.stderr.startswith("error: No such option: --bogus")


def test_help_paragraphs_are_reflowed_not_broken_where_the_source_breaks(invoke, monkeypatch):
    from dlkit.cli import reflow

    assert reflow("One\nsentence.\n\nExamples:\n\n  dlkit a\n  dlkit b\n\nText\n- item one\n  goes on\n- two") == (
        "One sentence.\n\nExamples:\n\n  dlkit a\n  dlkit b\n\nText\n- item one\n  goes on\n- two")
    monkeypatch.setenv("COLUMNS", "1000")  # wide enough for any paragraph on one line
    monkeypatch.setenv("TERMINAL_WIDTH", "1000")
    for args, a, b in [(("caption", "--help"), "With --n-best N", "and the n-best list."),
                       (("models", "average", "--help"), "Snapshots of one run", "score it again.")]:
        out = invoke(*args).stdout
        # the docstring breaks this paragraph over several source lines; --help shows it as one
        assert any(a in line and b in line for line in out.splitlines()), out
        assert "  dlkit " in out  # the examples keep their own lines



def test_root_help_indents_its_examples_like_every_command(invoke):
    # Typer dedents the text after the first paragraph as one block: with "Examples:" first in it, the examples
    # lost their indent on the root's --help only
    out = invoke("--help").stdout
    assert any(line.strip() == "dlkit models" and "   dlkit models" in line for line in out.splitlines()), out
    assert any(line.strip() == "Examples:" and not line.startswith("   ") for line in out.splitlines()), out

def test_models_lists_home_models_and_shows_cards(invoke, tmp_path, monkeypatch):
    import torch

    from dlkit.core.modelfile import save_model

    monkeypatch.setenv("DLKIT_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    save_model(tmp_path / "models" / "mine.safetensors", {"w": torch.zeros(10, 3)},
               {"task": "lm", "headline": "val loss 1.23", "training": {"data": "x.txt"}})
    save_model(tmp_path / "models" / "long.safetensors", {"w": torch.zeros(2)},
               {"task": "lm", "headline": "val loss 2.5",
                "training": {"data": "CIFAR-10, lossy JPEG copy (cifar10_jpeg.npz), all 50,000 images"}})
    (tmp_path / "models" / "mine.md").write_text("# mine\nA card.\n")
    r = invoke("models", "--json")
    rows = {m["name"]: m for m in map(json.loads, r.stdout.splitlines())}
    assert rows["mine"]["parameters"] == 30 and rows["mine"]["task"] == "lm" and rows["mine"]["where"] == "home"
    r = invoke("models")
    assert "mine" in r.stdout and "val loss 1.23" in r.stdout
    long_row = next(line for line in r.stdout.splitlines() if line.startswith("long "))
    # a long data description is cut between words and marked, and the metric column still lines up
    assert "CIFAR-10, lossy JPEG copy..." in long_row and "(c" not in long_row
    assert long_row.index("val loss 2.5") == r.stdout.splitlines()[0].index("metric")
    r = invoke("models", "show", "mine")
    assert r.exit_code == 0 and r.stdout == "# mine\nA card.\n"
    r = invoke("models", "show", "mine", "--json")
    assert len(r.stdout.splitlines()) == 1 and json.loads(r.stdout)["headline"] == "val loss 1.23"
    r = invoke("models", "show", "nothing-here")
    assert r.exit_code == 1 and "no model named 'nothing-here'" in r.stderr


def test_bundled_models_have_cards_and_fit_the_budget():
    from dlkit.core.zoo import ZOO_DIR, list_models

    files = list(ZOO_DIR.glob("*.safetensors"))
    # the project's budget: each file <= 12 MB, all of them <= 56 MB (decimal megabytes, the stricter reading)
    assert sum(f.stat().st_size for f in files) <= 56 * 10**6
    for f in files:
        assert f.stat().st_size <= 12 * 10**6, f
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

"""The CPU defaults chosen by measurement: OpenMP's wait (core.threads) and what --precision auto means per
model family (core.runtime.CPU_AUTO_BF16, from benchmarks/cpu_speed.py)."""

from types import SimpleNamespace

import pytest
import torch

from dlkit.core import runtime
from dlkit.core.errors import UsageError
from dlkit.core.runtime import resolve_precision
from dlkit.core.threads import SPIN_COUNT, WAIT_KEYS, openmp_wait_env

CPU = torch.device("cpu")


def test_openmp_wait_is_a_bounded_spin_unless_the_user_chose():
    env = openmp_wait_env({"PATH": "/bin"})
    assert env["GOMP_SPINCOUNT"] == SPIN_COUNT and 0 < int(SPIN_COUNT) < 300_000  # below libgomp's own default
    assert "OMP_WAIT_POLICY" not in env  # PASSIVE (no spin) cost 2x on an idle machine
    for key in WAIT_KEYS:
        assert openmp_wait_env({key: "x"}) == {}, key
    assert openmp_wait_env({"OMP_WAIT_POLICY": ""})["GOMP_SPINCOUNT"] == SPIN_COUNT  # empty = unset


def test_precision_auto_follows_the_measured_table_per_family(monkeypatch):
    monkeypatch.setattr(runtime, "CPU_AUTO_BF16", frozenset({"gan"}))
    yes, no = (lambda: True), (lambda: False)
    assert resolve_precision("auto", CPU, "gan", native_bf16=yes) == "bf16"
    assert resolve_precision("auto", CPU, "gan", native_bf16=no) == "fp32"  # emulated bf16: never by default
    assert resolve_precision("auto", CPU, "lm", native_bf16=yes) == "fp32"
    assert resolve_precision("auto", CPU, None, native_bf16=yes) == "fp32"
    assert resolve_precision("fp32", CPU, "gan", native_bf16=yes) == "fp32"  # the user's choice wins
    assert resolve_precision("bf16", CPU, "lm", native_bf16=no) == "bf16"
    with pytest.raises(UsageError):
        resolve_precision("fp16", CPU, "gan", native_bf16=yes)


def test_the_small_gpt_stays_fp32_on_the_cpu():
    # measured no faster under bf16 autocast (small matmuls; the casts cost what they save): never in the table
    assert "lm" not in runtime.CPU_AUTO_BF16
    assert resolve_precision("auto", CPU, "lm", native_bf16=lambda: True) == "fp32"


def test_free_cores_leaves_out_this_process_own_work(monkeypatch):
    from dlkit.core import threads

    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    # 2 s on 2 cores at 100 jiffies/s = 400 jiffies; this process used 1 core (2 CPU s) the whole time
    opened = ((1000, 5000), 10.0, 3.0)
    alone = ((1000 + 200, 5400), 12.0, 5.0)  # the other core idle: both cores are free for our threads
    beside = ((1000 + 0, 5400), 12.0, 5.0)  # no idle jiffy: another process took the other core
    monkeypatch.setattr(threads, "_sample", lambda: alone)
    assert threads.free_cores(since=opened) == pytest.approx(2.0)
    monkeypatch.setattr(threads, "_sample", lambda: beside)
    assert threads.free_cores(since=opened) == pytest.approx(1.0)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "_OPENED", opened)
    clock = SimpleNamespace(monotonic=lambda: 12.0, sleep=lambda s: pytest.fail("no sleep: the window is open"))
    monkeypatch.setattr(threads, "time", clock)  # the window opened at import is 2 s old
    assert threads.default_threads() == 1
    monkeypatch.setattr(threads, "_sample", lambda: alone)
    assert threads.default_threads() == 2


def test_free_cores_without_proc_is_unknown(monkeypatch):
    from dlkit.core import threads

    monkeypatch.setattr(threads, "_cpu_times", lambda: None)
    assert threads.free_cores(window=0.0) is None


@pytest.mark.slow
def test_torch_loads_with_the_gc_paused_and_its_objects_frozen():
    import subprocess
    import sys

    code = "import gc, dlkit.core.runtime; print(gc.isenabled(), gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True" and int(out[1]) > 50_000  # torch's long-lived objects, out of every later collection


def test_precision_auto_is_bf16_for_the_large_gpt_only(monkeypatch):
    yes = lambda: True  # noqa: E731
    assert resolve_precision("auto", CPU, "lm-large", native_bf16=yes) == "bf16"  # 1.46x, same losses (RESULTS)
    for family in ("lm-small", "lm-tiny", "lm-medium", "lm"):
        assert resolve_precision("auto", CPU, family, native_bf16=yes) == "fp32", family


OURS = {"GOMP_SPINCOUNT": SPIN_COUNT, "KMP_BLOCKTIME": "1"}


def test_a_watched_training_spins_long_only_when_every_core_is_free_and_the_setting_is_ours(monkeypatch):
    import sys

    from dlkit.core import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "free_cores", lambda: 1.9)
    assert threads.spin_when_idle(OURS) == {}  # torch is loaded in this process: OpenMP has read its settings
    monkeypatch.delitem(sys.modules, "torch")
    assert threads.spin_when_idle(OURS) == {"GOMP_SPINCOUNT": threads.IDLE_SPIN_COUNT}
    assert int(threads.IDLE_SPIN_COUNT) > 300_000  # longer than libgomp's own default
    assert threads.spin_when_idle({"GOMP_SPINCOUNT": "5000"}) == {}  # the user's choice
    assert threads.spin_when_idle({**OURS, "OMP_WAIT_POLICY": "PASSIVE"}) == {}
    assert threads.spin_when_idle({**OURS, "WORLD_SIZE": "2"}) == {}  # torchrun ranks share the cores
    assert threads.spin_when_idle(OURS, threads=1) == {}
    monkeypatch.setattr(threads, "free_cores", lambda: 1.2)  # another process takes most of a core
    assert threads.spin_when_idle(OURS) == {}


def test_busy_watch_follows_the_free_cores_between_one_and_the_starting_threads(monkeypatch):
    from dlkit.core import threads

    now, free = [100.0], [2.0]
    monkeypatch.setattr(threads, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(threads, "_sample", lambda: (None, now[0], 0.0))
    monkeypatch.setattr(threads, "free_cores", lambda since=None: free[0])
    calls, notes = [], []
    watch = threads.BusyWatch(2, calls.append, notes.append, period=2.0)
    free[0] = 0.7
    now[0] += 1.0
    watch()
    assert calls == []  # not measured within the period
    now[0] += 1.5
    watch()
    assert calls == [1] and "1 thread now" in notes[-1]
    now[0] += 2.5
    watch()
    assert calls == [1]  # unchanged: not set again
    free[0] = 3.9  # more than it started with: capped
    now[0] += 2.5
    watch()
    assert calls == [1, 2] and "2 threads now" in notes[-1]


def test_busy_watch_is_a_no_op_with_dlkit_short_spin():
    from dlkit.core import threads

    before = torch.get_num_threads()
    watch = threads.busy_watch(environ=OURS)
    watch()
    assert not isinstance(watch, threads.BusyWatch) and torch.get_num_threads() == before
    assert isinstance(threads.busy_watch(environ={"GOMP_SPINCOUNT": threads.IDLE_SPIN_COUNT}), threads.BusyWatch)


def test_memory_format_auto_is_channels_last_for_the_measured_families_on_cpu_only():
    from dlkit.core.runtime import CPU_CHANNELS_LAST, resolve_memory_format

    assert {"superres", "random-labels"} <= CPU_CHANNELS_LAST
    assert not {"gan", "frames"} & CPU_CHANNELS_LAST  # not faster on every CPU measured
    assert resolve_memory_format("auto", CPU, "superres") is True
    assert resolve_memory_format("auto", CPU, "gan") is False and resolve_memory_format("auto", CPU, None) is False
    assert resolve_memory_format("auto", torch.device("cuda"), "superres") is False  # not measured on GPUs
    assert resolve_memory_format("contiguous", CPU, "superres") is False  # the user's choice wins
    assert resolve_memory_format("channels-last", CPU, "gan") is True
    with pytest.raises(UsageError, match="--memory-format"):
        resolve_memory_format("nhwc", CPU, "superres")


def test_runtime_wrap_puts_conv_weights_in_channels_last_and_saves_the_same_values():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 9, 9)
    y_ref = net(x)
    rt = runtime.make_runtime("cpu", "fp32", 0, distributed=False, threads=1, family="superres", memory_format="auto")
    assert rt.channels_last
    wrapped = rt.wrap(net)
    assert wrapped[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not wrapped[0].weight.is_contiguous()
    assert torch.allclose(wrapped(x), y_ref, atol=1e-5)
    assert all(torch.equal(v, ref[k]) for k, v in wrapped.state_dict().items())
    rt2 = runtime.make_runtime("cpu", "fp32", 0, distributed=False, threads=1, family="superres",
                               memory_format="contiguous")
    assert not rt2.channels_last and rt2.wrap(torch.nn.Conv2d(3, 8, 3)).weight.is_contiguous()


def test_precision_auto_is_bf16_for_the_convnets_checked_for_quality():
    yes = lambda: True  # noqa: E731
    for family in ("classifier", "superres", "gan:dcgan", "frames:simvp", "random-labels:inception-small"):
        assert resolve_precision("auto", CPU, family, native_bf16=yes) == "bf16", family
        assert resolve_precision("auto", CPU, family, native_bf16=lambda: False) == "fp32", family  # emulated
    for family in ("gan:mlp", "frames:convlstm", "random-labels:mlp-1x512", "translate", "caption", None):
        assert resolve_precision("auto", CPU, family, native_bf16=yes) == "fp32", family
    assert resolve_precision("fp32", CPU, "superres", native_bf16=yes) == "fp32"


def test_a_variant_family_takes_its_task_memory_format():
    from dlkit.core.runtime import resolve_memory_format

    assert resolve_memory_format("auto", CPU, "random-labels:mlp-1x512") is True
    assert resolve_memory_format("auto", CPU, "frames:simvp") is False
    assert resolve_memory_format("auto", CPU, "gan:dcgan") is False


@pytest.mark.parametrize("args,family", [
    (["gan-train", "--dataset", "ring"], "gan:mlp"),
    (["gan-train", "--dataset", "mnist"], "gan:dcgan"),
    (["gan-train", "--dataset", "gaussian", "--arch", "dcgan"], "gan:dcgan"),
    (["classifier-train", "--data", "x.npz"], "classifier"),
    (["fit-random-labels", "--data", "x.npz", "--arch", "inception-small"], "random-labels:inception-small"),
    (["frame-predict-train", "--data", "x.npz", "--preset", "convlstm-cpu"], "frames:convlstm"),
    (["frame-predict-train", "--data", "x.npz"], "frames:simvp"),
])
def test_training_commands_name_their_family(invoke, monkeypatch, tmp_path, args, family):
    from dlkit.core import training

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.npz").write_bytes(b"")  # never read: the training is replaced
    seen = {}
    monkeypatch.setattr(training, "run_training", lambda *a, **kw: seen.update(kw))
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert seen["family"] == family


def test_frame_training_from_an_init_model_takes_its_arch(invoke, monkeypatch, tmp_path):
    from dlkit.core import training
    from dlkit.core.modelfile import save_model

    init = tmp_path / "m.safetensors"
    save_model(init, {"w": torch.zeros(2)}, {"task": "frames", "arch": "convlstm"})
    seen = {}
    monkeypatch.setattr(training, "run_training", lambda *a, **kw: seen.update(kw))
    assert invoke("frame-predict-train", "--data", "x.npz", "--init", init).exit_code == 0
    assert seen["family"] == "frames:convlstm"
    assert invoke("frame-predict-train", "--data", "x.npz", "--init", tmp_path / "missing.safetensors").exit_code == 0
    assert seen["family"] == "frames"  # the training itself reports the missing file

"""The CPU defaults chosen by measurement: OpenMP's wait (core.threads) and what --precision auto means per
model family (core.runtime.CPU_AUTO_BF16, from benchmarks/cpu_speed.py)."""

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

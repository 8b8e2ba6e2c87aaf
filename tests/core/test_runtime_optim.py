import math

import pytest
import torch

from dlkit.core.errors import UsageError
from dlkit.core.optim import inverse_sqrt, optimizer_step, warmup_cosine
from dlkit.core.runtime import make_runtime, resolve_device, resolve_precision, unwrap


def test_device_and_precision_resolution_on_cpu():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(UsageError):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(UsageError):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(UsageError):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_request_without_cuda_is_a_clear_error():
    from dlkit.core.errors import DlkitError

    with pytest.raises(DlkitError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_runtime_seeds_and_autocast():
    rt = make_runtime("cpu", "fp32", seed=3, distributed=False)
    a = torch.rand(3)
    make_runtime("cpu", "fp32", seed=3, distributed=False)
    assert torch.equal(a, torch.rand(3))
    assert not rt.distributed and rt.is_main and not rt.scaler.is_enabled()
    rt16 = make_runtime("cpu", "bf16", seed=3, distributed=False)
    with rt16.autocast():
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    model = torch.nn.Linear(2, 2)
    assert unwrap(rt.wrap(model)) is model


def test_warmup_cosine_shape():
    lrs = [warmup_cosine(s, 1.0, 10, 100, 0.1) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:100]))  # decays monotonically
    assert lrs[100] == lrs[119] == 0.1
    assert inverse_sqrt(3, 1.0, 4) == pytest.approx(1.0)
    assert inverse_sqrt(15, 1.0, 4) == pytest.approx(math.sqrt(4 / 16))


def test_optimizer_step_clips_and_accumulates():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    x = torch.randn(8, 3) * 100
    before = [p.detach().clone() for p in m.parameters()]
    assert optimizer_step(m(x).pow(2).mean(), opt, scaler, clip=1.0, step=False) is None
    assert all(p.grad is not None for p in m.parameters())
    norm = optimizer_step(m(x).pow(2).mean(), opt, scaler, clip=1.0)
    assert norm > 1.0  # reported before clipping
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(m.parameters(), before)))
    assert moved.item() == pytest.approx(0.1, rel=1e-4)  # lr * clipped norm of 1
    assert all(p.grad is None for p in m.parameters())

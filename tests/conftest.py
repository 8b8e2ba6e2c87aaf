import os

import pytest

os.environ.setdefault("DLKIT_HOME", os.path.join(os.path.dirname(__file__), ".dlkit-home-unused"))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class StopAt:
    """A StopSignal that asks a training loop to stop at optimizer step ``step`` (interrupt + resume tests).

    Subclasses dlkit.core.interrupt.StopSignal lazily so that importing conftest stays cheap."""

    def __new__(cls, step: int):
        from dlkit.core.interrupt import StopSignal

        class _StopAt(StopSignal):
            def __init__(self, at: int):
                super().__init__()
                self.step = at

            def poll(self, step: int) -> bool:
                self.armed = True
                return step == self.step

        return _StopAt(step)


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run the dlkit CLI in-process; returns the result with .exit_code, .stdout and .stderr."""
    from dlkit.cli import app

    def _invoke(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return _invoke


@pytest.fixture
def one_thread():
    """One intra-op thread: small convolutions are fastest, and timings steadiest, that way on a shared CPU."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

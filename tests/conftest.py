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

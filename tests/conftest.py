import pytest
import torch

FLOAT_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    """Run a test once in float32 and once in float64."""
    return request.param


@pytest.fixture
def tol(dtype) -> float:
    """A relative tolerance suited to the dtype under test."""
    return FLOAT_TOLERANCE[dtype]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

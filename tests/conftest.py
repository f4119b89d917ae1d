import pytest
import torch

# e3nn's own o3 tests run through tests/e3nn_o3/run.py, in a process of their own where the alias
# package ``e3nn`` (equitensor's names) replaces the real e3nn; importing it here would clash.
collect_ignore = ["e3nn_o3"]

FLOAT_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    """Run a test once in float32 and once in float64."""
    return request.param


@pytest.fixture
def tol(dtype) -> float:
    """A relative tolerance suited to the dtype under test."""
    return FLOAT_TOLERANCE[dtype]


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of tiny models or products: on a busy 2-core machine
    every multi-threaded call waits for its second thread. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _temporary_cache(tmp_path_factory):
    """Tests never write into the user's cache (auto-backend choices, CP factors): one temporary
    folder for the session. (The compiled CPU kernel keeps its own build cache,
    $EQUITENSOR_KERNEL_CACHE, like any compiled torch extension.)"""
    import os

    previous = os.environ.get("EQUITENSOR_CACHE")
    os.environ["EQUITENSOR_CACHE"] = str(tmp_path_factory.mktemp("equitensor-cache"))
    yield
    if previous is None:
        os.environ.pop("EQUITENSOR_CACHE", None)
    else:
        os.environ["EQUITENSOR_CACHE"] = previous

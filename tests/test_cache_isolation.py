"""The test session's cache is a temporary folder, not the user's."""

import os
from pathlib import Path

from equitensor.cache import cache_dir


def test_tests_use_a_temporary_cache():
    home_cache = Path(os.path.expanduser("~")) / ".cache" / "equitensor"
    assert os.environ.get("EQUITENSOR_CACHE")
    assert home_cache not in cache_dir("auto").parents

"""The cache folder rule and the atomic file write shared by the CP and auto backends and model saving."""

import os
from pathlib import Path

import pytest

from equitensor.cache import cache_dir
from equitensor.serialization import atomic_write
from equitensor.tp.backends import auto, cp


def test_cache_dir_prefers_equitensor_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path / "own"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("cp") == tmp_path / "own" / "cp"
    monkeypatch.delenv("EQUITENSOR_CACHE")
    assert cache_dir("cp") == tmp_path / "xdg" / "equitensor" / "cp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("auto") == tmp_path / "home" / ".cache" / "equitensor" / "auto"


def test_backends_use_their_own_subfolder(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))
    assert cp.cache_dir() == tmp_path / "cp"
    assert auto.cache_dir() == tmp_path / "auto"


def test_atomic_write_replaces_the_file_only_when_the_block_succeeds(tmp_path):
    path = tmp_path / "sub" / "entry.json"
    with atomic_write(path, "w") as f:
        f.write("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError, match="interrupted"), atomic_write(path, "w") as f:
        f.write("half")
        raise RuntimeError("interrupted")
    assert path.read_text() == "first"
    assert sorted(os.listdir(Path(path).parent)) == ["entry.json"]  # no temporary file left behind

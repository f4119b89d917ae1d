"""Packaging: models/ and datasets/ are installed as equitensor.models and equitensor.datasets."""

from pathlib import Path


def test_subpackages_install_under_equitensor():
    import equitensor.datasets
    import equitensor.models

    assert Path(equitensor.models.__file__).parent.name == "models"
    assert Path(equitensor.datasets.__file__).parent.name == "datasets"


def test_every_python_package_is_listed_in_pyproject():
    """A regular (non-editable) install ships only the packages pyproject.toml lists."""
    import pytest

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(root / folder).parts
            found.add(".".join((name, *relative)))
    assert found - listed == set(), f"packages missing from pyproject.toml: {sorted(found - listed)}"

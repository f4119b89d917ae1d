"""Packaging: models/ and datasets/ are installed as equitensor.models and equitensor.datasets."""

from pathlib import Path


def test_subpackages_install_under_equitensor():
    import equitensor.datasets
    import equitensor.models

    assert Path(equitensor.models.__file__).parent.name == "models"
    assert Path(equitensor.datasets.__file__).parent.name == "datasets"

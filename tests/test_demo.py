"""The demo that README's first command runs: it must work and its symmetry check must be able to fail."""

import torch

from equitensor.cli import main
from equitensor.demo import TinyPotential, run_demo


def test_demo_symmetry_errors_are_tiny():
    results = run_demo()
    errors = [value for key, value in results.items() if "error" in key]
    assert len(errors) == 4 and max(errors) < 1e-9


def test_demo_model_detects_a_broken_symmetry():
    """Feeding raw coordinates as an extra 'scalar' breaks invariance; the same check must see it."""
    model = TinyPotential(1).double()
    positions = torch.randn(5, 3, dtype=torch.float64)
    one_hot = torch.ones(5, 1, dtype=torch.float64)
    rotation = -torch.eye(3, dtype=torch.float64)
    energy = model(positions, one_hot + positions[:, :1])
    moved = positions @ rotation.T
    assert abs(model(moved, one_hot + moved[:, :1]).item() - energy.item()) > 1e-6


def test_cli_demo_exit_code(capsys):
    assert main(["demo"]) == 0
    assert "symmetry holds" in capsys.readouterr().out

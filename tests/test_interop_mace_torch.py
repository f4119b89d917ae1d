"""equitensor.interop.mace_torch against mace-torch itself (skipped where mace is not installed):
the twin built from our config, with our weights loaded, gives our energies, forces and training
gradients; the product basis alone gives our outputs. Tiny sizes, float64."""

import pytest
import torch
from ase.build import bulk

from equitensor.datasets.graphs import graph_from_atoms
from equitensor.interop import mace_torch as bridge
from equitensor.models import MACE
from equitensor.nn import SymmetricContraction
from equitensor.tp import spherical_irreps


def small_cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.numbers[[1, 2]] = 28
    atoms.rattle(0.05, seed=1)
    return graph_from_atoms(atoms, 3.0, dtype=torch.float64)


def test_twin_model_gives_our_energy_forces_and_training_gradients():
    pytest.importorskip("mace.modules.models")
    torch.manual_seed(0)
    graph = small_cell()
    ours = MACE(
        [28, 29],
        r_max=3.0,
        max_ell=2,
        num_channels=4,
        correlation=[3, 2],
        radial_MLP=[8, 8],
        MLP_irreps="4x0e",
        avg_num_neighbors=6.0,
        atomic_energies=[-1.0, -2.0],
        scale=1.3,
        shift=0.2,
    ).double()
    theirs = bridge.mace_torch_model(ours, torch.float64)
    assert torch.get_default_dtype() == torch.float32  # restored after building
    before = [p.detach().clone() for p in ours.parameters()]
    bridge.load_mace_torch_weights(ours, theirs)
    assert any(not torch.equal(a, b) for a, b in zip(before, ours.parameters()))  # weights did move

    out = ours(graph, training=True)
    ref = theirs(bridge.mace_torch_inputs(ours, graph), training=True, compute_force=True)
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=1e-10, atol=1e-12)
    assert ref["forces"].abs().max() > 1e-3

    matches = bridge.mace_torch_parameter_map(ours, theirs)
    assert [m.name for m in matches] == [name for name, _ in ours.named_parameters()]
    params = list(ours.parameters())
    loss = (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum()
    ours_grads = torch.autograd.grad(loss, params)
    their_loss = (ref["energy"] ** 2).sum() + (ref["forces"] ** 2).sum()
    tensors = [m.theirs for m in matches if not m.frozen_zero]
    their_grads = torch.autograd.grad(their_loss, tensors, allow_unused=True)
    mapped = bridge.gradients_as_ours(ours, matches, list(their_grads))
    for (name, _), a, b in zip(ours.named_parameters(), ours_grads, mapped):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("lmax_in, lmax_out", [(2, 1), (3, 2)])
def test_twin_contraction_gives_our_product_basis(lmax_in, lmax_out):
    """At lmax_in 3, e3nn 0.4's wigner_3j signs flip some of mace-torch's U columns: the loader
    negates those weights so that the lone contraction computes our function."""
    pytest.importorskip("mace.modules.symmetric_contraction")
    from e3nn import o3
    from mace.modules.irreps_tools import reshape_irreps

    torch.manual_seed(0)
    irreps_in, irreps_out = spherical_irreps(3, lmax_in), spherical_irreps(3, lmax_out)
    ours = SymmetricContraction(irreps_in, irreps_out, 3, 2).double()
    theirs = bridge.mace_torch_contraction(irreps_in, irreps_out, 3, 2, torch.float64)
    bridge.load_mace_torch_contraction_weights(ours, theirs)
    x = torch.randn(5, irreps_in.dim, dtype=torch.float64)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).double()
    features = bridge.features_to_mace_torch(x, irreps_in)
    torch.testing.assert_close(features, reshape_irreps(o3.Irreps(str(irreps_in)))(x), rtol=0, atol=0)
    torch.testing.assert_close(bridge.features_from_mace_torch(features, irreps_in), x, rtol=0, atol=0)
    torch.testing.assert_close(ours(x, attrs), theirs(features, attrs), rtol=1e-12, atol=1e-12)


def test_mismatched_architectures_are_refused():
    pytest.importorskip("mace.modules.models")
    ours = MACE([1, 8], r_max=3.0, max_ell=1, num_channels=2, radial_MLP=[4], num_interactions=2)
    other = MACE([1, 8], r_max=3.0, max_ell=1, num_channels=2, radial_MLP=[4], num_interactions=1)
    theirs = bridge.mace_torch_model(other, torch.float64)
    with pytest.raises(ValueError, match="interactions"):
        bridge.load_mace_torch_weights(ours.double(), theirs)
    gaunt = MACE([1, 8], r_max=3.0, max_ell=1, num_channels=2, product_backend="gaunt")
    with pytest.raises(ValueError, match="product_backend"):
        bridge.mace_torch_model(gaunt)

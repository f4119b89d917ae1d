"""equitensor.interop.mace_torch against mace-torch itself (skipped where mace is not installed):
the twin built from our config, with our weights loaded, gives our energies, forces and training
gradients; the product basis alone gives our outputs. Tiny sizes, float64."""

import pytest
import torch
from ase.build import bulk

from equitensor.datasets.atoms_to_graph import graph_from_atoms
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


def test_convert_a_trained_mace_torch_model_then_fine_tune_it(tmp_path, capsys):
    """A tiny mace-torch ScaleShiftMACE, trained here for a few Adam steps on EMT forces, saved as
    mace-torch saves models, converted by ``equitensor convert --from mace-torch``: same energies
    and forces (1e-10, float64) on a cell and a molecule; then fine-tuned for one epoch."""
    pytest.importorskip("mace.modules.models")
    import yaml
    from ase.build import molecule
    from train_helpers import emt_frames, tiny_config, write_frames

    from equitensor import load_model
    from equitensor.cli import main

    torch.manual_seed(0)
    template = MACE([28, 29], r_max=3.0, num_channels=4, max_L=1, max_ell=2, correlation=2, radial_MLP=[8])
    theirs = bridge.mace_torch_model(template)
    frames = emt_frames(6, seed=5, isolated=False)
    optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    for atoms in frames[:4]:  # a few training steps of mace-torch itself
        graph = graph_from_atoms(atoms, 3.0, torch.float64)
        out = theirs(bridge.mace_torch_inputs(template, graph), training=True, compute_force=True)
        target = torch.tensor(atoms.get_forces(), dtype=torch.float64)
        loss = (out["forces"] - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    source = tmp_path / "mace_torch.model"
    torch.save(theirs, source)
    converted = tmp_path / "converted.model"
    assert main(["convert", "--from", "mace-torch", str(source), str(converted)]) == 0
    ours = load_model(converted).double()
    mol = molecule("CH4")
    mol.numbers[:] = [29, 28, 28, 28, 28]
    for graph in (small_cell(), graph_from_atoms(mol, 3.0, torch.float64)):
        expected = theirs(bridge.mace_torch_inputs(ours, graph), training=False, compute_force=True)
        got = ours(graph)
        torch.testing.assert_close(got["energy"], expected["energy"].detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got["forces"], expected["forces"].detach(), rtol=1e-10, atol=1e-10)

    data = write_frames(tmp_path / "new.xyz", frames)
    config = tiny_config(tmp_path, data, model="mace", epochs=1, init_from=str(converted), model_kwargs={})
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "tiny.model").is_file()


def test_convert_refuses_what_does_not_map(tmp_path):
    models = pytest.importorskip("mace.modules.models")
    torch.manual_seed(0)
    template = MACE([28, 29], r_max=3.0, num_channels=4, max_L=1, max_ell=2, correlation=2, radial_MLP=[8])
    theirs = bridge.mace_torch_model(template)
    theirs.__class__ = models.MACE  # the same modules, but not a ScaleShiftMACE
    with pytest.raises(ValueError, match="model class MACE"):
        bridge.mace_from_mace_torch(theirs)

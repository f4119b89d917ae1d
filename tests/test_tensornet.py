"""TensorNet: symmetries, derivatives against finite differences, cutoff, periodic images, E0s,
save/load and force training. Tiny models (8 channels) so everything runs in seconds."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

import equitensor
from equitensor import rand_matrix
from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.graph import AtomicGraph, batch_graphs
from equitensor.models import TensorNet

CUTOFF = 3.0
ELEMENTS = [1, 6, 8, 14]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def make_model(group: str = "O(3)", dtype: str = "float64", seed: int = 0, **kwargs) -> TensorNet:
    """A tiny TensorNet whose parameters are jittered so no layer sits at a special initial value."""
    torch.manual_seed(seed)
    options = dict(hidden_channels=8, num_layers=2, num_rbf=6, cutoff=CUTOFF, atomic_numbers=ELEMENTS)
    model = TensorNet(equivariance_invariance_group=group, dtype=dtype, **{**options, **kwargs})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=1)
    return atoms


def small_cell() -> Atoms:
    """Two atoms in a skewed cell much smaller than the cutoff: neighbours through several images."""
    cell = [[2.2, 0.0, 0.0], [0.5, 2.4, 0.0], [0.3, -0.4, 2.6]]
    return Atoms("SiO", scaled_positions=[[0.1, 0.05, 0.0], [0.55, 0.45, 0.6]], cell=cell, pbc=True)


def graph_of(atoms: Atoms, dtype=torch.float64, r_max: float = CUTOFF) -> AtomicGraph:
    return graph_from_atoms(atoms, r_max, dtype)


def energy_of(model: TensorNet, atoms: Atoms) -> float:
    return model(graph_of(atoms), compute_forces=False)["energy"].item()


def transformed(graph: AtomicGraph, rotation: torch.Tensor, translation: torch.Tensor) -> AtomicGraph:
    """Apply r -> R r + t to the atoms and R to the cell rows (lattice vectors)."""
    return replace(graph, positions=graph.positions @ rotation.T + translation, cell=graph.cell @ rotation.T)


def permuted(graph: AtomicGraph, perm: torch.Tensor) -> AtomicGraph:
    """Reorder atoms (new atom k is old atom perm[k]) and shuffle the edge order."""
    new_index = torch.empty_like(perm)
    new_index[perm] = torch.arange(len(perm))
    edge_order = torch.randperm(graph.num_edges)
    return replace(
        graph,
        positions=graph.positions[perm],
        numbers=graph.numbers[perm],
        batch=graph.batch[perm],
        edge_index=new_index[graph.edge_index[:, edge_order]],
        unit_shifts=graph.unit_shifts[edge_order],
    )


def orthogonal(reflect: bool) -> torch.Tensor:
    rotation = rand_matrix(dtype=torch.float64)
    return -rotation if reflect else rotation


# --- symmetries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["O(3)", "SO(3)"])
@pytest.mark.parametrize("structure", [ethanol, small_cell], ids=["molecule", "periodic"])
def test_rotations_translations_permutations(group, structure):
    model = make_model(group)
    graph = graph_of(structure())
    ref = model(graph, compute_stress=True)
    for _ in range(3):
        rotation = orthogonal(reflect=False)
        moved = transformed(graph, rotation, torch.randn(3, dtype=torch.float64))
        out = model(moved, compute_stress=True)
        torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out["node_energy"], ref["node_energy"], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out["forces"], ref["forces"] @ rotation.T, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(
            out["stress"], rotation @ ref["stress"] @ rotation.T, rtol=1e-9, atol=1e-10
        )
    perm = torch.randperm(graph.num_nodes)
    out = model(permuted(graph, perm), compute_stress=True)
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["forces"], ref["forces"][perm], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out["stress"], ref["stress"], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("structure", [ethanol, small_cell], ids=["molecule", "periodic"])
def test_o3_variant_is_reflection_invariant(structure):
    model = make_model("O(3)")
    graph = graph_of(structure())
    ref = model(graph, compute_stress=True)
    for _ in range(3):
        reflection = orthogonal(reflect=True)
        out = model(transformed(graph, reflection, torch.zeros(3, dtype=torch.float64)), compute_stress=True)
        torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(out["forces"], ref["forces"] @ reflection.T, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(
            out["stress"], reflection @ ref["stress"] @ reflection.T, rtol=1e-9, atol=1e-10
        )


def test_so3_variant_is_only_rotation_invariant():
    """The plain product 2 Y M mixes the pseudo-tensor part into scalars: a mirror image of a chiral
    structure gets another energy (torchmd-net's documented SO(3) behaviour)."""
    model = make_model("SO(3)")
    graph = graph_of(ethanol())
    energy = model(graph, compute_forces=False)["energy"]
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    mirrored = model(transformed(graph, mirror, torch.zeros(3, dtype=torch.float64)), compute_forces=False)
    assert (mirrored["energy"] - energy).abs().item() > 1e-6 * energy.abs().item()


def test_float32_matches_float64_and_is_invariant():
    model64 = make_model()
    model32 = TensorNet(**{**model64.config, "dtype": "float32"})
    model32.load_state_dict(model64.state_dict())
    assert next(model32.parameters()).dtype == torch.float32
    graph = graph_of(small_cell())
    ref = model64(graph, compute_stress=True)
    out = model32(graph.to(dtype=torch.float32), compute_stress=True)
    assert out["energy"].dtype == torch.float32 and out["forces"].dtype == torch.float32
    torch.testing.assert_close(out["energy"].double(), ref["energy"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["forces"].double(), ref["forces"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["stress"].double(), ref["stress"], rtol=1e-4, atol=1e-4)
    rotation = orthogonal(reflect=True).float()
    moved = model32(transformed(graph.to(dtype=torch.float32), rotation, torch.zeros(3)), compute_forces=True)
    torch.testing.assert_close(moved["energy"], out["energy"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(moved["forces"], out["forces"] @ rotation.T, rtol=1e-4, atol=1e-4)


# --- derivatives ---------------------------------------------------------------------------------


def finite_difference_forces(model: TensorNet, atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    forces = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, k] += sign * h
                energies.append(energy_of(model, moved))
            forces[a, k] = -(energies[0] - energies[1]) / (2 * h)
    return forces


def finite_difference_stress(model: TensorNet, atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    """sigma_ij = dE/d(eps_ij) / V for a symmetric strain applied to cell and atoms."""
    stress = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            energies = []
            for sign in (1, -1):
                strain = np.zeros((3, 3))
                strain[i, j] += sign * h / 2
                strain[j, i] += sign * h / 2
                moved = atoms.copy()
                moved.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
                energies.append(energy_of(model, moved))
            stress[i, j] = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
    return stress


def test_forces_match_finite_differences_molecule():
    model = make_model()
    atoms = ethanol()
    out = model(graph_of(atoms), compute_stress=True)
    np.testing.assert_allclose(out["forces"].numpy(), finite_difference_forces(model, atoms), atol=1e-7)
    assert out["stress"].abs().max().item() == 0.0  # no periodic cell: no stress


def test_forces_and_stress_match_finite_differences_periodic():
    model = make_model()
    atoms = small_cell()
    out = model(graph_of(atoms), compute_stress=True)
    assert out["stress"].abs().max().item() > 1e-4  # a meaningful comparison
    np.testing.assert_allclose(out["forces"].numpy(), finite_difference_forces(model, atoms), atol=1e-7)
    np.testing.assert_allclose(out["stress"][0].numpy(), finite_difference_stress(model, atoms), atol=1e-7)
    torch.testing.assert_close(out["virial"], -out["stress"] * atoms.get_volume())


def test_forces_without_autograd_context_and_training_graph():
    model = make_model()
    graph = graph_of(ethanol())
    with torch.no_grad():
        out = model(graph)
    assert not out["forces"].requires_grad
    torch.testing.assert_close(out["forces"], model(graph)["forces"])
    assert model(graph, training=True)["forces"].requires_grad


def test_force_loss_gradient_matches_finite_differences():
    """training=True keeps the graph of the forces: d(loss on forces)/d(weight) by double backward
    equals a finite difference in that weight."""
    model = make_model()
    graph = graph_of(small_cell())

    def loss(training: bool) -> torch.Tensor:
        out = model(graph, compute_stress=True, training=training)
        return out["forces"].square().sum() + out["energy"].square().sum() + out["stress"].square().sum()

    weights = [model.layers[0].radial[2].weight, model.embedding.pair_embedding.weight]
    grads = torch.autograd.grad(loss(True), weights)
    for weight, grad in zip(weights, grads):
        assert grad.abs().max() > 0
        with torch.no_grad():
            values = []
            for sign in (1, -1):
                weight[0, 1] += sign * 1e-6
                values.append(loss(False).item())
                weight[0, 1] -= sign * 1e-6
        finite = (values[0] - values[1]) / 2e-6
        assert abs(grad[0, 1].item() - finite) <= 1e-6 * max(1.0, abs(finite))


# --- cutoff, periodic images, isolated atoms -----------------------------------------------------


def dimer(distance: float) -> Atoms:
    return Atoms("CO", positions=[[0.0, 0.0, 0.0], [0.3 * distance, 0.0, np.sqrt(0.91) * distance]])


def test_smooth_at_the_cutoff():
    model = make_model()
    r_max = CUTOFF + 1.0  # the graph also holds pairs beyond the model's cutoff
    apart = model(graph_of(dimer(CUTOFF + 1e-6), r_max=r_max))
    separate = sum(energy_of(model, Atoms(symbol)) for symbol in "CO")
    assert graph_of(dimer(CUTOFF + 1e-6), r_max=r_max).num_edges == 2
    assert apart["energy"].item() == pytest.approx(separate, abs=1e-12)
    assert apart["forces"].abs().max().item() == 0.0
    gaps, force_norms = [], []
    for delta in (1e-2, 1e-3):
        out = model(graph_of(dimer(CUTOFF - delta), r_max=r_max))
        gaps.append(abs(out["energy"].item() - separate))
        force_norms.append(out["forces"].norm().item())
    assert gaps[0] > 0 and force_norms[0] > 0
    assert gaps[1] < gaps[0] / 30  # energy approaches its outside value quadratically
    assert force_norms[1] < force_norms[0] / 5  # forces go to zero linearly


def test_pairs_beyond_the_cutoff_change_nothing():
    model = make_model()
    atoms = small_cell()
    near, far = graph_of(atoms), graph_of(atoms, r_max=CUTOFF + 1.5)
    assert far.num_edges > near.num_edges
    a, b = model(near, compute_stress=True), model(far, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-12, atol=1e-12)


def test_periodic_images_through_several_cells():
    """A cell far smaller than the cutoff and its supercell describe the same crystal: equal energy
    per atom, stress, and forces repeated cell by cell."""
    model = make_model()
    cell = [[1.5, 0.0, 0.0], [0.35, 1.6, 0.0], [0.2, -0.3, 1.7]]
    atoms = Atoms("SiO", scaled_positions=[[0.1, 0.05, 0.0], [0.55, 0.45, 0.6]], cell=cell, pbc=True)
    assert graph_of(atoms).unit_shifts.abs().max() >= 2
    supercell = atoms.repeat((2, 1, 3))
    small, big = model(graph_of(atoms), compute_stress=True), model(graph_of(supercell), compute_stress=True)
    torch.testing.assert_close(big["energy"] / 6, small["energy"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(big["stress"], small["stress"], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(big["forces"], small["forces"].repeat(6, 1), rtol=1e-9, atol=1e-10)


def test_isolated_atom_and_far_apart_atoms():
    model = make_model()
    single = model(graph_of(Atoms("O")), compute_stress=True)
    assert torch.isfinite(single["energy"]).all()
    assert single["forces"].shape == (1, 3) and single["forces"].abs().max() == 0
    assert single["stress"].abs().max() == 0
    far = model(graph_of(Atoms("CO", positions=[[0, 0, 0], [0, 0, 10.0]])))
    assert far["energy"].item() == pytest.approx(
        energy_of(model, Atoms("C")) + single["energy"].item(), abs=1e-12
    )


def test_batch_equals_separate_structures():
    model = make_model()
    structures = [ethanol(), small_cell(), Atoms("H")]
    graphs = [graph_of(atoms) for atoms in structures]
    batched = model(batch_graphs(graphs), compute_stress=True)
    separate = [model(g, compute_stress=True) for g in graphs]
    torch.testing.assert_close(batched["energy"], torch.cat([s["energy"] for s in separate]))
    torch.testing.assert_close(batched["forces"], torch.cat([s["forces"] for s in separate]))
    torch.testing.assert_close(batched["stress"], torch.cat([s["stress"] for s in separate]))
    torch.testing.assert_close(
        batched["energy"],
        torch.zeros(3).double().index_add(0, batch_graphs(graphs).batch, batched["node_energy"]),
    )


# --- energy bookkeeping, errors, serialization ---------------------------------------------------


def test_atomic_energies_scale_and_shift():
    e0 = [-13.6, -1029.3, -2042.6, -7870.0]
    plain = make_model(seed=3)
    shifted = make_model(seed=3, atomic_energies=e0, scale=2.5, shift=0.25)
    graph = graph_of(ethanol())
    a, b = plain(graph), shifted(graph)
    e0_sum = sum(e0[ELEMENTS.index(z)] for z in graph.numbers.tolist())
    torch.testing.assert_close(
        b["energy"], e0_sum + 2.5 * a["energy"] + 0.25 * graph.num_nodes, rtol=1e-12, atol=1e-9
    )
    torch.testing.assert_close(b["forces"], 2.5 * a["forces"])


def test_unknown_element_and_dtype_errors():
    model = make_model()
    with pytest.raises(ValueError, match=r"atomic number 92 \(U\)"):
        model(graph_of(Atoms("HU", positions=[[0, 0, 0], [0, 0, 1.5]])))
    with pytest.raises(TypeError, match="float32 but the model is torch.float64"):
        model(graph_of(ethanol(), dtype=torch.float32))
    graph = graph_of(Atoms("HO", positions=[[0, 0, 0], [0, 0, 1.0]]))
    looped = replace(
        graph,
        edge_index=torch.cat([graph.edge_index, torch.tensor([[0], [0]])], dim=1),
        unit_shifts=torch.cat([graph.unit_shifts, torch.zeros(1, 3, dtype=torch.float64)]),
    )
    with pytest.raises(ValueError, match="zero-length edges"):
        model(looped)
    with pytest.raises(ValueError, match="equivariance_invariance_group"):
        TensorNet(equivariance_invariance_group="E(3)")
    with pytest.raises(ValueError, match="atomic_energies has 1 values for 2 atomic_numbers"):
        TensorNet(atomic_numbers=[1, 8], atomic_energies=[0.0])
    beyond_table = replace(graph_of(Atoms("H"), dtype=torch.float32), numbers=torch.tensor([128]))
    with pytest.raises(ValueError, match="atomic number 128"):
        TensorNet(hidden_channels=4, num_layers=0, max_z=128)(beyond_table)


def test_max_z_table_accepts_every_element_below_it():
    model = TensorNet(hidden_channels=4, num_layers=1, num_rbf=4, cutoff=CUTOFF, max_z=20, dtype="float64")
    out = model(graph_of(Atoms("HK", positions=[[0, 0, 0], [0, 0, 1.5]])))
    assert torch.isfinite(out["forces"]).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip(tmp_path, dtype):
    model = make_model("SO(3)", dtype=dtype, atomic_energies=[-1.0, -2.0, -3.0, -4.0], scale=1.5, shift=0.1)
    json.dumps(model.config)
    path = tmp_path / "tensornet.pt"
    equitensor.save_model(model, path)
    loaded = equitensor.load_model(path)
    assert isinstance(loaded, TensorNet) and loaded.config == model.config
    graph = graph_of(small_cell(), dtype=getattr(torch, dtype))
    a, b = model(graph, compute_stress=True), loaded(graph, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        assert torch.equal(a[key], b[key])


@pytest.mark.parametrize("structure", [ethanol, small_cell], ids=["molecule", "periodic"])
def test_sparse_backend_gives_the_same_numbers(structure):
    """backend='sparse' (messages summed by the compiled sparse_contract kernel): energy, forces,
    stress and the gradient of a force loss equal the torch path's (float64)."""
    reference = make_model()
    sparse = make_model(backend="sparse")
    sparse.load_state_dict(reference.state_dict())
    graph = graph_of(structure())
    results = []
    for model in (sparse, reference):
        out = model(graph, compute_stress=True, training=True)
        loss = out["forces"].square().sum() + out["energy"].sum()
        results.append(
            [
                out["energy"],
                out["forces"],
                out["stress"],
                *torch.autograd.grad(loss, list(model.parameters())),
            ]
        )
    for got, expected in zip(*results):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert results[1][1].abs().max() > 1e-3
    assert sparse.config["backend"] == "sparse"
    with pytest.raises(ValueError, match="backend must be one of"):
        make_model(backend="cuda")

"""Our TensorNet against TorchMD-Net's (torchmd-net 3.1.0) with the same weights, both ways.

Needs torchmd-net (its own virtual environment in CI, see .ci/run); skipped without it. The exact
comparisons (1e-10, float64) use torchmd-net's pure-PyTorch TensorNet ops, its definition: with
warp-lang installed torchmd-net runs warp kernels instead, whose ``fn_tensor_norm3`` differs from
that definition by ~1e-7 relative in float64 (measured: 8e-8 on random inputs), so the default path
is compared at 1e-6. torchmd-net computes no stress and its neighbour list is not differentiable
in the box: its energy on our edge list is differentiated in a strain by autograd (1e-10), and its
energy with its own neighbour list by central differences (1e-8).
"""

import warnings

import pytest
import torch
from ase.build import bulk, molecule

from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.models import TensorNet

tn = pytest.importorskip("torchmdnet.models.tensornet", reason="torchmd-net is not installed")
from equitensor.interop.torchmd_net import (  # noqa: E402
    UnmappableError,
    gradients_as_ours,
    tensornet_from_torchmd_net,
    torchmd_net_inputs,
    torchmd_net_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", module="torchmdnet")
CUTOFF = 3.0


@pytest.fixture
def pure_pytorch(monkeypatch):
    """torchmd-net's TensorNet on its plain PyTorch ops (its reference path), not warp kernels."""
    monkeypatch.setattr(tn, "OPT", False)
    for name in ("compose_tensor", "decompose_tensor", "tensor_matmul_o3", "tensor_matmul_so3"):
        monkeypatch.setattr(tn, name, getattr(tn, f"_{name}"))


def make_ours(group="O(3)", **options) -> TensorNet:
    torch.manual_seed(0)
    kwargs = dict(hidden_channels=8, num_layers=2, num_rbf=6, cutoff=CUTOFF, atomic_numbers=[1, 6, 8, 28, 29])
    model = TensorNet(
        equivariance_invariance_group=group,
        atomic_energies=[-0.5, -3.0, -2.0, -4.0, -3.5],
        scale=1.3,
        dtype="float64",
        **{**kwargs, **options},
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ethanol():
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=1)
    return atoms


def cuni_cell():
    """A periodic CuNi cell in torchmd-net's reduced form, each width above twice the cutoff."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.numbers[::3] = 28
    atoms.rattle(0.05, seed=2)
    return atoms


def theirs_energy_forces(theirs, graph):
    energy, forces = theirs(**torchmd_net_inputs(graph))
    return energy.flatten(), forces


@pytest.mark.parametrize("group", ["O(3)", "SO(3)"])
@pytest.mark.parametrize("structure", [ethanol, cuni_cell], ids=["molecule", "periodic"])
def test_same_energy_and_forces_as_torchmd_net(pure_pytorch, structure, group):
    ours = make_ours(group)
    theirs = torchmd_net_model(ours)
    graph = graph_from_atoms(structure(), CUTOFF, torch.float64)
    out = ours(graph)
    energy, forces = theirs_energy_forces(theirs, graph)
    torch.testing.assert_close(out["energy"], energy, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["forces"], forces, rtol=1e-10, atol=1e-10)
    assert forces.abs().max() > 1e-3


def test_default_warp_path_agrees_to_its_float64_accuracy():
    ours = make_ours()
    theirs = torchmd_net_model(ours)
    assert theirs.representation_model.opt, "warp-lang kernels expected on the default path"
    graph = graph_from_atoms(ethanol(), CUTOFF, torch.float64)
    out = ours(graph)
    energy, forces = theirs_energy_forces(theirs, graph)
    torch.testing.assert_close(out["energy"], energy, rtol=1e-6, atol=0)
    torch.testing.assert_close(out["forces"], forces, rtol=0, atol=1e-6 * forces.abs().max().item())


def test_stress_equals_strain_derivative_of_their_energy(pure_pytorch):
    """Their energy of the strained cell (rotated back to their reduced box form), central
    differences, against our autograd stress."""
    ours = make_ours()
    theirs = torchmd_net_model(ours)
    theirs.derivative = False  # energies only
    atoms = cuni_cell()
    graph = graph_from_atoms(atoms, CUTOFF, torch.float64)
    stress = ours(graph, compute_stress=True)["stress"][0]
    inputs = torchmd_net_inputs(graph)
    step, volume = 1e-5, atoms.get_volume()

    def energy(strain: torch.Tensor) -> float:
        deformation = torch.eye(3, dtype=torch.float64) + strain
        box, pos = inputs["box"] @ deformation, inputs["pos"] @ deformation
        # rotate so the box is lower triangular again (energy is rotation invariant)
        q, r = torch.linalg.qr(box.T)
        signs = torch.sign(torch.diagonal(r))
        rotation = q * signs
        with torch.no_grad():
            return theirs(inputs["z"], pos @ rotation, inputs["batch"], box=box @ rotation)[0].item()

    expected = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            strain = torch.zeros(3, 3, dtype=torch.float64)
            strain[i, j] += step / 2
            strain[j, i] += step / 2
            expected[i, j] = (energy(strain) - energy(-strain)) / (2 * step) / volume
    torch.testing.assert_close(stress, expected, rtol=0, atol=1e-8)
    assert stress.abs().max() > 1e-3


class GraphEdges(torch.nn.Module):
    """Stands in for torchmd-net's neighbour list: our graph's edges (and the self-loops it adds),
    from the positions and cell it is given, so its energy is differentiable in a strain."""

    def __init__(self, graph, cell):
        super().__init__()
        self.graph, self.cell = graph, cell

    def forward(self, pos, batch, box):
        graph, n = self.graph, pos.shape[0]
        vectors = graph.edge_vectors(pos, self.cell)
        loops = torch.arange(n)
        edge_index = torch.cat([torch.stack([graph.receiver, graph.sender]), torch.stack([loops, loops])], 1)
        weight = torch.cat([vectors.norm(dim=-1), vectors.new_zeros(n)])
        return edge_index, weight, torch.cat([vectors, vectors.new_zeros(n, 3)])


def test_stress_equals_their_strain_derivative_on_our_edges(pure_pytorch):
    """Exact (1e-10) stress check of the architecture: torchmd-net's model on our edge list (its
    own neighbour list is not differentiable in the box), its energy differentiated by autograd
    with respect to a strain of positions and cell."""
    ours = make_ours()
    theirs = torchmd_net_model(ours)
    theirs.derivative = False
    atoms = cuni_cell()
    graph = graph_from_atoms(atoms, CUTOFF, torch.float64)
    stress = ours(graph, compute_stress=True)["stress"][0]
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deformation = torch.eye(3, dtype=torch.float64) + strain
    cell = graph.cell @ deformation
    theirs.representation_model.distance = GraphEdges(graph, cell)
    inputs = torchmd_net_inputs(graph)
    energy, _ = theirs(inputs["z"], inputs["pos"] @ deformation, inputs["batch"], box=cell[0])
    (virial,) = torch.autograd.grad(energy.sum(), strain)
    torch.testing.assert_close(stress, virial / atoms.get_volume(), rtol=1e-10, atol=1e-12)
    assert stress.abs().max() > 1e-3


def test_training_gradients_equal_after_the_map(pure_pytorch):
    """A force-training loss through both models: every parameter gradient, mapped to ours."""
    ours = make_ours()
    theirs = torchmd_net_model(ours)
    theirs.train()  # forces keep their graph (create_graph), as in training
    graph = graph_from_atoms(ethanol(), CUTOFF, torch.float64)
    out = ours(graph, training=True)
    (out["energy"].square().sum() + out["forces"].square().sum()).backward()
    energy, forces = theirs_energy_forces(theirs, graph)
    (energy.square().sum() + forces.square().sum()).backward()
    mapped = gradients_as_ours(ours, theirs)
    trainable = {name: p for name, p in ours.named_parameters()}
    assert set(mapped) >= set(trainable) - set()  # every trainable parameter of ours has theirs
    for name, parameter in trainable.items():
        torch.testing.assert_close(mapped[name], parameter.grad, rtol=1e-9, atol=1e-10, msg=name)


def test_their_model_into_ours(pure_pytorch):
    """The reverse map: a torchmd-net TensorNet built by their own create_model, then ours from it."""
    from torchmdnet.models.model import create_model

    args = dict(
        model="tensornet", embedding_dimension=8, num_layers=2, num_rbf=6, rbf_type="expnorm",
        trainable_rbf=False, activation="silu", cutoff_lower=0.0, cutoff_upper=CUTOFF, max_z=30,
        max_num_neighbors=64, equivariance_invariance_group="O(3)", static_shapes=False, precision=64,
        box_vecs=None, check_errors=True, output_model="Scalar", prior_model=None, reduce_op="add",
        derivative=True, atom_filter=-1, vector_cutoff=False, remove_ref_energy=False, charge=False,
        spin=False, prior_args=None, aggr="add", neighbor_embedding=False,
    )  # fmt: skip
    torch.manual_seed(1)
    theirs = create_model(args)
    ours = tensornet_from_torchmd_net(theirs, [1, 6, 8])
    graph = graph_from_atoms(ethanol(), CUTOFF, torch.float64)
    energy, forces = theirs_energy_forces(theirs, graph)
    out = ours(graph)
    torch.testing.assert_close(out["energy"], energy, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["forces"], forces, rtol=1e-10, atol=1e-10)

    args["cutoff_lower"] = 0.5
    with pytest.raises(UnmappableError, match="cutoff_lower=0.5"):
        tensornet_from_torchmd_net(create_model(args), [1, 6, 8])


def test_bench_model_times_torchmd_net_after_checking_it(tmp_path):
    """``equitensor bench model`` builds torchmd-net's twin with our weights (its default warp
    path), checks energies, forces and training gradients, then times it."""
    import json

    from equitensor.bench import cli as bench_cli

    path = tmp_path / "bench.json"
    argv = ["bench", "model", "--models", "tensornet", "--channels", "4", "--system", "molecule"]
    argv += ["--dtype", "float64", "--passes", "fwd,fwd+bwd,fwd+bwd+dbwd", "--no-memory", "--reps", "1"]
    argv += ["--warmup", "1", "--min-rep-s", "0", "--no-probe", "--threads", "1", "--json", str(path)]
    assert bench_cli.main(argv) == 0
    data = json.loads(path.read_text())
    runs = {(r["implementation"], r["pass"]): r for r in data["rows"] if r["status"] == "timed"}
    for pass_name in ("fwd", "fwd+bwd", "fwd+bwd+dbwd"):
        assert runs[("torchmd-net", pass_name)]["max_rel_diff"] < 1e-5
    assert data["cases"][0]["implementations"]["torchmd-net"]["info"]["warp kernels"]


def test_what_does_not_map_is_refused():
    with pytest.raises(UnmappableError, match="shift=0.2 eV per atom"):
        torchmd_net_model(make_ours(shift=0.2))
    with pytest.raises(ValueError, match="one structure at a time"):
        from equitensor.graph import batch_graphs

        graph = graph_from_atoms(ethanol(), CUTOFF, torch.float64)
        torchmd_net_inputs(batch_graphs([graph, graph]))
    small = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(UnmappableError, match="widths >= 2 x cutoff"):
        torchmd_net_inputs(graph_from_atoms(small, CUTOFF, torch.float64), cutoff=CUTOFF)

"""equitensor.models.MACE: symmetries, derivatives vs finite differences, smoothness at r_max,
periodic images, isolated atoms, save/load and force training. Tiny sizes, float64 where tight."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from equitensor import load_model, rand_matrix, resolve_backends, save_model
from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.graph import AtomicGraph, batch_graphs
from equitensor.interop.mace_torch import load_mace_torch_weights
from equitensor.models import MACE

R_MAX = 3.0
# small E0s so finite differences of the energy are not swamped by rounding of large constants
E0 = {1: -1.5, 6: -2.25, 8: -3.125}


def tiny_mace(**overrides) -> MACE:
    kwargs = dict(
        atomic_numbers=[1, 6, 8],
        r_max=R_MAX,
        num_bessel=6,
        num_polynomial_cutoff=5,
        max_ell=2,
        num_channels=8,
        max_L=1,
        num_interactions=2,
        correlation=3,
        radial_MLP=[16, 16],
        MLP_irreps="8x0e",
        avg_num_neighbors=4.0,
        atomic_energies=E0,
        scale=1.3,
        shift=0.1,
    )
    kwargs.update(overrides)
    return MACE(**kwargs)


@pytest.fixture(scope="module")
def model64() -> MACE:
    torch.manual_seed(1)
    return tiny_mace().double()


def methanol(dtype=torch.float64) -> AtomicGraph:
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=3)
    return graph_from_atoms(atoms, R_MAX, dtype)


def periodic_cell(dtype=torch.float64) -> AtomicGraph:
    """A skewed cell of C, O, H smaller than r_max, so neighbours are seen through several images."""
    atoms = Atoms(
        "COH",
        scaled_positions=[[0.0, 0.0, 0.0], [0.45, 0.5, 0.55], [0.2, 0.7, 0.35]],
        cell=[[2.6, 0.0, 0.0], [0.3, 2.4, 0.0], [-0.2, 0.4, 2.8]],
        pbc=True,
    )
    atoms.rattle(0.02, seed=4)
    return graph_from_atoms(atoms, R_MAX, dtype)


def transformed(graph: AtomicGraph, R: torch.Tensor, t: torch.Tensor, perm: torch.Tensor) -> AtomicGraph:
    """Positions r -> R r + t, cell rows -> R rows, atoms reordered by ``perm`` (new i = old perm[i])."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm))
    return replace(
        graph,
        positions=(graph.positions @ R.T + t)[perm],
        numbers=graph.numbers[perm],
        edge_index=inverse[graph.edge_index],
        cell=graph.cell @ R.T,
        batch=graph.batch[perm],
    )


def deformed(graph: AtomicGraph, strain: torch.Tensor) -> AtomicGraph:
    """Homogeneous deformation r -> r (1 + strain), cell -> cell (1 + strain); same edges."""
    f = torch.eye(3, dtype=strain.dtype) + strain
    return replace(graph, positions=graph.positions @ f, cell=graph.cell @ f)


@pytest.mark.parametrize("make_graph", [methanol, periodic_cell], ids=["molecule", "periodic"])
def test_invariance_and_equivariance(model64, make_graph):
    graph = make_graph()
    ref = model64(graph, compute_stress=True)
    generator = torch.Generator().manual_seed(5)
    for parity in (1, -1):
        R = rand_matrix(dtype=torch.float64) * parity
        t = torch.randn(3, dtype=torch.float64, generator=generator)
        perm = torch.randperm(graph.num_nodes, generator=generator)
        out = model64(transformed(graph, R, t, perm), compute_stress=True)
        torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(out["node_energy"], ref["node_energy"][perm], rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(out["forces"], (ref["forces"] @ R.T)[perm], rtol=0, atol=1e-10)
        torch.testing.assert_close(out["stress"], R @ ref["stress"] @ R.T, rtol=0, atol=1e-10)
    assert ref["forces"].abs().max() > 1e-3  # the checks above are not vacuous


@pytest.mark.parametrize("make_graph", [methanol, periodic_cell], ids=["molecule", "periodic"])
def test_forces_are_minus_energy_gradient(model64, make_graph):
    graph = make_graph()
    forces = model64(graph)["forces"]
    h = 1e-5
    generator = torch.Generator().manual_seed(6)
    for _ in range(3):
        direction = torch.randn(graph.positions.shape, dtype=torch.float64, generator=generator)

        def energy(step, direction=direction):
            shifted = replace(graph, positions=graph.positions + step * direction)
            return model64(shifted, compute_forces=False)["energy"].item()

        numeric = (energy(h) - energy(-h)) / (2 * h)
        assert numeric == pytest.approx(-(forces * direction).sum().item(), rel=1e-6, abs=1e-8)


def test_stress_is_strain_derivative_over_volume(model64):
    graph = periodic_cell()
    out = model64(graph, compute_stress=True)
    volume = torch.linalg.det(graph.cell[0]).abs().item()
    torch.testing.assert_close(out["stress"], out["stress"].transpose(1, 2), rtol=0, atol=1e-12)
    torch.testing.assert_close(out["virial"], -out["stress"] * volume, rtol=1e-12, atol=1e-12)
    h = 1e-5
    generator = torch.Generator().manual_seed(7)
    directions = [torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))]
    for _ in range(2):
        a = torch.randn(3, 3, dtype=torch.float64, generator=generator)
        directions.append(a + a.T)
    for direction in directions:

        def energy(step, direction=direction):
            return model64(deformed(graph, step * direction), compute_forces=False)["energy"].item()

        numeric = (energy(h) - energy(-h)) / (2 * h) / volume
        assert numeric == pytest.approx((out["stress"][0] * direction).sum().item(), rel=1e-6, abs=1e-9)
    assert out["stress"].abs().max() > 1e-4


def test_molecule_has_zero_stress(model64):
    out = model64(methanol(), compute_stress=True)
    assert torch.all(out["stress"] == 0)


def dimer(distance: float) -> AtomicGraph:
    return graph_from_atoms(Atoms("CO", positions=[[0, 0, 0], [distance, 0, 0]]), R_MAX, torch.float64)


def test_energy_and_force_are_smooth_across_r_max(model64):
    far = model64(dimer(R_MAX + 0.5))
    assert far["forces"].abs().max() == 0
    inside = model64(dimer(R_MAX - 0.5))
    assert abs(inside["energy"].item() - far["energy"].item()) > 1e-4  # the pair does interact
    previous_gap = None
    for delta in (1e-1, 1e-2, 1e-3):
        out = model64(dimer(R_MAX - delta))
        gap = abs(out["energy"].item() - far["energy"].item())
        force = out["forces"].abs().max().item()
        # envelope p=5: value, slope and curvature vanish at r_max -> E gap ~ delta^3, F ~ delta^2
        assert gap < 50 * delta**3 and force < 50 * delta**2
        if previous_gap is not None and previous_gap > 1e-12:
            assert gap < previous_gap / 100
        previous_gap = gap
    just_outside = model64(dimer(R_MAX + 1e-9))
    assert just_outside["energy"].item() == pytest.approx(far["energy"].item(), abs=1e-14)


def test_periodic_images_small_cell_is_extensive(model64):
    atoms = Atoms(
        "CO",
        scaled_positions=[[0.0, 0.0, 0.0], [0.4, 0.55, 0.5]],
        cell=[[2.2, 0.0, 0.0], [0.2, 2.3, 0.0], [0.1, -0.3, 2.5]],
        pbc=True,
    )
    small = graph_from_atoms(atoms, R_MAX)
    sender, receiver = small.edge_index
    # the C atom sees the O atom through several different periodic images, and its own images
    c_to_o = (sender == 1) & (receiver == 0)
    assert len({tuple(s) for s in small.unit_shifts[c_to_o].tolist()}) > 3
    assert bool(((sender == 0) & (receiver == 0)).any())
    big = graph_from_atoms(atoms * (2, 1, 2), R_MAX)
    out_small = model64(small, compute_stress=True)
    out_big = model64(big, compute_stress=True)
    assert out_big["energy"].item() == pytest.approx(4 * out_small["energy"].item(), rel=1e-12)
    torch.testing.assert_close(
        out_big["node_energy"], out_small["node_energy"].repeat(4), rtol=1e-12, atol=1e-9
    )
    torch.testing.assert_close(out_big["forces"], out_small["forces"].repeat(4, 1), rtol=0, atol=1e-10)
    torch.testing.assert_close(out_big["stress"], out_small["stress"], rtol=0, atol=1e-10)


def test_isolated_atom_energy_is_e0_plus_shift(model64):
    graph = graph_from_atoms(Atoms("O", positions=[[0.1, 0.2, 0.3]]), R_MAX, torch.float64)
    assert graph.num_edges == 0
    out = model64(graph, compute_stress=True)
    assert out["energy"].item() == pytest.approx(E0[8] + 0.1, abs=1e-12)
    assert torch.all(out["forces"] == 0) and torch.all(out["stress"] == 0)


def test_batch_equals_separate_structures(model64):
    graphs = [methanol(), periodic_cell(), dimer(2.0)]
    batched = model64(batch_graphs(graphs), compute_stress=True)
    separate = [model64(g, compute_stress=True) for g in graphs]
    torch.testing.assert_close(batched["energy"], torch.cat([s["energy"] for s in separate]))
    torch.testing.assert_close(batched["forces"], torch.cat([s["forces"] for s in separate]))
    torch.testing.assert_close(batched["stress"], torch.cat([s["stress"] for s in separate]))


def test_float32_agrees_with_float64():
    torch.manual_seed(2)
    model = tiny_mace()
    out32 = model(periodic_cell(torch.float32), compute_stress=True)
    assert out32["energy"].dtype == torch.float32 and out32["forces"].dtype == torch.float32
    out64 = model.double()(periodic_cell(torch.float64), compute_stress=True)
    assert model.atomic_energies.dtype == torch.float64
    torch.testing.assert_close(out32["energy"].double(), out64["energy"], rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(out32["forces"].double(), out64["forces"], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(out32["stress"].double(), out64["stress"], rtol=1e-3, atol=1e-5)


def test_outputs_and_options(model64):
    out = model64(methanol(), compute_forces=False)
    assert set(out) == {"energy", "node_energy"}
    out = model64(methanol(), compute_forces=False, compute_stress=True)
    assert set(out) == {"energy", "node_energy", "stress", "virial"}
    out = model64(methanol())
    assert set(out) == {"energy", "node_energy", "forces"} and not out["forces"].requires_grad
    with torch.no_grad():  # forces still come out under no_grad
        assert model64(methanol())["forces"].abs().max() > 0


def test_unknown_element_and_wrong_dtype_raise(model64):
    graph = methanol()
    iron = replace(graph, numbers=torch.tensor([6, 8, 26, 1, 1, 1]))
    with pytest.raises(ValueError, match=r"atomic numbers \[26\] are not in this model"):
        model64(iron)
    with pytest.raises(ValueError, match="graph positions are torch.float32 but the model is torch.float64"):
        model64(methanol(torch.float32))


def test_constructor_errors():
    with pytest.raises(ValueError, match="product_backend 'nope' is not available"):
        tiny_mace(product_backend="nope")
    with pytest.raises(ValueError, match="unknown tensor-product backend 'nope'; available: cg"):
        tiny_mace(backend="nope")
    with pytest.raises(ValueError, match="correlation must be between 1 and 3"):
        tiny_mace(correlation=4)
    with pytest.raises(ValueError, match="disagrees with hidden_irreps"):
        tiny_mace(hidden_irreps="8x0e+8x1o", num_channels=16, max_L=None)
    with pytest.raises(ValueError, match="no E0 for atomic numbers \\[8\\]"):
        tiny_mace(atomic_energies={1: 0.0, 6: 0.0})
    with pytest.raises(ValueError, match="distinct"):
        tiny_mace(atomic_numbers=[1, 1, 6])


def test_hidden_irreps_defaults_follow_mace():
    assert tiny_mace(num_channels=None, max_L=None).hidden_irreps == "128x0e+128x1o"
    assert tiny_mace(num_channels=4, max_L=2).hidden_irreps == "4x0e+4x1o+4x2e"
    model = tiny_mace(num_channels=None, max_L=None, hidden_irreps="4x0e+4x1o", correlation=[3, 2])
    assert model.config["correlation"] == [3, 2]
    assert [p.contraction.correlation for p in model.products] == [3, 2]


def test_config_is_json_and_rebuilds_the_model(model64):
    config = json.loads(json.dumps(model64.config))
    rebuilt = MACE(**config).double()
    rebuilt.load_state_dict(model64.state_dict())  # strict: same architecture
    graph = periodic_cell()
    torch.testing.assert_close(rebuilt(graph)["forces"], model64(graph)["forces"], rtol=0, atol=0)


def test_save_load_round_trip_float32(tmp_path):
    torch.manual_seed(3)
    model = tiny_mace()
    path = tmp_path / "mace.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert type(loaded) is MACE and loaded.config == model.config
    graph = periodic_cell(torch.float32)
    a, b = model(graph, compute_stress=True), loaded(graph, compute_stress=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_save_load_round_trip_float64_with_float64_default(tmp_path, model64):
    path = tmp_path / "mace64.pt"
    save_model(model64, path)
    torch.set_default_dtype(torch.float64)
    try:
        loaded = load_model(path)
    finally:
        torch.set_default_dtype(torch.float32)
    graph = periodic_cell()
    a, b = model64(graph, compute_stress=True), loaded(graph, compute_stress=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_save_load_round_trip_float64_then_double(tmp_path):
    torch.manual_seed(5)
    model = tiny_mace().double()
    with torch.no_grad():  # weights that float32 cannot represent
        for p in model.parameters():
            p.add_(1e-9 * torch.randn_like(p))
    path = tmp_path / "mace64.pt"
    save_model(model, path)
    loaded = load_model(path).double()
    graph = periodic_cell()
    torch.testing.assert_close(model(graph)["forces"], loaded(graph)["forces"], rtol=0, atol=1e-14)


def test_bad_and_foreign_files_raise(tmp_path):
    from equitensor.serialization import CHECKSUM_KEY, atomic_save

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="garbage.pt is not an equitensor model file: not a PyTorch archive"):
        load_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}, "hyper": 1}, foreign)
    with (
        pytest.warns(UserWarning, match="no content checksum"),
        pytest.raises(ValueError, match="is not an equitensor model file"),
    ):
        load_model(foreign)
    torch.manual_seed(0)
    wrong = tmp_path / "wrong_weights.pt"
    save_model(tiny_mace(), wrong)
    record = torch.load(wrong, weights_only=True)
    del record[CHECKSUM_KEY]
    record["config"]["num_channels"] = None
    record["config"]["hidden_irreps"] = "4x0e+4x1o"  # weights no longer fit
    atomic_save(record, wrong)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model(wrong)


def test_corrupted_or_foreign_model_files_are_named_errors(tmp_path, model64):
    """A byte flip anywhere in the weights is caught by the checksum (it used to load and give
    wrong energies); empty, text and random files say what they are not."""
    good = tmp_path / "good.model"
    save_model(model64, good)
    energy = load_model(good)(methanol())["energy"]
    torch.testing.assert_close(energy, model64(methanol())["energy"])
    data = bytearray(good.read_bytes())
    record = torch.load(good, weights_only=True)
    weights = record["state_dict"]["readouts.0.weight"].double().numpy().tobytes()
    start = bytes(data).find(weights[:16])  # flip 64 bytes inside a weight tensor's storage
    assert start > 0
    data[start : start + 64] = bytes(b ^ 0x5A for b in data[start : start + 64])
    flipped = tmp_path / "flipped.model"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="flipped.model is corrupted: .*SHA-256"):
        load_model(flipped)
    middle = bytearray(good.read_bytes())
    half = len(middle) // 2
    middle[half : half + 64] = bytes(b ^ 0xFF for b in middle[half : half + 64])
    (tmp_path / "middle.model").write_bytes(bytes(middle))
    with pytest.raises(ValueError, match="middle.model (is corrupted|is not a readable)"):
        load_model(tmp_path / "middle.model")
    (tmp_path / "empty.model").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.model is empty \(0 bytes\)"):
        load_model(tmp_path / "empty.model")
    (tmp_path / "notes.model").write_text("energy: 1.0\n")
    with pytest.raises(
        ValueError, match="notes.model is not an equitensor model file: not a PyTorch archive"
    ):
        load_model(tmp_path / "notes.model")
    (tmp_path / "random.model").write_bytes(
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    )
    with pytest.raises(ValueError, match="random.model is not an equitensor model file"):
        load_model(tmp_path / "random.model")
    with pytest.raises(ValueError, match="is a folder"):
        load_model(tmp_path)


def test_force_training_backpropagates_to_parameters():
    torch.manual_seed(4)
    model = tiny_mace().double()
    graph = batch_graphs([methanol(), periodic_cell()])
    target = torch.randn(graph.num_nodes, 3, dtype=torch.float64)

    def loss_fn() -> torch.Tensor:
        out = model(graph, compute_stress=True, training=True)
        return ((out["forces"] - target) ** 2).mean() + (out["stress"] ** 2).sum()

    loss = loss_fn()
    model.zero_grad()
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    radial = model.interactions[0].radial_mlp.weights[0]
    assert radial.grad.abs().max() > 0  # radial weights only reach the loss through the forces
    # the gradient of the force loss matches finite differences in one parameter
    h = 1e-6
    with torch.no_grad():
        radial[0, 0] += h
    up = loss_fn().item()
    with torch.no_grad():
        radial[0, 0] -= 2 * h
    down = loss_fn().item()
    with torch.no_grad():
        radial[0, 0] += h
    assert (up - down) / (2 * h) == pytest.approx(radial.grad[0, 0].item(), rel=1e-5, abs=1e-9)


def test_single_interaction_uses_linear_readout():
    model = tiny_mace(num_interactions=1, correlation=2)
    assert model.products[0].contraction.irreps_out == "8x0e"
    out = model(methanol(torch.float32))
    assert out["forces"].shape == (6, 3)


def test_numpy_free_energy_sum(model64):
    out = model64(methanol())
    assert out["energy"].item() == pytest.approx(float(np.sum(out["node_energy"].numpy())), rel=1e-14)


@pytest.mark.parametrize(
    "max_ell, hidden, correlation, layers",
    [(2, "4x0e+4x1o", 3, 2), (3, "4x0e+4x1o+4x2e", 2, 3), (2, "4x0e+4x0o+4x1o+4x1e", 2, 2)],
)
def test_matches_acesuit_mace(max_ell, hidden, correlation, layers):
    """Same weights, same numbers as ACEsuit/mace's ScaleShiftMACE (runs where mace is installed)."""
    models = pytest.importorskip("mace.modules.models")
    blocks = pytest.importorskip("mace.modules.blocks")
    from e3nn import o3

    kwargs = dict(
        r_max=R_MAX,
        num_bessel=6,
        num_polynomial_cutoff=5,
        max_ell=max_ell,
        num_interactions=layers,
        correlation=correlation,
        radial_MLP=[16, 16],
        avg_num_neighbors=4.0,
    )
    energies = [E0[z] for z in (1, 6, 8)]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        theirs = models.ScaleShiftMACE(
            atomic_inter_scale=1.3,
            atomic_inter_shift=0.1,
            interaction_cls=blocks.RealAgnosticResidualInteractionBlock,
            interaction_cls_first=blocks.RealAgnosticInteractionBlock,
            num_elements=3,
            hidden_irreps=o3.Irreps(hidden),
            MLP_irreps=o3.Irreps("8x0e"),
            atomic_energies=np.array(energies),
            atomic_numbers=[1, 6, 8],
            gate=torch.nn.functional.silu,
            use_reduced_cg=False,
            **kwargs,
        )
        ours = MACE(
            [1, 6, 8],
            hidden_irreps=hidden,
            MLP_irreps="8x0e",
            atomic_energies=energies,
            scale=1.3,
            shift=0.1,
            **kwargs,
        )
    finally:
        torch.set_default_dtype(default)
    load_mace_torch_weights(ours, theirs)
    graph = batch_graphs([methanol(), periodic_cell()])
    out = ours(graph, compute_stress=True)
    data = {
        "positions": graph.positions.clone(),
        "node_attrs": torch.nn.functional.one_hot(ours.element_indices(graph.numbers), 3).double(),
        "edge_index": graph.edge_index,
        "batch": graph.batch,
        "ptr": torch.tensor([0, 6, 9]),
        "cell": graph.cell.reshape(-1, 3),
        "unit_shifts": graph.unit_shifts,
        "shifts": torch.einsum("ei,eij->ej", graph.unit_shifts, graph.cell[graph.batch[graph.sender]]),
        "head": torch.zeros(2, dtype=torch.long),
    }
    ref = theirs(data, compute_force=True, compute_stress=True)
    for key in ("energy", "node_energy", "forces", "stress"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(model64):
    import copy

    graph = batch_graphs([methanol(), periodic_cell()])
    cpu = model64(graph, compute_stress=True)
    model = copy.deepcopy(model64).to("cuda")
    assert model.atomic_energies.dtype == torch.float64 and model.atomic_energies.is_cuda
    out = model(graph.to("cuda"), compute_stress=True)
    for key in cpu:
        torch.testing.assert_close(out[key].cpu(), cpu[key], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["so2", "auto"])
def test_exact_edge_convolution_backends_give_cg_energies_forces_and_stress(
    model64, backend, tmp_path, monkeypatch
):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))  # auto's measurements stay in the test
    other = tiny_mace(backend=backend).double()
    other.load_state_dict(model64.state_dict())
    resolve_backends(other)  # backend='auto' chooses for the model's device and dtype
    for graph in (methanol(), periodic_cell()):
        expected, got = model64(graph, compute_stress=True), other(graph, compute_stress=True)
        for key in ("energy", "forces", "stress"):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-10, atol=1e-12)

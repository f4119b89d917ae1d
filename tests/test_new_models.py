"""The eSCN, Facet and TDN models: symmetries (exact where the model is, within the measured error
of its approximate pieces where not), forces and stress against finite differences, save/load,
float32 vs float64, and each through the CLI (train one epoch on the shipped data, md, eval) and
the ASE calculator. Tiny sizes."""

import json
from dataclasses import replace

import ase.io
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from test_mace import E0, R_MAX, deformed, methanol, periodic_cell, tiny_mace, transformed

from equitensor import load_model, rand_matrix, save_model
from equitensor.calculator import EquitensorCalculator
from equitensor.cli import main as cli_main
from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.models import ESCN, TDN, Facet

COMMON = dict(
    atomic_numbers=[1, 6, 8], r_max=R_MAX, avg_num_neighbors=4.0, atomic_energies=E0, scale=1.3, shift=0.1
)


def tiny_escn(**overrides) -> ESCN:
    return ESCN(**{**COMMON, "num_channels": 6, "lmax": 3, "mmax": 2, "radial_MLP": [16], **overrides})


def tiny_facet(**overrides) -> Facet:
    return Facet(
        **{**COMMON, "num_channels": 6, "max_ell": 2, "correlation": 2, "grid_hidden": 12, **overrides}
    )


def tiny_tdn(**overrides) -> TDN:
    kwargs = dict(num_channels=6, max_L=1, max_ell=2, correlation=2, radial_MLP=[16], MLP_irreps="8x0e")
    return TDN(**{**COMMON, **kwargs, **overrides})


def tdn_approximate() -> TDN:
    return tiny_tdn(rank=3, allow_approximate=True)


MODELS = {"escn": tiny_escn, "facet": tiny_facet, "tdn": tiny_tdn, "tdn-rank3": tdn_approximate}


@pytest.fixture(scope="module", params=list(MODELS))
def model64(request):
    torch.manual_seed(1)
    return request.param, MODELS[request.param]().double()


def symmetry_errors(model, graph) -> tuple[float, float, float]:
    """Largest relative error of energy, forces and stress over a rotation and a reflection (with a
    translation and a permutation of the atoms)."""
    ref = model(graph, compute_stress=True)
    generator = torch.Generator().manual_seed(5)
    worst = [0.0, 0.0, 0.0]
    for parity in (1, -1):
        R = rand_matrix(dtype=torch.float64) * parity
        t = torch.randn(3, dtype=torch.float64, generator=generator)
        perm = torch.randperm(graph.num_nodes, generator=generator)
        out = model(transformed(graph, R, t, perm), compute_stress=True)
        pairs = [
            (out["energy"] - ref["energy"], ref["energy"]),
            (out["forces"] - (ref["forces"] @ R.T)[perm], ref["forces"]),
            (out["stress"] - R @ ref["stress"] @ R.T, ref["stress"]),
        ]
        for i, (diff, size) in enumerate(pairs):
            scale = size.abs().max().item()
            worst[i] = max(
                worst[i], diff.abs().max().item() / scale if scale > 0 else diff.abs().max().item()
            )
    assert ref["forces"].abs().max() > 1e-3  # the checks are not vacuous
    return tuple(worst)


@pytest.mark.parametrize("make_graph", [methanol, periodic_cell], ids=["molecule", "periodic"])
def test_symmetries_exact_or_within_the_reported_error(model64, make_graph):
    name, model = model64
    errors = symmetry_errors(model, make_graph())
    report = model.equivariance_report()
    if name == "tdn":  # full rank: exactly equivariant
        assert report == {}
        assert max(errors) < 1e-10, errors
    else:
        bound = max(report.values())
        assert bound > 1e-8  # these models have approximate pieces, and they are measured
        # per-piece errors are amplified through the layers and in the derivatives (forces, stress)
        assert max(errors) < 50 * bound, (errors, report)


@pytest.mark.parametrize("build", [tiny_escn, tiny_facet], ids=["escn", "facet"])
def test_grid_error_falls_with_resolution(build):
    """The grid pieces are the only approximation: a finer grid makes the model more equivariant."""
    torch.manual_seed(2)
    coarse = build(grid_resolution=(4, 8)).double()
    fine = build(grid_resolution=(16, 32)).double()
    fine.load_state_dict(coarse.state_dict())
    graph = periodic_cell()
    assert max(symmetry_errors(fine, graph)) < max(symmetry_errors(coarse, graph)) / 20
    assert max(fine.equivariance_report().values()) < max(coarse.equivariance_report().values()) / 20


def test_tdn_error_falls_with_rank_and_full_rank_is_mace():
    torch.manual_seed(3)
    low, exact = tiny_tdn(rank=2, allow_approximate=True).double(), tiny_tdn().double()
    exact.load_state_dict(low.state_dict())
    graph = periodic_cell()
    assert max(symmetry_errors(exact, graph)) < 1e-10 < max(symmetry_errors(low, graph))
    # exact rank = MACE with the same (path-shared) weights on the Clebsch-Gordan backend
    mace = tiny_mace(
        max_ell=2, num_channels=6, correlation=2, radial_MLP=[16], num_bessel=8, shared_path_weights=True
    ).double()
    mace.load_state_dict(exact.state_dict())
    torch.testing.assert_close(exact(graph)["forces"], mace(graph)["forces"], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="allow_approximate"):
        tiny_tdn(rank=2)


@pytest.mark.parametrize("make_graph", [methanol, periodic_cell], ids=["molecule", "periodic"])
def test_forces_are_minus_energy_gradient(model64, make_graph):
    _, model = model64
    graph = make_graph()
    forces = model(graph)["forces"]
    h = 1e-5
    generator = torch.Generator().manual_seed(6)
    for _ in range(2):
        direction = torch.randn(graph.positions.shape, dtype=torch.float64, generator=generator)

        def energy(step, direction=direction):
            shifted = replace(graph, positions=graph.positions + step * direction)
            return model(shifted, compute_forces=False)["energy"].item()

        numeric = (energy(h) - energy(-h)) / (2 * h)
        assert numeric == pytest.approx(-(forces * direction).sum().item(), rel=1e-6, abs=1e-8)


def test_stress_is_strain_derivative_over_volume(model64):
    _, model = model64
    graph = periodic_cell()
    out = model(graph, compute_stress=True)
    volume = torch.linalg.det(graph.cell[0]).abs().item()
    h = 1e-5
    a = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for direction in (torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)), a + a.T):

        def energy(step, direction=direction):
            return model(deformed(graph, step * direction), compute_forces=False)["energy"].item()

        numeric = (energy(h) - energy(-h)) / (2 * h) / volume
        assert numeric == pytest.approx((out["stress"][0] * direction).sum().item(), rel=1e-6, abs=1e-9)
    assert out["stress"].abs().max() > 1e-4


@pytest.mark.parametrize("axis", range(3))
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_escn_forces_along_the_axes(axis, sign):
    """Bonds along +-x, +-y (the harmonics' pole) and +-z: forces finite and equal to -dE/dr."""
    torch.manual_seed(4)
    model = tiny_escn().double()
    positions = torch.zeros(3, 3, dtype=torch.float64)
    positions[1, axis] = sign * 1.1
    positions[2, axis] = -sign * 1.3
    graph = graph_from_atoms(Atoms("COH", positions=positions.numpy()), R_MAX, torch.float64)
    forces = model(graph)["forces"]
    assert torch.isfinite(forces).all() and forces.abs().max() > 1e-4
    h = 1e-6
    for atom in range(3):
        for k in range(3):
            step = torch.zeros_like(positions)
            step[atom, k] = h
            plus = model(replace(graph, positions=graph.positions + step), compute_forces=False)["energy"]
            minus = model(replace(graph, positions=graph.positions - step), compute_forces=False)["energy"]
            assert ((plus - minus) / (2 * h)).item() == pytest.approx(-forces[atom, k].item(), abs=1e-7)


def test_escn_so2_equals_cg_without_truncation():
    torch.manual_seed(5)
    so2 = tiny_escn(mmax=None).double()
    cg = tiny_escn(mmax=None, backend="cg").double()
    cg.load_state_dict(so2.state_dict())
    graph = periodic_cell()
    a, b = so2(graph, compute_stress=True), cg(graph, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="mmax"):
        tiny_escn(mmax=1, backend="cg")


@pytest.mark.parametrize("name", ["escn", "facet", "tdn-rank3"])
def test_save_load_float32_and_float64(tmp_path, name):
    torch.manual_seed(6)
    model = MODELS[name]().double()
    graph = periodic_cell()
    path = tmp_path / "model.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    torch.testing.assert_close(loaded(graph)["forces"], model(graph)["forces"], rtol=0, atol=0)
    single = load_model(path).float()
    out32 = single(periodic_cell(torch.float32), compute_stress=True)
    out64 = model(graph, compute_stress=True)
    torch.testing.assert_close(out32["energy"].double(), out64["energy"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(out32["forces"].double(), out64["forces"], rtol=1e-4, atol=1e-4)
    save_model(single, tmp_path / "single.pt")
    assert next(load_model(tmp_path / "single.pt").parameters()).dtype == torch.float32


CLI_KWARGS = {
    "escn": "{num_channels: 4, lmax: 2, mmax: 1, radial_MLP: [8]}",
    "facet": "{num_channels: 4, max_ell: 2, correlation: 2, grid_hidden: 8}",
    "tdn": "{num_channels: 4, max_L: 1, max_ell: 2, correlation: 2, radial_MLP: [8], rank: 3, "
    "allow_approximate: true}",
}


@pytest.mark.parametrize("name", list(CLI_KWARGS))
def test_cli_train_on_shipped_data_then_md_eval_and_calculator(tmp_path, name, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [f"model={name}", f"model_kwargs={CLI_KWARGS[name]}", "epochs=1", "progress=false"]
    overrides += ["plots=false", "tensorboard=false", "output_dir=run", "name=m", "num_threads=1"]
    assert cli_main(["train", *overrides]) == 0
    out = capsys.readouterr().out
    assert f"model: {type(MODELS[name]()).__name__} with" in out and "epoch 1/1" in out
    assert "approximately equivariant: 2 piece(s), largest measured relative equivariance error" in out
    model_path = tmp_path / "run" / "m.model"
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    md = [
        "md",
        "--model",
        str(model_path),
        "--structure",
        str(structure),
        "--steps",
        "3",
        "--timestep",
        "0.5",
    ]
    assert cli_main([*md, "--output", str(tmp_path / "traj.xyz"), "--seed", "1"]) == 0
    assert "done: 3 steps" in capsys.readouterr().out
    test_file = tmp_path / "test.xyz"
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.05, seed=2)
    atoms.calc = EquitensorCalculator(str(model_path), dtype="float64")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    assert forces.shape == (4, 3) and abs(forces.sum(0)).max() < 1e-10
    atoms.info["energy"], atoms.arrays["forces"] = energy + 0.01, forces
    atoms.calc = None
    ase.io.write(test_file, [atoms], format="extxyz")
    metrics = tmp_path / "metrics.json"
    assert (
        cli_main(
            ["eval", "--model", str(model_path), "--data", str(test_file), "--metrics-json", str(metrics)]
        )
        == 0
    )
    result = json.loads(metrics.read_text())  # the eval (float32 model) vs the calculator (float64)
    assert result["energy_mae"] == pytest.approx(10.0 / 4, abs=0.01) and result["forces_mae"] < 0.1

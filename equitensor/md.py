"""``equitensor md``: molecular dynamics with an equitensor model through ASE.

Ensembles: NVE (velocity Verlet), NVT (Langevin), NPT (ASE's Martyna-Tobias-Klein ``MTKNPT``
with Nose-Hoover chains, or Berendsen ``NPTBerendsen``; both read the calculator's stress).
Progress lines report steps/s and ns/day (ns/day = 86400 s x steps/s x timestep), timed from
the first force call on, so the first call's set-up is excluded and the neighbour list included.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import ase
import ase.io
import numpy as np
from ase import Atoms, units
from ase.io.formats import UnknownFileTypeError
from ase.md.langevin import Langevin
from ase.md.logger import MDLogger
from ase.md.md import MolecularDynamics
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet

try:  # ASE >= 3.29
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # the same sampling under its older name
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
try:  # recent ASE only (present in 3.29)
    from ase.md.nose_hoover_chain import MTKNPT
except ImportError:
    MTKNPT = None

from equitensor.calculator import EquitensorCalculator
from equitensor.errors import InputError

ENSEMBLES = ("nve", "nvt", "npt")
BAROSTATS = ("mtk", "berendsen")


def ns_per_day(steps_per_second: float, timestep_fs: float) -> float:
    """Simulated ns per wall-clock day: steps/s x timestep (fs) x 86400 s/day x 1e-6 ns/fs."""
    return steps_per_second * timestep_fs * 0.0864


def initialise_velocities(atoms: Atoms, temperature_K: float, seed: int) -> None:
    """Maxwell-Boltzmann velocities at ``temperature_K``, no centre-of-mass motion (and no rotation
    for a molecule). Velocities the structure already carries are kept."""
    if np.any(atoms.get_momenta() != 0) or temperature_K <= 0:
        return
    thermalize_momenta(atoms, temperature_K=temperature_K, rng=np.random.default_rng(seed))
    # a lone atom has no motion left once its momentum is removed (rescaling it to the target
    # temperature would divide by zero)
    Stationary(atoms, preserve_temperature=len(atoms) > 1)
    if not atoms.pbc.any() and len(atoms) > 2:  # one or two atoms: no rotation to remove (ASE's
        ZeroRotation(atoms)  # ZeroRotation divides by zero moments of inertia there)


def make_dynamics(
    atoms: Atoms,
    ensemble: str = "nve",
    timestep_fs: float = 1.0,
    temperature_K: float = 300.0,
    friction_per_fs: float = 0.01,
    pressure_GPa: float = 0.0,
    barostat: str = "mtk",
    tdamp_fs: float | None = None,
    pdamp_fs: float | None = None,
    bulk_modulus_GPa: float = 100.0,
    seed: int = 0,
) -> MolecularDynamics:
    """The ASE integrator of ``ensemble`` (thermostat/barostat times default to 100 and 1000 steps)."""
    if ensemble not in ENSEMBLES:
        raise InputError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if timestep_fs <= 0:
        raise InputError(f"timestep must be positive, got {timestep_fs} fs")
    dt = timestep_fs * units.fs
    tdamp = (100 * timestep_fs if tdamp_fs is None else tdamp_fs) * units.fs
    pdamp = (1000 * timestep_fs if pdamp_fs is None else pdamp_fs) * units.fs
    if ensemble == "nve":
        return VelocityVerlet(atoms, timestep=dt)
    if temperature_K <= 0:
        raise InputError(f"{ensemble.upper()} needs a positive temperature, got {temperature_K} K")
    if ensemble == "nvt":
        if friction_per_fs <= 0:
            raise InputError(f"Langevin friction must be positive, got {friction_per_fs} 1/fs")
        return Langevin(
            atoms,
            timestep=dt,
            temperature_K=temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,  # ASE >= 3.28: fixcm=True biases the sampled distribution
            rng=np.random.default_rng(seed),
        )
    if not atoms.pbc.all():
        raise InputError(f"NPT needs a cell periodic in all three directions, got pbc={atoms.pbc.tolist()}")
    if barostat not in BAROSTATS:
        raise InputError(f"barostat must be one of {BAROSTATS}, got {barostat!r}")
    pressure_au = pressure_GPa * units.GPa
    if barostat == "mtk":
        if MTKNPT is None:
            raise InputError(
                f"the MTK barostat needs ASE's MTKNPT (ASE >= 3.26); this is ASE {ase.__version__}"
            )
        return MTKNPT(
            atoms, timestep=dt, temperature_K=temperature_K, pressure_au=pressure_au, tdamp=tdamp, pdamp=pdamp
        )
    if bulk_modulus_GPa <= 0:
        raise InputError(f"the bulk modulus must be positive, got {bulk_modulus_GPa} GPa")
    return NPTBerendsen(
        atoms,
        timestep=dt,
        temperature_K=temperature_K,
        pressure_au=pressure_au,
        taut=tdamp,
        taup=pdamp,
        compressibility_au=1.0 / (bulk_modulus_GPa * units.GPa),
    )


@dataclass
class Throughput:
    """Steps done since the clock started and the wall time they took."""

    steps: int = 0
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else float("nan")


class ProgressReporter:
    """Observer printing step, time, temperature, energies and throughput every ``interval`` steps."""

    def __init__(
        self,
        dynamics: MolecularDynamics,
        atoms: Atoms,
        total_steps: int,
        timestep_fs: float,
        interval: int,
        stream: TextIO,
    ) -> None:
        self.dynamics, self.atoms, self.total_steps = dynamics, atoms, total_steps
        self.timestep_fs, self.interval, self.stream = timestep_fs, interval, stream
        self.throughput = Throughput()
        self._start: float | None = None
        self._first_step = 0

    def __call__(self) -> None:
        step = self.dynamics.nsteps
        now = time.perf_counter()
        if self._start is None:  # first call: after the initial force evaluation
            self._start, self._first_step = now, step
        self.throughput = Throughput(step - self._first_step, now - self._start)
        if step % self.interval == 0 or step == self.total_steps:
            self.stream.write(self.line(step) + "\n")
            self.stream.flush()

    def line(self, step: int) -> str:
        epot = self.atoms.get_potential_energy()
        ekin = self.atoms.get_kinetic_energy()
        rate = self.throughput.steps_per_second
        text = (
            f"step {step:>8d}/{self.total_steps}  t {step * self.timestep_fs / 1000:9.3f} ps  "
            f"T {self.atoms.get_temperature():8.2f} K  Etot {epot + ekin:14.6f} eV  Epot {epot:14.6f} eV"
        )
        if self.atoms.pbc.all():
            text += f"  V {self.atoms.get_volume():10.3f} Å^3"
        if self.throughput.steps:
            text += f"  {rate:8.2f} steps/s  {ns_per_day(rate, self.timestep_fs):8.4f} ns/day"
        return text


def trajectory_writer(atoms: Atoms, path: str):
    """Observer appending the current frame (positions, momenta, energy, forces, stress) as extxyz."""
    with open(path, "w"):  # start a fresh file
        pass

    def write() -> None:
        ase.io.write(path, atoms, format="extxyz", append=True)

    return write


def run_md(
    atoms: Atoms,
    dynamics: MolecularDynamics,
    steps: int,
    timestep_fs: float,
    output: str | None = None,
    output_interval: int = 10,
    log: str | None = None,
    log_interval: int = 10,
    print_interval: int = 100,
    stream: TextIO = sys.stdout,
) -> Throughput:
    """Run ``steps`` steps with trajectory, log and progress observers; returns the throughput."""
    if steps < 0:
        raise InputError(f"steps must be >= 0, got {steps}")
    for name, value in (("output", output_interval), ("log", log_interval), ("print", print_interval)):
        if value < 1:
            raise InputError(f"the {name} interval must be >= 1 step, got {value}")
    if output:
        dynamics.attach(trajectory_writer(atoms, output), interval=output_interval)
    logger = None
    if log:
        logger = MDLogger(dynamics, atoms, log, header=True, stress=atoms.pbc.all(), mode="w")
        dynamics.attach(logger, interval=log_interval)
    reporter = ProgressReporter(dynamics, atoms, steps, timestep_fs, print_interval, stream)
    dynamics.attach(reporter, interval=1)
    try:
        dynamics.run(steps)
    finally:
        if logger is not None:
            logger.close()
    return reporter.throughput


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``md`` subcommand's arguments."""
    p = commands.add_parser("md", help="molecular dynamics (NVE, NVT Langevin, NPT) with a trained model")
    add_model_and_structure_arguments(p, "starting structure, any format ASE reads")
    p.add_argument("--ensemble", choices=ENSEMBLES, default="nve")
    p.add_argument("--timestep", type=float, default=1.0, help="fs (default 1)")
    p.add_argument(
        "--temperature",
        type=float,
        default=300.0,
        help="K: thermostat target and initial Maxwell-Boltzmann velocities (default 300)",
    )
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    p.add_argument("--pressure", type=float, default=0.0, help="NPT target pressure, GPa (default 0)")
    p.add_argument(
        "--barostat",
        choices=BAROSTATS,
        default="mtk",
        help="NPT integrator: mtk (ASE MTKNPT, Nose-Hoover chains) or berendsen",
    )
    p.add_argument("--tdamp", type=float, default=None, help="thermostat time, fs (default 100 steps)")
    p.add_argument("--pdamp", type=float, default=None, help="barostat time, fs (default 1000 steps)")
    p.add_argument(
        "--bulk-modulus",
        type=float,
        default=100.0,
        help="GPa, sets the Berendsen barostat's compressibility (default 100)",
    )
    p.add_argument("--output", default=None, help="extxyz trajectory file")
    p.add_argument("--output-interval", type=int, default=10, help="steps between trajectory frames")
    p.add_argument("--log", default=None, help="ASE MD log file")
    p.add_argument("--log-interval", type=int, default=10, help="steps between log lines")
    p.add_argument("--print-interval", type=int, default=100, help="steps between progress lines")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and Langevin noise")
    return p


def add_model_and_structure_arguments(parser: argparse.ArgumentParser, structure_help: str) -> None:
    """Options shared by ``md`` and ``relax``: model, structure and frame, device, dtype, backend and
    Verlet skin (read back by :func:`structure_with_calculator`)."""
    parser.add_argument(
        "--model",
        required=True,
        help="model file (equitensor.save_model), training checkpoint or .pt2 file (equitensor export)",
    )
    parser.add_argument("--structure", required=True, help=structure_help)
    parser.add_argument("--index", default="-1", help="frame of the structure file (default: last)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="convert the model (default: keep its dtype)",
    )
    parser.add_argument("--backend", default=None, help="tensor-product backend of the model (e.g. cg, so2)")
    parser.add_argument("--skin", type=float, default=0.5, help="Verlet-list skin, Å (default 0.5)")


def check_output_folder(path: str | None, option: str) -> None:
    """Refuse, before any work, an output file whose folder does not exist."""
    if path and not Path(path).resolve().parent.is_dir():
        raise InputError(f"{option} {path}: the folder {Path(path).parent} does not exist")


def read_frame(path: str, index: str) -> Atoms:
    """Frame ``index`` of the structure file ``path``; ValueError naming an empty or unreadable
    file, or an index outside its frames."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no such structure file")
    if file.stat().st_size == 0:
        raise InputError(f"{path} is empty: there is no structure to read")
    try:
        return ase.io.read(path, index=index)
    except (StopIteration, IndexError):
        count = len(ase.io.read(path, index=":"))
        raise InputError(
            f"--index {index}: {path} has {count} frame(s) (0 to {count - 1}, or -1 for the last)"
        ) from None
    except UnknownFileTypeError as error:
        raise InputError(f"{path}: ASE cannot tell the file's format ({error})") from None


def structure_with_calculator(args: argparse.Namespace) -> Atoms:
    """The frame ``--index`` of ``--structure`` with the model's calculator attached."""
    atoms = read_frame(args.structure, args.index)
    if not isinstance(atoms, Atoms):
        raise InputError(
            f"--index {args.index!r} selects {len(atoms)} frames of {args.structure}; give one frame"
        )
    atoms.calc = EquitensorCalculator(
        args.model, device=args.device, dtype=args.dtype, backend=args.backend, skin=args.skin
    )
    return atoms


def main(args: argparse.Namespace) -> int:
    if args.temperature < 0:
        raise InputError(f"--temperature must be >= 0 K, got {args.temperature}")
    check_output_folder(args.output, "--output")
    check_output_folder(args.log, "--log")
    atoms = structure_with_calculator(args)
    initialise_velocities(atoms, args.temperature, args.seed)
    dynamics = make_dynamics(
        atoms,
        ensemble=args.ensemble,
        timestep_fs=args.timestep,
        temperature_K=args.temperature,
        friction_per_fs=args.friction,
        pressure_GPa=args.pressure,
        barostat=args.barostat,
        tdamp_fs=args.tdamp,
        pdamp_fs=args.pdamp,
        bulk_modulus_GPa=args.bulk_modulus,
        seed=args.seed,
    )
    print(
        f"{args.ensemble.upper()} MD of {len(atoms)} atoms ({atoms.get_chemical_formula()}), "
        f"{args.steps} steps of {args.timestep} fs, model {type(atoms.calc.model).__name__} "
        f"({atoms.calc.dtype}, {args.device}), cutoff {atoms.calc.cutoff} Å + skin {args.skin} Å"
    )
    throughput = run_md(
        atoms,
        dynamics,
        args.steps,
        args.timestep,
        output=args.output,
        output_interval=args.output_interval,
        log=args.log,
        log_interval=args.log_interval,
        print_interval=args.print_interval,
    )
    rate = throughput.steps_per_second
    print(
        f"done: {throughput.steps} steps in {throughput.seconds:.2f} s, {rate:.2f} steps/s, "
        f"{ns_per_day(rate, args.timestep):.4f} ns/day (neighbour list included, "
        f"{atoms.calc.neighbours.num_builds} builds)"
    )
    return 0

#!/usr/bin/env python
"""Neighbour lists on CPU: ASE vs matscipy vs vesin, on the pairs (i, j, integer cell shift S).

Cases:
  periodic: fcc Cu, 6x6x6 conventional cells (864 atoms), a = 3.61 Å, rattled 0.05 Å, r_max 5 Å.
  small periodic: fcc Cu 2x2x2 conventional (32 atoms, the default data set's cell), r_max 5 Å
      (the cutoff is longer than the cell, so many periodic images of each atom are neighbours).
  molecules: 100 non-periodic molecules from ASE's g2 set (2-14 atoms each), one call per
      molecule as a data loader makes them, r_max 5 Å.

Before timing, every library's pairs are checked to be identical to ASE's (as sets of
(i, j, S) triples; a mismatch stops the script). Libraries are timed round-robin (one call of each,
repeated) so they see the same machine load; the table gives the median time and the ratio to ASE.

Usage: python benchmarks/neighbour_lists.py [--repeats 20] [--out benchmarks/results/neighbour_lists.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import ase
import matscipy
import numpy as np
import vesin
from ase import Atoms
from ase.build import bulk, molecule
from ase.collections import g2
from ase.neighborlist import neighbor_list as ase_neighbor_list
from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

Pairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def with_ase(atoms: Atoms, r_max: float) -> Pairs:
    return ase_neighbor_list("ijS", atoms, r_max, self_interaction=False)


def with_matscipy(atoms: Atoms, r_max: float) -> Pairs:
    if atoms.pbc.all():
        return matscipy_neighbour_list("ijS", atoms=atoms, cutoff=r_max)
    # matscipy needs a cell even in non-periodic directions: a box around the atoms, as MACE does.
    positions = atoms.positions - atoms.positions.min(0)
    box = np.diag(np.ptp(atoms.positions, 0) + 2 * r_max + 1.0)
    return matscipy_neighbour_list("ijS", positions=positions, cell=box, pbc=np.zeros(3, bool), cutoff=r_max)


def vesin_runner(n_threads: int) -> Callable[[Atoms, float], Pairs]:
    """vesin with ``n_threads`` (0: its own choice, all cores); one calculator per cutoff, reused
    as equitensor.datasets.atoms_to_graph does."""
    calculators: dict[float, vesin.NeighborList] = {}

    def with_vesin(atoms: Atoms, r_max: float) -> Pairs:
        if r_max not in calculators:
            calculators[r_max] = vesin.NeighborList(cutoff=r_max, full_list=True, n_threads=n_threads)
        calculator = calculators[r_max]
        box = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
        return calculator.compute(atoms.positions, box, atoms.pbc, quantities="ijS")

    return with_vesin


LIBRARIES: dict[str, Callable[[Atoms, float], Pairs]] = {
    "ASE": with_ase,
    "matscipy": with_matscipy,
    "vesin": vesin_runner(0),
    "vesin 1 thread": vesin_runner(1),
}


def pair_set(pairs: Pairs) -> set[tuple[int, ...]]:
    i, j, shifts = pairs
    return {(int(a), int(b), *map(int, s)) for a, b, s in zip(i, j, np.asarray(shifts).reshape(-1, 3))}


def cases() -> dict[str, tuple[list[Atoms], float]]:
    big = bulk("Cu", "fcc", a=3.61, cubic=True) * (6, 6, 6)
    big.rattle(0.05, seed=0)
    small = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    small.rattle(0.05, seed=1)
    names = [name for name in g2.names if len(molecule(name)) >= 2]
    molecules = [molecule(names[k % len(names)]) for k in range(100)]
    return {
        "periodic Cu fcc, 864 atoms": ([big], 5.0),
        "periodic Cu fcc, 32 atoms": ([small], 5.0),
        "100 g2 molecules (one call each)": (molecules, 5.0),
    }


def check_identical(structures: list[Atoms], r_max: float) -> int:
    """Raise unless every library finds ASE's pairs; return the number of pairs."""
    total = 0
    for atoms in structures:
        reference = pair_set(with_ase(atoms, r_max))
        total += len(reference)
        for name, run in LIBRARIES.items():
            found = pair_set(run(atoms, r_max))
            if found != reference:
                raise SystemExit(
                    f"{name} differs from ASE on {atoms.get_chemical_formula()}: "
                    f"{len(found - reference)} extra, {len(reference - found)} missing pairs"
                )
    return total


def time_round_robin(structures: list[Atoms], r_max: float, repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in LIBRARIES}
    for _ in range(repeats):
        for name, run in LIBRARIES.items():
            start = time.perf_counter()
            for atoms in structures:
                run(atoms, r_max)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)

    lines = [
        "# Neighbour lists: ASE vs matscipy vs vesin (CPU)",
        "",
        f"Date: {datetime.date.today()}. Command: `python benchmarks/neighbour_lists.py "
        f"--repeats {args.repeats}`.",
        f"Hardware: {cpu_model()}, {os.cpu_count()} logical cores visible; the machine is shared with "
        "other jobs running at the same time, so absolute times are noisy: read the ratios "
        "(libraries are timed round-robin, so they see the same load).",
        f"Versions: python {platform.python_version()}, numpy {np.__version__}, ase {ase.__version__}, "
        f"matscipy {matscipy.__version__}, vesin {vesin.__version__}.",
        "Pairs: full list (i, j, S), no self pair without a shift; every library's pairs were checked "
        "to be identical to ASE's before timing. Median over the repeats.",
        "",
        "| case | pairs | "
        + " | ".join(f"{name} ms" for name in LIBRARIES)
        + " | "
        + " | ".join(f"ASE / {name}" for name in list(LIBRARIES)[1:])
        + " |",
        "|---|---:|" + "---:|" * (2 * len(LIBRARIES) - 1),
    ]
    for label, (structures, r_max) in cases().items():
        num_pairs = check_identical(structures, r_max)
        median = time_round_robin(structures, r_max, args.repeats)
        ms = {name: 1e3 * value for name, value in median.items()}
        times = " | ".join(f"{value:.2f}" for value in ms.values())
        ratios = " | ".join(f"{ms['ASE'] / ms[name]:.1f}x" for name in list(LIBRARIES)[1:])
        lines.append(f"| {label}, r_max {r_max} Å | {num_pairs} | {times} | {ratios} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()

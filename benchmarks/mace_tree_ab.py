"""A/B of MACE energy+forces between two source trees (e.g. before and after a refactor).

Each measurement runs in a fresh process with ``PYTHONPATH`` pointing at one tree (its
``equitensor`` package and ``models``), trees alternated round-robin; every process builds the same
seeded model, prints its energy (the two trees must agree to 1e-12 relative first) and the median
time of ``repeats`` energy+forces calls.

Usage: python benchmarks/mace_tree_ab.py OLD_TREE NEW_TREE [--rounds 3] [--out results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

# import equitensor and its models (installed as equitensor.models) from one tree, checked
TREE = """
import sys, pathlib
sys.path.insert(0, {root!r})
import equitensor
equitensor.__path__.insert(0, {root!r})
import equitensor.models
tree = pathlib.Path({root!r}).resolve()
for module in (equitensor, equitensor.models):
    assert pathlib.Path(module.__file__).resolve().is_relative_to(tree), module.__file__
"""

CHILD = r"""
import json, statistics, sys, time, torch
from ase.build import bulk
from ase.io import read
import equitensor.models as models
from equitensor.datasets.atoms_to_graph import graph_from_atoms
torch.set_num_threads(2)
system, backend = sys.argv[1], sys.argv[2]
if system == "acac":
    atoms = read(sys.argv[3], 0)
else:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
elements = sorted(set(atoms.numbers.tolist()))
torch.manual_seed(0)
model = models.MACE(elements, r_max=5.0, num_channels=128, max_L=1, backend=backend, product_backend=backend)
model = model.double()
graph = graph_from_atoms(atoms, 5.0, torch.float64)
energy = model(graph)["energy"].item()
times = []
for _ in range(12):
    start = time.perf_counter()
    model(graph)
    times.append(time.perf_counter() - start)
print(json.dumps({"energy": energy, "ms": 1000 * statistics.median(times[2:])}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    acac = os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data", "botnet", "dataset_acac", "train_300K.xyz"
    )
    cases = [("acac", "sparse"), ("acac", "cg"), ("cu108", "sparse"), ("cu108", "cg")]
    results = {(case, tree): [] for case in cases for tree in ("old", "new")}
    energies = {}
    for _ in range(args.rounds):
        for case in cases:
            for tree in ("old", "new"):
                root = getattr(args, tree)
                env = dict(os.environ)
                code = TREE.format(root=root) + CHILD
                out = subprocess.run(
                    [sys.executable, "-c", code, *case, acac],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                record = json.loads(out.stdout.strip().splitlines()[-1])
                energies.setdefault(case, {})[tree] = record["energy"]
                results[(case, tree)].append(record["ms"])
    lines = [
        "| system | backend | energy old - new (eV) | old ms (median) | new ms (median) | new/old |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        old, new = statistics.median(results[(case, "old")]), statistics.median(results[(case, "new")])
        diff = energies[case]["old"] - energies[case]["new"]
        lines.append(f"| {case[0]} | {case[1]} | {diff:.1e} | {old:.1f} | {new:.1f} | {new / old:.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()

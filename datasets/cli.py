"""``equitensor data``: generate EMT data, preprocess a data file into an HDF5 graph store, and
show a store's statistics."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from equitensor.datasets import generate
from equitensor.datasets.reading import LABELS
from equitensor.errors import InputError


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``data generate | preprocess | info`` under the top-level ``equitensor`` parser."""
    data = commands.add_parser(
        "data", help="generate EMT data, preprocess data into an HDF5 store, inspect one"
    )
    actions = data.add_subparsers(dest="data_command", required=True)

    generate.add_arguments(actions.add_parser("generate", help=generate.DESCRIPTION))

    preprocess = actions.add_parser(
        "preprocess",
        help="read an extxyz (or ASE-readable) file frame by frame into an HDF5 graph store",
        description="Check every frame as the reader does, build its graph for --r-max, and write the "
        "store with the data set's E0s, mean interaction energy, RMS force and average number of "
        "neighbours. Memory stays bounded (--chunk structures at a time).",
    )
    preprocess.add_argument("input", help="data file (extxyz or anything ASE reads)")
    preprocess.add_argument("output", help="HDF5 store to write (.h5)")
    preprocess.add_argument("--r-max", type=float, required=True, help="cutoff radius of the graphs, Å")
    for label in LABELS:
        preprocess.add_argument(
            f"--{label}-key",
            default=None,
            help=f"key of the reference {label} (default: {label!r} or 'REF_{label}', whichever is there)",
        )
    preprocess.add_argument(
        "--require",
        default="energy,forces",
        help="labels every frame must have, comma-separated, or 'none' (default: energy,forces)",
    )
    preprocess.add_argument("--format", default=None, help="ASE format name if not guessed from the file")
    preprocess.add_argument(
        "--chunk", type=int, default=256, help="structures written per block (memory bound)"
    )
    preprocess.add_argument("--quiet", action="store_true", help="no progress bar")

    info = actions.add_parser("info", help="print a store's statistics and provenance")
    info.add_argument("store", help="HDF5 store written by 'equitensor data preprocess'")
    info.add_argument("--json", action="store_true", help="statistics and provenance as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the ``data`` subcommand that ``args`` names; returns the exit code."""
    if args.data_command == "generate":
        generate.run(args)
        return 0
    from equitensor.datasets.store import StoredGraphDataset, describe_store, write_store

    if args.data_command == "preprocess":
        require = [] if args.require.strip() == "none" else [r.strip() for r in args.require.split(",") if r]
        write_store(
            args.input,
            args.output,
            args.r_max,
            format=args.format,
            energy_key=args.energy_key,
            forces_key=args.forces_key,
            stress_key=args.stress_key,
            virials_key=args.virials_key,
            require=require,
            chunk=args.chunk,
            progress=not args.quiet,
        )
        print(describe_store(StoredGraphDataset(args.output)))
        return 0
    if args.data_command == "info":
        store = StoredGraphDataset(args.store)
        if args.json:
            print(
                json.dumps({"statistics": asdict(store.statistics), "provenance": store.provenance}, indent=2)
            )
        else:
            print(describe_store(store))
        return 0
    raise InputError(f"unknown data command {args.data_command!r}")

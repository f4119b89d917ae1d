"""``equitensor train [CONFIG.yaml] [key=value ...] [--resume]``."""

from __future__ import annotations

import argparse

from equitensor.train.config import TrainConfig, load_config


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "train",
        help="train a potential (MACE, TDN, eSCN, Facet, TensorNet) from a YAML config",
        description=(
            "Train a potential. CONFIG is a YAML file of TrainConfig keys; key=value arguments "
            "override it (dotted keys reach into mappings, e.g. model_kwargs.num_channels=32). "
            "Without CONFIG the quickstart preset trains a small MACE on the shipped CuNi EMT data. "
            "Multi-process: torchrun --nproc_per_node=N -m equitensor.cli train CONFIG."
        ),
    )
    parser.add_argument("items", nargs="*", metavar="CONFIG|key=value", help="config file, then overrides")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in output_dir from checkpoints/last.pt"
    )
    parser.add_argument("--print-config", action="store_true", help="print the full configuration and exit")
    parser.add_argument(
        "--seed", type=int, help="random seed of initialisation and data order (the same as seed=N)"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    items = list(args.items)
    path = items.pop(0) if items and "=" not in items[0] else None
    if getattr(args, "seed", None) is not None:
        items.append(f"seed={args.seed}")
    return load_config(path, items)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    import sys

    from equitensor.train.trainer import TrainingDiverged, run_training

    try:
        run_training(config, resume=args.resume)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0

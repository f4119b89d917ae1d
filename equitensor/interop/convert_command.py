"""``equitensor convert --from mace-torch IN.model OUT.model``: a mace-torch model file as an
equitensor model file (same energies and forces, checked), to fine-tune, evaluate or run in MD."""

from __future__ import annotations

import argparse

from equitensor.errors import InputError

SOURCES = ("mace-torch",)


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "convert",
        help="turn another library's model file into an equitensor model file",
        description=(
            "Convert a mace-torch ScaleShiftMACE model file (torch.save of the model, as mace-torch "
            "writes them; needs mace-torch installed) into an equitensor MACE model file with the "
            "same weights. The result is checked against the original (energies and forces of a "
            "test structure); models that do not map (other interaction blocks, several heads, "
            "reduced CG coefficients) are refused with the reason."
        ),
    )
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the library of IN")
    parser.add_argument("input", help="the model file to convert")
    parser.add_argument("output", help="the equitensor model file to write")
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from equitensor.interop.mace_torch import mace_from_mace_torch
    from equitensor.serialization import save_model

    try:
        import mace  # noqa: F401  (mace-torch's classes must be importable to read its files)
    except ImportError as error:
        raise ImportError(f"converting a mace-torch model needs mace-torch installed ({error})") from None
    theirs = torch.load(args.input, map_location="cpu", weights_only=False)
    if not isinstance(theirs, torch.nn.Module):
        raise InputError(f"{args.input} holds a {type(theirs).__name__}, not a mace-torch model object")
    ours = mace_from_mace_torch(theirs)
    save_model(ours, args.output)
    print(f"converted {args.input} ({type(theirs).__name__}) to {args.output}: {ours.config}")
    return 0

"""The ``equitensor`` command line. Only ``demo`` exists so far; train/eval/md/bench are planned."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="equitensor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="an equivariant energy on ethanol, with an E(3) symmetry check")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from equitensor.demo import main as demo

        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``equitensor`` command line: train, eval, md, relax, data, convert, export, bench (and the
small demo)."""

from __future__ import annotations

import argparse
import os
import sys

from equitensor import export, md, relax
from equitensor.bench import cli as bench_cli
from equitensor.datasets import cli as data_cli
from equitensor.errors import InputError
from equitensor.interop import convert_command
from equitensor.train import eval_command, train_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="equitensor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="an equivariant energy on ethanol, with an E(3) symmetry check")
    md.add_parser(commands)
    relax.add_parser(commands)
    train_command.add_parser(commands)
    eval_command.add_parser(commands)
    bench_cli.add_bench_parser(commands)
    data_cli.add_parser(commands)
    convert_command.add_parser(commands)
    export.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from equitensor.demo import main as demo

        return demo()
    if args.command == "bench":
        return bench_cli.run(args)
    if args.command == "md":
        return run_reporting_errors(md.main, args)
    if args.command == "relax":
        return run_reporting_errors(relax.main, args)
    if args.command == "train":
        return run_reporting_errors(train_command.run, args)
    if args.command == "eval":
        return run_reporting_errors(eval_command.run, args)
    if args.command == "data":
        return run_reporting_errors(data_cli.run, args)
    if args.command == "convert":
        return run_reporting_errors(convert_command.run, args)
    if args.command == "export":
        return run_reporting_errors(export.run, args)
    return 2


def run_reporting_errors(command, args: argparse.Namespace) -> int:
    """Run a command; bad input (:class:`~equitensor.errors.InputError`: config, data, model files,
    values), a file that cannot be opened, a missing extra or compiler prints ``error: ...`` and
    returns 2. Anything else is a bug and keeps its traceback.

    Set EQUITENSOR_TRACEBACK=1 to see the traceback of bad input too.
    """
    from equitensor.kernels.compile import KernelUnavailableError

    try:
        return command(args)
    except (InputError, OSError, ImportError, KernelUnavailableError) as error:
        if os.environ.get("EQUITENSOR_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

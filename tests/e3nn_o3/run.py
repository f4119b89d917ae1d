#!/usr/bin/env python
"""Run e3nn's own o3 tests against equitensor (issue: a drop-in for e3nn's ``o3``).

The tests and e3nn's test harness (``e3nn.util``) come from the source release of the e3nn
version installed here (the one our own tests compare with), downloaded once from the package
index into ``--cache``; ``e3nn.o3`` is the alias package beside this file, which maps e3nn's
names to equitensor's public ones. The e3nn tests expected to fail are listed, with reasons, in
``expected_failures.py`` (strict: a listed test that passes fails the run).

    python tests/e3nn_o3/run.py              # the o3 test files below
    python tests/e3nn_o3/run.py -- -k linear # extra pytest arguments after --
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
# e3nn's o3 test files that cover what equitensor provides. Not run: angular_spherical_harmonics
# (SphericalHarmonicsAlphaBeta, Legendre), norm (o3.Norm), reduce_tensor (ReducedTensorProducts),
# s2 (ToS2Grid/FromS2Grid), tensor_product_sub (TensorSquare, Norm): e3nn features equitensor
# does not have.
TEST_FILES = [
    "irreps_test.py",
    "wigner_test.py",
    "rotation_test.py",
    "cartesian_spherical_harmonics_test.py",
    "linear_test.py",
    "tensor_product_test.py",
]


def e3nn_source(version: str, cache: Path) -> Path:
    """The unpacked e3nn source release ``version`` (downloaded into ``cache`` the first time)."""
    root = cache / f"e3nn-{version}"
    if not (root / "tests" / "o3").is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"e3nn=={version}",
                    "-d",
                    download,
                ],
                check=True,
            )
            (archive,) = Path(download).glob("e3nn-*.tar.gz")
            with tarfile.open(archive) as tar:
                tar.extractall(cache, filter="data")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--e3nn-version", default=metadata.version("e3nn"), help="default: the installed e3nn"
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "equitensor" / "e3nn-source")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    source = e3nn_source(args.e3nn_version, args.cache.resolve())
    env = dict(os.environ, E3NN_SOURCE=str(source / "e3nn"), PYTHONPATH=str(HERE))
    tests = source / "tests"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "expected_failures",
        "--rootdir",
        str(tests),
        *(str(tests / "o3" / name) for name in TEST_FILES),
        *args.pytest_args,
    ]
    print(f"e3nn {args.e3nn_version} o3 tests against equitensor (alias: {HERE / 'e3nn'})", flush=True)
    # Run from an empty folder: the source release's own e3nn package must not be importable.
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(command, env=env, cwd=cwd).returncode


if __name__ == "__main__":
    sys.exit(main())

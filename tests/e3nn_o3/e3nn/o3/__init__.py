"""``e3nn.o3`` as equitensor's public names: nothing here computes."""

import sys

from equitensor import (  # noqa: F401
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    Irrep,
    Irreps,
    Linear,
    SphericalHarmonics,
    TensorProduct,
    spherical_harmonics,
)
from equitensor.o3 import *  # noqa: F403
from equitensor.o3 import irrep

sys.modules[__name__ + ".irrep"] = irrep  # ``from e3nn.o3.irrep import l1o``

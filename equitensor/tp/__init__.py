"""Tensor products: a declarative spec (what) executed by interchangeable backends (how).

``list_backends()`` returns every backend's capability record and ``backends_table()`` the same
as a readable table; ``expressivity(spec_or_module)`` says which backends can compute a given
product and which paths each cannot express. (The ``equitensor.tp.backends`` name is the
subpackage holding the backends, hence these function names.)
"""

from equitensor.tp.backends import (
    BackendCapabilities,
    Limitation,
    backend_capabilities,
    backends_table,
    list_backends,
    register_backend,
)
from equitensor.tp.edge_convolution import EdgeConvolution, edge_product_irreps
from equitensor.tp.expressivity import BackendFit, ExpressivityReport, expressivity
from equitensor.tp.gaunt_product import GauntProduct, gaunt_spec, spherical_irreps
from equitensor.tp.spec import Instruction, TensorProductSpec
from equitensor.tp.tensor_product import (
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
)

__all__ = [
    "BackendCapabilities",
    "BackendFit",
    "EdgeConvolution",
    "ElementwiseTensorProduct",
    "ExpressivityReport",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "GauntProduct",
    "Instruction",
    "Limitation",
    "TensorProduct",
    "TensorProductSpec",
    "backend_capabilities",
    "backends_table",
    "edge_product_irreps",
    "expressivity",
    "gaunt_spec",
    "list_backends",
    "register_backend",
    "spherical_irreps",
]

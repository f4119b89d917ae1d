"""Tensor products: a declarative spec (what) executed by interchangeable backends (how)."""

from equitensor.tp.edge_convolution import EdgeConvolution, edge_product_irreps
from equitensor.tp.spec import Instruction, TensorProductSpec
from equitensor.tp.tensor_product import (
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
)

__all__ = [
    "EdgeConvolution",
    "ElementwiseTensorProduct",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "Instruction",
    "TensorProduct",
    "TensorProductSpec",
    "edge_product_irreps",
]

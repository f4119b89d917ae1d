"""Tensor products: a declarative spec (what) executed by interchangeable backends (how)."""

from equitensor.tp.spec import Instruction, TensorProductSpec
from equitensor.tp.tensor_product import (
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    TensorProduct,
)

__all__ = [
    "ElementwiseTensorProduct",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "Instruction",
    "TensorProduct",
    "TensorProductSpec",
]

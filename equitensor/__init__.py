"""equitensor: E(3)-equivariant tensor products with interchangeable backends."""

__version__ = "0.1.0"

"""CUDA kernels (``cuda/*.cu``) compiled at run time, wrapped as differentiable torch custom ops."""

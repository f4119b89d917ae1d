"""Hot-path kernels compiled at run time, wrapped as differentiable torch custom ops.

* :mod:`.sparse_contract` - ``equitensor::sparse_contract``, the CPU C++ kernel (``sparse_contract.cpp``,
  built on first use with torch.utils.cpp_extension) behind the ``sparse`` backend: a multilinear
  map over its non-zero terms, with its autograd (any order) in C++.

CUDA kernels (``cuda/*.cu``, NVRTC through CuPy):

* :mod:`.edge_conv` - the fused edge convolution (``EdgeConvolution(backend="cuda")``) and its
  functional form; :mod:`.edge_conv_ops` - the custom ops ``equitensor::edge_conv_fwd`` and
  ``equitensor::edge_conv_bwd`` (CUDA kernels, CPU reference, fake implementations, autograd to any
  order); :mod:`.edge_conv_plan` and :mod:`.edge_conv_codegen` - the plan and the generated header.
* :mod:`.compile` - NVRTC compilation with memory and disk cache, CuPy loading, DLPack launches.
"""

#: Whether the kernels have passed tests/test_kernels_gpu.py on a GPU. Until then
#: ``backend="auto"`` does not choose them (an explicit ``backend="cuda"`` still works).
GPU_VALIDATED = False

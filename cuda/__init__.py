"""CUDA C++ sources of the hot-path kernels (compiled at run time with CuPy/NVRTC); none yet."""

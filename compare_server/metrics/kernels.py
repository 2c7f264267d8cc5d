"""The compiled metric kernels (_kernels.c), or None where they could not be built at install
(no C compiler): the metrics then run their numpy reference code, which gives the same values."""

try:
    from compare_server.metrics import _kernels
except ImportError:  # installed without a compiler
    _kernels = None

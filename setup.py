"""The compiled metric kernels (compare_server/metrics/_kernels.c). Optional: where no C compiler
is found, cmp installs without them and the numpy code beside them runs instead."""

import os

from setuptools import Extension, setup

# Linking libm names the exp and log the kernels call by their current symbol versions; unlinked,
# they bind to glibc's oldest, which wrap them in SVID error handling.
setup(ext_modules=[Extension("compare_server.metrics._kernels", ["compare_server/metrics/_kernels.c"],
                             extra_compile_args=["-O3", "-fopenmp-simd"],
                             libraries=["m"] if os.name == "posix" else [], optional=True)])

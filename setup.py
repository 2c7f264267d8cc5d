"""The compiled metric kernels (compare_server/metrics/_kernels.c). Optional: where no C compiler
is found, cmp installs without them and the numpy code beside them runs instead."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("compare_server.metrics._kernels", ["compare_server/metrics/_kernels.c"],
                             extra_compile_args=["-O3", "-fopenmp-simd"], optional=True)])

"""The compiled metric kernels (compare_server/metrics/_kernels.c). Optional: where no C compiler
is found, cmp installs without them and the numpy code beside them runs instead."""

import os

from setuptools import Extension, setup

# The kernels compute exp and log themselves (so that they vectorise); libm is linked for sqrt.
# -fno-trapping-math: nothing here reads floating-point exception flags, and without it GCC will
# not turn the kernels' per-column selects into vector blends (the loops stay scalar).
# -fno-wrapv undoes the -fwrapv in Python's own CFLAGS: with signed overflow defined, GCC gives up
# optimisations of the kernels' int-indexed loops (the logprob kernel is 4% slower with it).
setup(ext_modules=[Extension("compare_server.metrics._kernels", ["compare_server/metrics/_kernels.c"],
                             extra_compile_args=["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fno-wrapv"],
                             libraries=["m"] if os.name == "posix" else [], optional=True)])

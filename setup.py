"""The optional C kernel of the float32 fast path (``lsekit/_fast/_kernel.c``).

Everything else is in pyproject.toml. Where the kernel does not build (no C
compiler), lsekit installs without it and computes the same functions in
the array libraries' own operations.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lsekit._fast._kernel",
            ["lsekit/_fast/_kernel.c"],
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)

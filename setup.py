"""Declares the Cython extensions; everything else lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "engine._fast.ledger",
        ["engine/_fast/ledger.pyx"],
        extra_compile_args=["-O3"],
    ),
    # No fused multiply-add: distances must match the pure twin to the last bit,
    # or a ranking tie could break differently (see engine/_fast/sourcing.pyx).
    Extension(
        "engine._fast.sourcing",
        ["engine/_fast/sourcing.pyx"],
        extra_compile_args=["-O3", "-ffp-contract=off"],
    ),
    Extension(
        "engine._fast.allocation",
        ["engine/_fast/allocation.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)

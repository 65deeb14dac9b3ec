"""The benchmark suite behind ``python -m lsekit bench``.

Each lsekit function is timed against its array library's own function and
against a max-shift version written by hand in that library, on the same
input, in the same run. Nothing here is imported by ``import lsekit``.

One module per backend, all with the same names (``NAME``, ``available``,
``versions``, ``cases``): `numpy`, `torch` (eager), `torch_train` (eager,
forward and backward), `torch_compile`, `torch_compile_train` (its forward
and backward), `jax` (under ``jax.jit``), `jax_train` (its forward and
backward), `dask`, `cupy` and `torch_cuda`;
`backends` finds them by name. The others hold what those share: `case`
(what a case is), `sizes`, `inputs`, `suite` (a backend's cases from what
its library provides), `maxshift` and `torch_cases` (the hand-written
peers and the training step), `bandwidth` (the GPU cases), `targets`,
`timing`, `memory`, `runner`, `report`, `machine` and `progress`.
"""

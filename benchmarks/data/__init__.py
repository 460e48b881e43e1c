"""Stage 1, data: the long-tailed datasets, their loaders and samplers, and the image views.

Imports only `benchmarks` (errors, paths), `benchmarks.registry` and the store.
"""

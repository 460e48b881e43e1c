"""Stage 2, train: the method registry, backbones, losses, schedules, precision, the epoch loop
(`training`) and the evaluation of one run.

Imports data, the store and the configuration; never `run`, `commands` or `reporting`.
"""

"""Stage 3, run: grids and their variants, the planner and runner (`grid`), launchers, and
checkpoint evaluation.

Imports train, data, the store and the configuration; never `commands`.
"""

"""Beneath every stage, the results store: run folders (atomic writes, YAML, status, locks),
predictions, the environment record and logs.

Imports nothing of the project but `benchmarks` itself (and its own modules).
"""

"""Range checks of numeric config values, shared by the configuration and the methods.

`benchmarks.config.validate_config` checks the shared keys with `check_ranges`; each method's
`check_config` hook checks its own options with it. It imports nothing of the project but
`benchmarks` itself, so a method can use it without importing the configuration (which looks
methods up, and would otherwise import them back).
"""

from __future__ import annotations

import math
import re
from typing import Any

from benchmarks import LTBenchError

_CONDITION = re.compile(r"(>=|<=|>|<)\s*(-?[0-9.]+)")
_TESTS = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b, "<": lambda v, b: v < b}


def _where(config: dict[str, Any]) -> str:
    return f"(run {config.get('method')} on {config.get('dataset')})"


def _non_finite(value: Any) -> bool:
    """Whether a number anywhere in `value` (lists and mappings included) is NaN or infinite."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    return False


def check_ranges(config: dict[str, Any], ranges: dict[str, str], where: str = "") -> None:
    """Raise LTBenchError unless each `config[key]` is a finite number meeting its conditions.

    `ranges` maps keys to conditions such as ">= 1", "> 0" or ">= 0 <= 1" (all must hold).
    """
    where = where or _where(config)
    for key, conditions in ranges.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise LTBenchError(f"{key} must be a number, got {value!r} {where}")
        if not math.isfinite(value):
            raise LTBenchError(f"{key} must be a finite number, got {value} {where}")
        for op, bound in _CONDITION.findall(conditions):
            if not _TESTS[op](value, float(bound)):
                bound = int(float(bound)) if float(bound).is_integer() else bound
                raise LTBenchError(f"{key} must be {op} {bound}, got {value} {where}")

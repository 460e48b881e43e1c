"""Reading the project's YAML: one loader for every file (configs, grids, run folders' config.yaml,
the paper numbers) and every `--set` value.

It sits in the store, beneath everything that reads YAML, so that the store can read a run
folder's config.yaml without importing the configuration (which knows every registry).
`benchmarks.config` re-exports these names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from benchmarks import LTBenchError


class ProjectYAMLLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with YAML 1.2 floats and duplicate mapping keys refused.

    PyYAML implements YAML 1.1, whose float pattern needs a dot: `1e-3` would be the string
    "1e-3" and then a type error (or, in a string-typed key, silently a string). A key given twice
    in one mapping would silently keep the last value; it is an error instead (`<<` merges are
    not duplicates: a mapping's own keys override merged ones, as YAML intends).
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: SafeLoader raises its own error below
                    break
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Copy the resolvers before changing them: the class attribute is shared with yaml.SafeLoader.
ProjectYAMLLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ProjectYAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(stream: Any) -> Any:
    """Parse YAML text or a file object with the project's loader (see `ProjectYAMLLoader`)."""
    return yaml.load(stream, Loader=ProjectYAMLLoader)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml_load(f)
    except yaml.YAMLError as exc:
        raise LTBenchError(f"{path}: not valid YAML ({yaml_problem(exc)})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LTBenchError(f"{path}: cannot read ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LTBenchError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """The first line of a YAML error, with its position when the parser gives one."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(exc).splitlines()[0]

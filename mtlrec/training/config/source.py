"""Reading a YAML config file and finding the line of each key path."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mtlrec.conventions import yaml_loader
from mtlrec.training.errors import ConfigError

_LAST_KEY = re.compile(r"(\[\d+\]|\.[^.\[\]]+)$")


def line_map(node, path="", lines=None) -> dict:
    """Key path -> 1-based line, from a composed YAML node tree."""
    lines = {} if lines is None else lines
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = f"{path}.{key.value}" if path else str(key.value)
            lines[child] = key.start_mark.line + 1
            line_map(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            lines[child] = item.start_mark.line + 1
            line_map(item, child, lines)
    return lines


class Source:
    """The file a config came from and the line of each key path: makes ``ConfigError``s."""

    def __init__(self, source=None, lines=None):
        self.source = None if source is None else str(source)
        self.lines = dict(lines or {})

    def line(self, path: str | None):
        """The line of ``path``, else of the nearest enclosing key that has one."""
        while path:
            if path in self.lines:
                return self.lines[path]
            last = _LAST_KEY.search(path)
            path = path[: last.start()] if last else ""
        return None

    def error(self, path: str | None, message: str) -> ConfigError:
        return ConfigError(message, path=path, source=self.source, line=self.line(path))


def read(path) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", source=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the config file: {err}", source=path) from None


def documents(text: str, source) -> list[tuple]:
    """``(data, key path -> line)`` of every non-empty ``---``-separated document."""
    try:
        datas = yaml_loader.load_all(text)
        nodes = yaml_loader.compose_all(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", source=source, line=line) from None
    datas = [d for d in datas if d is not None]
    nodes = [n for n in nodes if n is not None]
    return [(d, line_map(n)) for d, n in zip(datas, nodes)]

"""The YAML loader of every config, schema and ``--knob`` value.

PyYAML's ``SafeLoader`` follows YAML 1.1, where a float needs a dot and a signed
exponent, so ``1e-3``, ``1E3`` and ``-.5`` load as strings. ``Loader`` is a
``SafeLoader`` (nothing is evaluated as code) that also reads the YAML 1.2
(core schema) float forms; words such as ``fast`` stay strings.
"""

from __future__ import annotations

import re

import yaml

# YAML 1.2 core schema floats not covered by 1.1's resolver: an exponent without a dot
# or sign (1e-3, 1E3, 2e+5), a dot with an unsigned exponent (1.5e3), a signed .5
_YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?)$"""
)


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading YAML 1.2 float forms as floats."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+.0123456789"))


def load(text: str):
    """One YAML document -> Python objects (like ``yaml.safe_load``, YAML 1.2 floats)."""
    loader = Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_all(text: str) -> list:
    """Every ``---``-separated document of ``text``."""
    return _each(text, nodes=False)


def compose_all(text: str) -> list:
    """Node trees of every document (for the line of each key)."""
    return _each(text, nodes=True)


def _each(text: str, nodes: bool) -> list:
    loader = Loader(text)
    try:
        more, take = (loader.check_node, loader.get_node) if nodes else (loader.check_data, loader.get_data)
        documents = []
        while more():
            documents.append(take())
        return documents
    finally:
        loader.dispose()

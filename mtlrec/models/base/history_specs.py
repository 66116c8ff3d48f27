"""`sequence_encoders`: which encoder reads each behavior history, checked against the schema.

A model's `sequence_encoders` maps a history name to its encoder::

    sequence_encoders:
      clicks:                                 # the history's name
        encoder: target_attention             # mean | target_attention | self_attention
                                              # | property_gated_lstm
        features: [hist_item_id, hist_category]   # sequence features of one max_len,
                                              # read together (default: [clicks])
        query: [item_id, category]            # default: the candidate's features whose
                                              # tables the history's features share
        options: {units: [36]}                # the encoder's own settings
      hist_shop_id: mean                      # short form: a feature read alone

A sequence feature that no history names is mean-pooled alone, as before encoders
existed (the models are then the same, bit for bit). Every check here raises
`KeyPathError` on the key path below `path` (`sequence_encoders.clicks.query[1]`), so a
config names the line and the key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mtlrec.conventions import arg_checks as checks
from mtlrec.conventions.key_paths import ArgumentError, KeyPathError, show
from mtlrec.schema import Schema

#: encoder -> its options and their defaults.
ENCODERS = {
    "mean": {},
    "target_attention": {"units": [36], "activation": "sigmoid"},
    "self_attention": {"num_layers": 1, "num_heads": 1, "position_dim": 8, "ffn_units": None, "dropout": 0.0},
    "property_gated_lstm": {"units": 32, "attention_units": 32, "properties": None},
}
#: encoders whose output is a weighted sum of the steps: laid out like a step, one slice per feature.
STEP_SHAPED = ("mean", "target_attention")
#: encoders whose query is laid out like a step (each history feature across from its candidate feature).
ALIGNED_QUERY = ("target_attention", "self_attention")
KEYS = ("encoder", "features", "query", "options")


@dataclasses.dataclass(frozen=True)
class HistorySpec:
    """One behavior history and how it is read.

    Attributes:
        name: the history's name (the key of `sequence_encoders`).
        encoder: one of `ENCODERS`.
        features: the sequence features read together, each step their embeddings side
            by side.
        query: the categorical features the encoder compares the history with (none for
            `mean`).
        options: the encoder's settings, defaults filled in.
    """

    name: str
    encoder: str
    features: tuple
    query: tuple
    options: dict

    def to_dict(self) -> dict:
        """The history as a full `sequence_encoders` entry (what a model's config keeps)."""
        return {
            "encoder": self.encoder,
            "features": list(self.features),
            "query": list(self.query),
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.options.items()},
        }

    @property
    def item_features(self) -> tuple:
        """The features that enter the encoder as the items of a step (all but the
        property-gated LSTM's properties)."""
        properties = self.options.get("properties") or ()
        return tuple(f for f in self.features if f not in properties)


def _names(value, path, what, known):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise KeyPathError(path, f"expected a non-empty list of {what}, got {show(value)}")
    for i, v in enumerate(value):
        if v not in known:
            raise KeyPathError(f"{path}[{i}]", f"expected one of the {what} ({', '.join(known) or 'none'}), got {v!r}")
        if v in value[:i]:
            raise KeyPathError(f"{path}[{i}]", f"{v!r} is named twice")
    return tuple(value)


def _owner(feature):
    return feature.name if feature.shared_with is None else feature.shared_with


def _query(entry, name, features, schema, path):
    """The query features of a history: given (each reading the table of one history
    feature) or the candidate's features whose tables the history's features share."""
    categorical = {f.name: f for f in schema.categorical}
    sequences = {f.name: f for f in schema.sequence}
    tables = {sequences[n].shared_with: n for n in features if sequences[n].shared_with is not None}
    described = ", ".join(f"{n} reads {t}'s" for t, n in tables.items()) or "none of its features reads a categorical feature's table (shared_with)"
    if entry.get("query") is None:
        query = tuple(f.name for f in schema.categorical if f.name in tables)
        if not query:
            raise KeyPathError(
                f"{path}.query",
                f"expected the candidate's features whose tables history {name!r} shares, but {described}; "
                f"declare its sequence features shared_with the candidate's features (schema.sequence[].shared_with)",
            )
        return query
    query = _names(entry["query"], f"{path}.query", "categorical features", list(categorical))
    paired = {}
    for i, q in enumerate(query):
        table = _owner(categorical[q])
        if table not in tables:
            raise KeyPathError(
                f"{path}.query[{i}]",
                f"expected a candidate feature whose table a feature of history {name!r} shares "
                f"({described} table), got {q!r} (table {table!r})",
            )
        if table in paired:
            raise KeyPathError(
                f"{path}.query[{i}]",
                f"{q!r} and {paired[table]!r} both read the table of {tables[table]!r}; name one of them",
            )
        paired[table] = q
    return query


def _option(path, check, *args):
    try:
        return check(*args)
    except ArgumentError as err:
        raise KeyPathError(f"{path}.{err.argument}", str(err)) from None


def _options(entry, name, encoder, features, schema, path):
    given = entry.get("options") or {}
    if not isinstance(given, Mapping):
        raise KeyPathError(f"{path}.options", f"expected a mapping of {encoder} settings, got {show(given)}")
    allowed = ENCODERS[encoder]
    for key in given:
        if key not in allowed:
            expected = f"one of {', '.join(allowed)}" if allowed else "nothing (mean has no settings)"
            raise KeyPathError(f"{path}.options.{key}", f"unknown setting of {encoder}; expected {expected}")
    options = {**allowed, **given}
    where = f"{path}.options"
    if encoder == "target_attention":
        options["units"] = _option(where, checks.check_units, "units", options["units"], False, True)
        _option(where, checks.check_activation, "activation", options["activation"])
        if not isinstance(options["activation"], str):
            raise KeyPathError(f"{where}.activation", f"expected the name of a Keras activation, got {show(options['activation'])}")
    elif encoder == "self_attention":
        for key in ("num_layers", "num_heads", "position_dim"):
            options[key] = _option(where, checks.check_positive_int, key, options[key])
        if options["ffn_units"] is not None:
            options["ffn_units"] = _option(where, checks.check_positive_int, "ffn_units", options["ffn_units"])
        options["dropout"] = _option(where, checks.check_rate, "dropout", options["dropout"])
        width = sum(schema.table_size(f)[1] for f in schema.sequence if f.name in features)
        model_width = width + options["position_dim"]
        if model_width % options["num_heads"]:
            raise KeyPathError(
                f"{where}.num_heads",
                f"expected a divisor of the attention's width {model_width} (the steps' {width} + "
                f"position_dim {options['position_dim']}), got {options['num_heads']}",
            )
    elif encoder == "property_gated_lstm":
        for key in ("units", "attention_units"):
            options[key] = _option(where, checks.check_positive_int, key, options[key])
        sequences = {f.name: f for f in schema.sequence}
        if options["properties"] is None:
            properties = tuple(n for n in features if sequences[n].shared_with is None)
        else:
            properties = _names(options["properties"], f"{where}.properties", f"features of history {name!r}", list(features))
        if len(properties) == len(features):
            raise KeyPathError(
                f"{where}.properties",
                f"expected some features of history {name!r} left as the items the LSTM reads; "
                f"all of {', '.join(features)} are properties"
                + (" (by default the features without shared_with)" if options["properties"] is None else ""),
            )
        options["properties"] = list(properties)
    return options


def _entry(name, entry, schema, taken, path):
    if isinstance(entry, str):
        entry = {"encoder": entry}
    if not isinstance(entry, Mapping):
        raise KeyPathError(path, f"expected an encoder name or a mapping with keys {', '.join(KEYS)}, got {show(entry)}")
    for key in entry:
        if key not in KEYS:
            raise KeyPathError(f"{path}.{key}", f"unknown key; expected one of {', '.join(KEYS)}")
    encoder = entry.get("encoder")
    if encoder is None:
        raise KeyPathError(f"{path}.encoder", f"required key is missing; expected one of {', '.join(ENCODERS)}")
    if encoder not in ENCODERS:
        raise KeyPathError(f"{path}.encoder", f"expected one of {', '.join(ENCODERS)}, got {show(encoder)}")
    sequences = {f.name: f for f in schema.sequence}
    if entry.get("features") is None:
        if name not in sequences:
            raise KeyPathError(
                f"{path}.features",
                f"expected the sequence features history {name!r} reads ({', '.join(sequences) or 'the schema has none'}): "
                f"{name!r} is not a sequence feature, so the history needs features",
            )
        features = (name,)
    else:
        features = _names(entry["features"], f"{path}.features", "sequence features", list(sequences))
    for i, feature in enumerate(features):
        if feature in taken:
            raise KeyPathError(f"{path}.features[{i}]" if entry.get("features") is not None else path,
                               f"{feature!r} is already read by history {taken[feature]!r}")
    lengths = {sequences[f].max_len for f in features}
    if len(lengths) > 1:
        detail = ", ".join(f"{f} ({sequences[f].max_len})" for f in features)
        raise KeyPathError(f"{path}.features", f"expected sequence features of one max_len, read step by step together, got {detail}")
    if encoder == "mean":
        if entry.get("query"):  # [] is how a model's config writes none
            raise KeyPathError(f"{path}.query", "mean reads no query; remove it or choose an attention encoder")
        query = ()
    else:
        query = _query(entry, name, features, schema, path)
    options = _options(entry, name, encoder, features, schema, path)
    return HistorySpec(name, encoder, features, query, options)


def history_specs(config, schema, path: str = "sequence_encoders") -> list[HistorySpec]:
    """The histories of a `sequence_encoders` config (None: none), checked against `schema`
    (a `Schema` or its dict), in the schema's order of their first features (so the
    order the config names them in does not change the model).

    Raises:
        KeyPathError: naming `<path>.<history>.<key>` and what was expected.
    """
    if config is None:
        return []
    if not isinstance(config, Mapping):
        raise KeyPathError(path, f"expected a mapping of history name -> encoder ({', '.join(ENCODERS)}), got {show(config)}")
    parsed = Schema.from_dict(schema)
    specs, taken = [], {}
    for name, entry in config.items():
        if not isinstance(name, str) or not name:
            raise KeyPathError(path, f"expected history names (strings), got {show(name)}")
        spec = _entry(name, entry, parsed, taken, f"{path}.{name}")
        taken.update({f: name for f in spec.features})
        specs.append(spec)
    order = {f.name: i for i, f in enumerate(parsed.sequence)}
    return sorted(specs, key=lambda s: order[s.features[0]])


def specs_as_config(specs) -> dict:
    """`{name: full entry}` of `specs` (a model's config, a run's record)."""
    return {s.name: s.to_dict() for s in specs}

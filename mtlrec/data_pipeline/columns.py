"""What each read column is (feature / label / extra), its output type, and Arrow type checks."""

from typing import NamedTuple

import pyarrow as pa

from mtlrec.schema import Schema

# output kinds: "int64", "float32", "string" (B,) and "int64_seq", "string_seq" (B, max_len)
#: what a null in an extra column becomes, by output kind
EXTRA_FILL = {"int64": 0, "float32": float("nan"), "string": ""}


class Col(NamedTuple):
    name: str
    role: str  # "feature" | "label" | "extra"
    kind: str
    fill: object = None  # value of a null (features) / padding (sequences)
    max_len: int = 0
    declared: str = ""  # dtype as declared, for messages
    label_kind: str = ""
    also_label: bool = False  # a feature also requested as an extra column


def column_plan(schema, extra_columns=()):
    """Columns to read, in output order: features (schema order), labels, then extras.

    An extra column that is also a feature or label is read once and appears in both
    places. Extras get their kind from the data (`extra_kind`)."""
    s = Schema.from_dict(schema)
    cols = []
    for f in s.categorical:
        cols.append(Col(f.name, "feature", f.dtype if f.dtype == "string" else "int64", f.fill_value, declared=f.dtype))
    for f in s.numeric:
        cols.append(Col(f.name, "feature", "float32", f.default, declared=f.dtype))
    for f in s.sequence:
        cols.append(Col(f.name, "feature", f"{f.dtype}_seq", f.pad, f.max_len, declared=f"list<{f.dtype}>"))
    for label in s.labels:
        cols.append(Col(label.name, "label", "float32", declared=label.kind, label_kind=label.kind))
    if isinstance(extra_columns, str):
        extra_columns = (extra_columns,)
    seen = set()
    for name in extra_columns:
        if not isinstance(name, str) or name in seen:
            raise ValueError(f"Expected extra_columns to be distinct column names. Received: extra_columns={extra_columns!r}")
        seen.add(name)
        if name in s.label_names:
            continue  # already in labels
        if name in s.feature_names:
            i = next(i for i, c in enumerate(cols) if c.name == name)
            cols[i] = cols[i]._replace(also_label=True)
            continue
        cols.append(Col(name, "extra", None, declared="scalar"))
    return cols


def _base(t):
    return t.value_type if pa.types.is_dictionary(t) else t


def is_integer(t):
    t = _base(t)
    return pa.types.is_integer(t) or pa.types.is_boolean(t)


def is_number(t):
    t = _base(t)
    return is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def is_string(t):
    t = _base(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def is_list(t):
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def type_problem(col, arrow_type):
    """None if a column of `arrow_type` can be read as `col` declares, else what was expected."""
    k = col.kind
    if col.role == "extra":
        if is_list(arrow_type) or not (is_number(arrow_type) or is_string(arrow_type)):
            return f"a scalar number or string column (extra column), found {arrow_type}"
        return None
    if k.endswith("_seq"):
        if not is_list(arrow_type):
            return f"a list column ({col.declared}), found {arrow_type}"
        inner = arrow_type.value_type
        if k == "int64_seq" and not is_integer(inner):
            return f"a list of integer ids ({col.declared}), found {arrow_type}"
        if k == "string_seq" and not (is_string(inner) or is_integer(inner)):
            return f"a list of string ids ({col.declared}), found {arrow_type}"
        return None
    if is_list(arrow_type):
        return f"a scalar column ({col.declared}), found {arrow_type}"
    if k == "int64" and not is_integer(arrow_type):
        return f"integer ids (int64), found {arrow_type}"
    if k == "string" and not (is_string(arrow_type) or is_integer(arrow_type)):
        return f"string ids, found {arrow_type}"
    if k == "float32" and not is_number(arrow_type):
        what = "a numeric label" if col.role == "label" else f"a number ({col.declared})"
        return f"{what}, found {arrow_type}"
    return None


def extra_kind(arrow_type):
    """Output kind of an extra column from its Arrow type."""
    if is_integer(arrow_type):
        return "int64"
    if is_number(arrow_type):
        return "float32"
    return "string"

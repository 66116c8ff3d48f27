"""Feature schema: the one vocabulary shared by the readers and `FeatureEmbedding`.

A schema is plain data (the ``schema`` section of a YAML config)::

    key: impression_id
    categorical: [{name, dtype: int64|string, num_buckets, dim, shared_with, default}]
    numeric:     [{name, dtype, normalize: none|log1p|standardize|bucketize|piecewise_linear,
                   mean, std, default, num_buckets, boundaries, dim}]
    sequence:    [{name, dtype, max_len, shared_with | (num_buckets, dim)}]
    labels:      [{name, kind: binary|multiclass|regression, num_classes}]

`Schema.from_dict` validates it and reports errors by key path
(``schema.categorical[2].num_buckets: expected a positive integer, got 0``);
`Schema.to_dict` gives the dict back. This module imports from mtlrec only its
conventions and `mtlrec.quantiles`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from mtlrec.conventions.key_paths import KeyPathError
from mtlrec.quantiles import QuantileSketch, quantile_boundaries

ID_DTYPES = ("int64", "string")
NUMERIC_DTYPES = ("float32", "float64", "int32", "int64")
NORMALIZATIONS = ("none", "log1p", "standardize", "bucketize", "piecewise_linear")
#: Normalizations that make a numeric feature an embedding (a table row per bucket).
EMBEDDED_NUMERIC = ("bucketize", "piecewise_linear")
#: Buckets of an embedded numeric feature given neither `num_buckets` nor `boundaries`.
DEFAULT_NUMERIC_BUCKETS = 32
LABEL_KINDS = ("binary", "multiclass", "regression")
#: How ids become table rows (see `LookupSpec`).
LOOKUPS = ("hash", "identity", "dynamic")
#: Padding value of sequences (and the default of a null id), by dtype.
PAD = {"int64": -1, "string": ""}


def _fail(path: str, expected: str, got: Any) -> None:
    raise KeyPathError(path, f"expected {expected}, got {got!r}")


def _check_keys(d: Any, path: str, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
    if not isinstance(d, Mapping):
        _fail(path, "a mapping", d)
    allowed = tuple(allowed)
    for k in d:
        if k not in allowed:
            raise KeyPathError(f"{path}.{k}", f"unknown key; expected one of {', '.join(allowed)}")
    for k in required:
        if k not in d:
            raise KeyPathError(f"{path}.{k}", "missing required key")


def _name(d: Mapping, path: str) -> str:
    v = d["name"]
    if not isinstance(v, str) or not v or not v.replace("_", "a").replace("-", "a").isalnum():
        _fail(f"{path}.name", "a non-empty name of letters, digits, '_' or '-'", v)
    return v


def _pos_int(d: Mapping, key: str, path: str, optional: bool = False) -> int | None:
    v = d.get(key)
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        _fail(f"{path}.{key}", "a positive integer", v)
    return int(v)


def _choice(d: Mapping, key: str, path: str, choices: tuple, default: str) -> str:
    v = d.get(key, default)
    if v not in choices:
        _fail(f"{path}.{key}", "one of " + ", ".join(choices), v)
    return v


def _float(d: Mapping, key: str, path: str, positive: bool = False) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v):
        _fail(f"{path}.{key}", "a finite number", v)
    if positive and v <= 0:
        _fail(f"{path}.{key}", "a positive number", v)
    return float(v)


def _id_default(d: Mapping, path: str, dtype: str):
    if "default" not in d or d["default"] is None:
        return None
    v = d["default"]
    if dtype == "string" and not isinstance(v, str):
        _fail(f"{path}.default", "a string (dtype is string)", v)
    if dtype == "int64" and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
        _fail(f"{path}.default", "an integer (dtype is int64)", v)
    return v


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


#: Schema keys of a table's lookup (besides `num_buckets`).
LOOKUP_KEYS = ("lookup", "oov_buckets", "min_count", "ttl_days", "count_half_life_days", "max_waiting")
#: Default `count_half_life_days` of a dynamic table: counts halve weekly, so a weekly rhythm of
#: the catalogue averages out while an id quiet for a month keeps under 1/16 of its count.
COUNT_HALF_LIFE_DAYS = 7


@dataclass(frozen=True)
class LookupSpec:
    """How the ids of a table become rows.

    - `hash`: FarmHash of the id into `num_buckets` rows (ids may share a row).
    - `identity`: int64 ids in [0, num_buckets) are the row; any other id reads one of
      `oov_buckets` extra rows (hashed), and is counted as out of vocabulary.
    - `dynamic`: a collision-free id -> row map of capacity `num_buckets`, kept by the run.
      An id gets its own row once seen `min_count` times (counted over days); ids not
      (yet) admitted, and ids past capacity, read one of `oov_buckets` hashed rows.
      `ttl_days`: the rows of ids not seen for that many days are freed at the start of
      a day; when the table is full, the least counted ids give their rows to waiting
      ids counted more (the rows go to those ids at once). Counts halve every
      `count_half_life_days` days (default 7), so an id that went quiet loses its row
      to active ones; at most `max_waiting` ids (default `num_buckets`) are tracked
      without a row, the least counted are dropped.
    """

    lookup: str = "hash"
    oov_buckets: int | None = None
    min_count: int | None = None
    ttl_days: int | None = None
    count_half_life_days: int | None = None
    max_waiting: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping, path: str, dtype: str) -> "LookupSpec":
        lookup = _choice(d, "lookup", path, LOOKUPS, "hash")
        if lookup == "identity" and dtype != "int64":
            _fail(f"{path}.lookup", "hash or dynamic for string ids (identity needs dtype int64)", lookup)
        for key in LOOKUP_KEYS[1:]:
            needs = ("identity", "dynamic") if key == "oov_buckets" else ("dynamic",)
            if d.get(key) is not None and lookup not in needs:
                raise KeyPathError(f"{path}.{key}", f"only allowed with lookup: {' or '.join(needs)}, got lookup {lookup!r}")
        return cls(
            lookup=lookup,
            oov_buckets=_pos_int(d, "oov_buckets", path, optional=True),
            min_count=_pos_int(d, "min_count", path, optional=True),
            ttl_days=_pos_int(d, "ttl_days", path, optional=True),
            count_half_life_days=_pos_int(d, "count_half_life_days", path, optional=True),
            max_waiting=_pos_int(d, "max_waiting", path, optional=True),
        )

    @property
    def oov_rows(self) -> int:
        """Rows after the `num_buckets` ones: out-of-vocabulary (not admitted) ids."""
        return 0 if self.lookup == "hash" else (self.oov_buckets or 1)

    @property
    def admission_count(self) -> int:
        return self.min_count or 1

    @property
    def half_life_days(self) -> int:
        """Days over which a dynamic table's counts halve."""
        return self.count_half_life_days or COUNT_HALF_LIFE_DAYS

    def waiting_bound(self, num_buckets: int) -> int:
        """Ids a dynamic table of `num_buckets` rows tracks without a row, at most."""
        return self.max_waiting or num_buckets

    def to_dict(self) -> dict:
        if self.lookup == "hash":
            return {}
        return _drop_none(dataclasses.asdict(self))


@dataclass
class CategoricalFeature:
    """An id feature hashed into `num_buckets` rows of a `dim`-wide table.

    With `shared_with`, it looks up the table of that categorical feature
    (same `num_buckets` and `dim`, taken from it when omitted here).
    `default` is what a null id becomes (None: -1 for int64, "" for string).
    """

    name: str
    dtype: str = "int64"
    num_buckets: int | None = None
    dim: int | None = None
    shared_with: str | None = None
    default: int | str | None = None
    lookup: LookupSpec = field(default_factory=LookupSpec)

    KEYS = ("name", "dtype", "num_buckets", "dim", "shared_with", "default")

    @classmethod
    def from_dict(cls, d: Mapping, path: str) -> "CategoricalFeature":
        _check_keys(d, path, cls.KEYS + LOOKUP_KEYS, ("name",))
        dtype = _choice(d, "dtype", path, ID_DTYPES, "int64")
        shared = d.get("shared_with")
        if shared is not None and not isinstance(shared, str):
            _fail(f"{path}.shared_with", "a categorical feature name or null", shared)
        return cls(
            name=_name(d, path),
            dtype=dtype,
            num_buckets=_pos_int(d, "num_buckets", path, optional=shared is not None),
            dim=_pos_int(d, "dim", path, optional=shared is not None),
            shared_with=shared,
            default=_id_default(d, path, dtype),
            lookup=_lookup_of(d, path, dtype, shared),
        )

    @property
    def fill_value(self):
        return PAD[self.dtype] if self.default is None else self.default

    def to_dict(self) -> dict:
        return {**_drop_none({k: getattr(self, k) for k in self.KEYS}), **self.lookup.to_dict()}


def _lookup_of(d: Mapping, path: str, dtype: str, shared: str | None) -> LookupSpec:
    if shared is not None:
        for key in LOOKUP_KEYS:
            if d.get(key) is not None:
                raise KeyPathError(f"{path}.{key}", f"not allowed with shared_with (the lookup is that of {shared!r}'s table)")
    return LookupSpec.from_dict(d, path, dtype)


@dataclass
class NumericFeature:
    """A float feature: `normalize` none | log1p (sign(x)·log(1+|x|)) | standardize
    ((x-mean)/std) | bucketize | piecewise_linear.

    `bucketize` and `piecewise_linear` make the value an embedding of width `dim`
    (default: the dim of the categorical features) over buckets cut at `boundaries`
    (strictly increasing; bucket b holds the values with b cuts at or below them), or,
    without them, at the quantiles of `num_buckets` (default 32) equal-count buckets of
    the first training day (see `compute_numeric_stats`). `bucketize`: a table row per
    bucket. `piecewise_linear` (Gorishniy et al., 2022): the value's position inside
    each bucket between two cuts, then a linear map (see
    `mtlrec.layers.embedding.numeric_encodings`).
    """

    name: str
    dtype: str = "float32"
    normalize: str = "none"
    mean: float | None = None
    std: float | None = None
    default: float = 0.0
    num_buckets: int | None = None
    boundaries: list | None = None
    dim: int | None = None

    KEYS = ("name", "dtype", "normalize", "mean", "std", "default", "num_buckets", "boundaries", "dim")

    @classmethod
    def from_dict(cls, d: Mapping, path: str) -> "NumericFeature":
        _check_keys(d, path, cls.KEYS, ("name",))
        default = _float(d, "default", path)
        normalize = _choice(d, "normalize", path, NORMALIZATIONS, "none")
        for key in ("num_buckets", "boundaries", "dim"):
            if d.get(key) is not None and normalize not in EMBEDDED_NUMERIC:
                raise KeyPathError(f"{path}.{key}", f"only allowed with normalize: bucketize or piecewise_linear, got normalize {normalize!r}")
        num_buckets = _pos_int(d, "num_buckets", path, optional=True)
        fewest = _fewest_buckets(normalize)
        if num_buckets is not None and num_buckets < fewest:
            _fail(f"{path}.num_buckets", f"an integer >= {fewest} for normalize: {normalize}", num_buckets)
        return cls(
            name=_name(d, path),
            dtype=_choice(d, "dtype", path, NUMERIC_DTYPES, "float32"),
            normalize=normalize,
            mean=_float(d, "mean", path),
            std=_float(d, "std", path, positive=True),
            default=0.0 if default is None else default,
            num_buckets=num_buckets,
            boundaries=_boundaries(d, path, normalize, num_buckets),
            dim=_pos_int(d, "dim", path, optional=True),
        )

    @property
    def embedded(self) -> bool:
        """Whether the feature is an embedding (`bucketize`, `piecewise_linear`)."""
        return self.normalize in EMBEDDED_NUMERIC

    @property
    def bucket_count(self) -> int:
        """The buckets: one more than the cuts when set, else the ones asked for."""
        if self.boundaries is not None:
            return len(self.boundaries) + 1
        return self.num_buckets or DEFAULT_NUMERIC_BUCKETS

    def to_dict(self) -> dict:
        out = _drop_none({k: getattr(self, k) for k in self.KEYS})
        if self.boundaries is not None:
            out["boundaries"] = list(self.boundaries)
        return out


def _fewest_buckets(normalize: str) -> int:
    """bucketize needs one cut (two buckets), piecewise_linear two (one bucket between them)."""
    return 3 if normalize == "piecewise_linear" else 2


def _boundaries(d: Mapping, path: str, normalize: str, num_buckets: int | None) -> list | None:
    v = d.get("boundaries")
    if v is None:
        return None
    where = f"{path}.boundaries"
    fewest = _fewest_buckets(normalize) - 1
    if not isinstance(v, (list, tuple)) or len(v) < fewest:
        _fail(where, f"a list of {fewest} or more strictly increasing numbers for normalize: {normalize}", v)
    for i, b in enumerate(v):
        if isinstance(b, bool) or not isinstance(b, (int, float, np.number)) or not math.isfinite(b):
            _fail(f"{where}[{i}]", "a finite number", b)
    as32 = np.asarray(v, dtype=np.float32)
    for i in range(1, len(v)):
        if not v[i] > v[i - 1] or not as32[i] > as32[i - 1]:
            same = "" if v[i] <= v[i - 1] else " as float32 (the model compares float32 values)"
            raise KeyPathError(where, f"expected strictly increasing numbers, got {v[i]!r} after {v[i - 1]!r}{same} at index {i}")
    if num_buckets is not None and len(v) + 1 > num_buckets:
        raise KeyPathError(where, f"expected at most num_buckets - 1 = {num_buckets - 1} cuts, got {len(v)} (or leave num_buckets out)")
    return [float(b) for b in v]


@dataclass
class SequenceFeature:
    """A list of ids per row, truncated to the `max_len` most recent (last) ones and padded
    after them with -1 (int64) or "" (string). Either `shared_with` a categorical feature's
    table or its own `num_buckets` and `dim`."""

    name: str
    dtype: str = "int64"
    max_len: int = 1
    shared_with: str | None = None
    num_buckets: int | None = None
    dim: int | None = None
    lookup: LookupSpec = field(default_factory=LookupSpec)

    KEYS = ("name", "dtype", "max_len", "shared_with", "num_buckets", "dim")

    @classmethod
    def from_dict(cls, d: Mapping, path: str) -> "SequenceFeature":
        _check_keys(d, path, cls.KEYS + LOOKUP_KEYS, ("name", "max_len"))
        shared = d.get("shared_with")
        if shared is not None and not isinstance(shared, str):
            _fail(f"{path}.shared_with", "a categorical feature name or null", shared)
        for key in ("num_buckets", "dim"):
            if shared is None and d.get(key) is None:
                raise KeyPathError(f"{path}.{key}", "expected a positive integer (or shared_with a categorical feature), got None")
        dtype = _choice(d, "dtype", path, ID_DTYPES, "int64")
        return cls(
            name=_name(d, path),
            dtype=dtype,
            max_len=_pos_int(d, "max_len", path),
            shared_with=shared,
            num_buckets=_pos_int(d, "num_buckets", path, optional=shared is not None),
            dim=_pos_int(d, "dim", path, optional=shared is not None),
            lookup=_lookup_of(d, path, dtype, shared),
        )

    @property
    def pad(self):
        return PAD[self.dtype]

    def to_dict(self) -> dict:
        return {**_drop_none({k: getattr(self, k) for k in self.KEYS}), **self.lookup.to_dict()}


@dataclass
class LabelSpec:
    """A label column: binary (0/1), multiclass (0..num_classes-1) or regression."""

    name: str
    kind: str = "binary"
    num_classes: int | None = None

    KEYS = ("name", "kind", "num_classes")

    @classmethod
    def from_dict(cls, d: Mapping, path: str) -> "LabelSpec":
        _check_keys(d, path, cls.KEYS, ("name",))
        kind = _choice(d, "kind", path, LABEL_KINDS, "binary")
        num_classes = _pos_int(d, "num_classes", path, optional=kind != "multiclass")
        if kind == "multiclass" and num_classes < 2:
            _fail(f"{path}.num_classes", "an integer >= 2", num_classes)
        if kind != "multiclass" and num_classes is not None:
            raise KeyPathError(f"{path}.num_classes", f"only allowed with kind: multiclass, got kind {kind!r}")
        return cls(name=_name(d, path), kind=kind, num_classes=num_classes)

    def to_dict(self) -> dict:
        return _drop_none({k: getattr(self, k) for k in self.KEYS})


@dataclass
class Schema:
    """Features and labels of a dataset, in declaration order."""

    categorical: list[CategoricalFeature] = field(default_factory=list)
    numeric: list[NumericFeature] = field(default_factory=list)
    sequence: list[SequenceFeature] = field(default_factory=list)
    labels: list[LabelSpec] = field(default_factory=list)
    key: str | None = None

    SECTIONS = (
        ("categorical", CategoricalFeature),
        ("numeric", NumericFeature),
        ("sequence", SequenceFeature),
        ("labels", LabelSpec),
    )

    @classmethod
    def from_dict(cls, d: Mapping | "Schema", path: str = "schema") -> "Schema":
        if isinstance(d, Schema):
            return d
        _check_keys(d, path, ("key",) + tuple(s for s, _ in cls.SECTIONS))
        key = d.get("key")
        if key is not None and not isinstance(key, str):
            _fail(f"{path}.key", "a column name or null", key)
        parts = {}
        for section, spec in cls.SECTIONS:
            items = d.get(section) or []
            if not isinstance(items, (list, tuple)):
                _fail(f"{path}.{section}", "a list", items)
            parts[section] = [spec.from_dict(item, f"{path}.{section}[{i}]") for i, item in enumerate(items)]
        schema = cls(key=key, **parts)
        schema._check_references(path)
        return schema

    def _check_references(self, path: str) -> None:
        seen: dict[str, str] = {}
        for section, _ in self.SECTIONS:
            for i, item in enumerate(getattr(self, section)):
                where = f"{path}.{section}[{i}].name"
                if item.name in seen:
                    raise KeyPathError(where, f"duplicate name {item.name!r} (already declared at {seen[item.name]})")
                seen[item.name] = where
        if not (self.categorical or self.numeric or self.sequence):
            raise KeyPathError(path, "expected at least one feature in categorical, numeric or sequence")
        owners = {f.name: f for f in self.categorical if f.shared_with is None}
        shared_names = {f.name for f in self.categorical}
        for section in ("categorical", "sequence"):
            for i, f in enumerate(getattr(self, section)):
                if f.shared_with is None:
                    continue
                where = f"{path}.{section}[{i}].shared_with"
                if f.shared_with not in owners:
                    what = "a categorical feature with its own table"
                    if f.shared_with in shared_names:
                        what += f" ({f.shared_with!r} itself shares another table)"
                    _fail(where, what, f.shared_with)
                owner = owners[f.shared_with]
                if f.dtype != owner.dtype:
                    _fail(f"{path}.{section}[{i}].dtype", f"{owner.dtype!r} like {owner.name!r} whose table it shares", f.dtype)
                for attr in ("num_buckets", "dim"):
                    v = getattr(f, attr)
                    if v is not None and v != getattr(owner, attr):
                        _fail(f"{path}.{section}[{i}].{attr}", f"{getattr(owner, attr)} (the {attr} of {owner.name!r}) or nothing", v)
        dims = sorted({self.table_size(f)[1] for f in self.categorical})
        for i, f in enumerate(self.numeric):
            if f.embedded and f.dim is None and len(dims) != 1:
                found = f"the categorical features' dims are {dims}" if dims else "there is no categorical feature"
                raise KeyPathError(
                    f"{path}.numeric[{i}].dim",
                    f"expected a positive integer for normalize: {f.normalize} ({found}, no one dim to default to)",
                )

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.key is not None:
            out["key"] = self.key
        for section, _ in self.SECTIONS:
            out[section] = [item.to_dict() for item in getattr(self, section)]
        return out

    # --- convenience lookups -------------------------------------------------------------

    @property
    def features(self) -> list:
        """All features in the order categorical, numeric, sequence."""
        return [*self.categorical, *self.numeric, *self.sequence]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def column_names(self) -> list[str]:
        return self.feature_names + self.label_names

    def table_of(self, feature) -> CategoricalFeature:
        """The categorical feature owning the table that `feature` looks up (None: its own)."""
        if feature.shared_with is None:
            return feature
        return next(f for f in self.categorical if f.name == feature.shared_with)

    def lookup_of(self, feature) -> LookupSpec:
        """The lookup of the table `feature` reads (its owner's when shared)."""
        if isinstance(feature, SequenceFeature) and feature.shared_with is None:
            return feature.lookup
        return self.table_of(feature).lookup

    def numeric_dim(self, feature: NumericFeature) -> int:
        """The embedding width of an embedded numeric feature: its `dim`, else the
        categorical features' common dim."""
        return feature.dim or self.table_size(self.categorical[0])[1]

    def table_size(self, feature) -> tuple[int, int]:
        """(num_buckets, dim) of the table `feature` looks up."""
        if isinstance(feature, SequenceFeature) and feature.shared_with is None:
            return feature.num_buckets, feature.dim
        owner = self.table_of(feature)
        return owner.num_buckets, owner.dim


def compute_numeric_stats(schema: Mapping | Schema, batches: Iterable, overwrite: bool = False) -> dict:
    """Fill `mean`/`std` of the `standardize` numeric features and `boundaries` of the
    `bucketize` / `piecewise_linear` ones from training data.

    `batches` is an iterable of column mappings (dict of arrays, pandas DataFrame, pyarrow
    RecordBatch/Table, or the features dict of a `make_dataset` batch). For the statistics,
    nulls, NaN and ±inf count as the feature's `default` (what the model sees). The boundaries are
    the cuts of the feature's `num_buckets` equal-count buckets (`mtlrec.quantiles`:
    bounded memory, exact up to 131,072 values, then from a uniform sample of that many;
    a value holding more than one bucket's share gets a bucket of its own); NaN and
    infinities are skipped (`make_dataset` has already read them as the default).
    Features that already have their statistics or boundaries keep them unless
    `overwrite`. Returns a new schema dict; the input is not modified.

    Raises:
        KeyPathError: (``schema.numeric[i].normalize``) a bucketized feature's values
            are constant (too few distinct values for its normalize).
    """
    parsed = Schema.from_dict(schema)
    todo = [f for f in parsed.numeric if f.normalize == "standardize" and (overwrite or f.mean is None or f.std is None)]
    cut = [f for f in parsed.numeric if f.embedded and (overwrite or f.boundaries is None)]
    if not todo and not cut:
        return parsed.to_dict()
    count = {f.name: 0 for f in todo}
    total = {f.name: 0.0 for f in todo}
    total_sq = {f.name: 0.0 for f in todo}
    shift: dict[str, float] = {}  # first value seen: sums of (x - shift) keep precision
    sketches = {f.name: QuantileSketch() for f in cut}
    for batch in batches:
        for f in todo + cut:
            try:
                col = batch[f.name]
            except (KeyError, IndexError):
                raise ValueError(f"compute_numeric_stats: column {f.name!r} missing from a batch") from None
            if f.name in sketches:
                sketches[f.name].add(_as_float_array(col))
                continue
            x = _to_float_array(col, f.default)
            if x.size == 0:
                continue
            s = shift.setdefault(f.name, float(x[0]))
            d = x - s
            count[f.name] += x.size
            total[f.name] += float(d.sum())
            total_sq[f.name] += float((d * d).sum())
    out = dataclasses.replace(parsed)
    out.numeric = []
    for i, f in enumerate(parsed.numeric):
        if f in todo:
            n = count[f.name]
            if n == 0:
                raise ValueError(f"compute_numeric_stats: no values seen for column {f.name!r}")
            m = total[f.name] / n
            var = max(total_sq[f.name] / n - m * m, 0.0)
            std = math.sqrt(var)
            f = dataclasses.replace(f, mean=m + shift[f.name], std=std if std > 1e-12 else 1.0)
        elif f in cut:
            f = dataclasses.replace(f, boundaries=_data_boundaries(f, sketches[f.name], f"schema.numeric[{i}].normalize"))
        out.numeric.append(f)
    return out.to_dict()


def _data_boundaries(f: NumericFeature, sketch: QuantileSketch, path: str) -> list[float]:
    if not sketch.count:
        raise ValueError(f"compute_numeric_stats: no finite values seen for column {f.name!r}")
    cuts = quantile_boundaries(sketch, f.num_buckets or DEFAULT_NUMERIC_BUCKETS)
    fewest = _fewest_buckets(f.normalize) - 1
    if len(cuts) < fewest:
        found = (
            f"every value is {sketch.minimum:g} (constant)" if sketch.minimum == sketch.maximum
            else f"values from {sketch.minimum:g} to {sketch.maximum:g} give {len(cuts)} cut{'s' * (len(cuts) != 1)}"
        )
        raise KeyPathError(
            path,
            f"feature {f.name!r}: expected values that give at least {fewest} quantile cut"
            f"{'s' * (fewest > 1)} for normalize: {f.normalize}, got {sketch.count} values where {found}; "
            "give boundaries, or another normalize",
        )
    return cuts


def _as_float_array(col) -> np.ndarray:
    if hasattr(col, "to_numpy") and hasattr(col, "null_count"):  # pyarrow Array / ChunkedArray
        col = col.to_numpy(zero_copy_only=False)
    elif hasattr(col, "numpy"):  # tf.Tensor
        col = col.numpy()
    return np.asarray(col, dtype=np.float64).ravel()


def _to_float_array(col, default: float) -> np.ndarray:
    x = _as_float_array(col)
    return np.where(np.isfinite(x), x, default)

"""Hash collisions of id features: distinct ids per embedding table against its buckets.

`num_buckets` is a hash range, not a vocabulary size: n distinct ids hashed into m
buckets leave each id sharing its row with another id with probability

    1 - (1 - 1/m)^(n - 1)

(the chance that none of the other n - 1 ids lands in its bucket, subtracted from 1),
so n ids in m = n buckets share rows for about 63% of them.
"""

import math

import pyarrow as pa
import pyarrow.compute as pc

#: a warning is logged when the expected share of ids sharing a row exceeds this
WARN_SHARE = 0.05
#: the share the suggested `num_buckets` brings the collisions under
TARGET_SHARE = 0.01
# merge the per-batch unique ids of a table once this many are pending
_MERGE_AT = 1 << 20


def shared_row_share(ids, buckets):
    """Expected share of `ids` distinct ids that share their row, hashed into `buckets`."""
    if ids <= 1:
        return 0.0
    return -math.expm1((ids - 1) * math.log1p(-1.0 / buckets)) if buckets > 1 else 1.0


def buckets_for_share(ids, share=TARGET_SHARE):
    """The smallest `num_buckets` whose expected shared-row share for `ids` ids is below `share`."""
    if ids <= 1:
        return 1
    m = max(2, math.ceil(1.0 / -math.expm1(math.log1p(-share) / (ids - 1))))
    while shared_row_share(ids, m) >= share:  # floating-point edge of the closed form
        m += 1
    while m > 2 and shared_row_share(ids, m - 1) < share:
        m -= 1
    return m


def hashed_tables(schema):
    """`{table owner name: [names of the features that look it up]}` for the hashed id
    features of a `Schema` (a shared table counts the ids of every feature using it)."""
    tables = {}
    for feature in [*schema.categorical, *schema.sequence]:
        if schema.lookup_of(feature).lookup != "hash":  # identity/dynamic tables do not collide
            continue
        owner = feature.name if feature.shared_with is None else feature.shared_with
        tables.setdefault(owner, []).append(feature.name)
    return tables


class IdCounter:
    """Counts the distinct ids of each hashed table over a day's record batches.

    Exact: each batch contributes its `pyarrow.compute.unique` ids, merged into one
    unique array per table when many are pending, so memory grows with the number of
    distinct ids (8 bytes per int id, the string's length per string id), not with rows.
    """

    def __init__(self, schema):
        self.tables = hashed_tables(schema)
        self._table_of = {f: owner for owner, names in self.tables.items() for f in names}
        self._string = {f.name: f.dtype == "string" for f in [*schema.categorical, *schema.sequence]}
        self._pending = {owner: [] for owner in self.tables}
        self._size = dict.fromkeys(self.tables, 0)

    @property
    def columns(self):
        return list(self._table_of)

    def add(self, column, values):
        """Add a batch of `column` (an Arrow array, list arrays for sequences, or numpy)."""
        owner = self._table_of.get(column)
        if owner is None:
            return
        values = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = pc.list_flatten(values)
        # ids hash through their string form, so a string table counts 123 and "123" once
        target = pa.binary() if self._string[owner] else pa.int64()
        if pa.types.is_integer(values.type) and self._string[owner]:
            values = values.cast(pa.string())
        unique = pc.unique(values.cast(target)).drop_null()
        self._pending[owner].append(unique)
        self._size[owner] += len(unique)
        if self._size[owner] >= _MERGE_AT:
            self._merge(owner)

    def _merge(self, owner):
        chunks = self._pending[owner]
        if len(chunks) > 1:
            merged = pc.unique(pa.chunked_array(chunks))
            self._pending[owner] = [merged]
            self._size[owner] = len(merged)

    def counts(self):
        """`{table owner name: distinct ids}`."""
        for owner in self.tables:
            self._merge(owner)
        return {owner: self._size[owner] for owner in self.tables}


def collision_report(schema, counts):
    """Per hashed table: distinct ids, buckets, the expected shared-row share and the
    `num_buckets` that brings it under `TARGET_SHARE`; a JSON-ready dict keyed by the
    table's owning feature."""
    owners = {f.name: f for f in schema.categorical}
    owners.update({f.name: f for f in schema.sequence if f.shared_with is None})
    report = {}
    for owner, features in hashed_tables(schema).items():
        ids = int(counts.get(owner, 0))
        buckets = int(owners[owner].num_buckets)
        entry = {"distinct_ids": ids, "num_buckets": buckets,
                 "expected_shared_share": round(shared_row_share(ids, buckets), 6),
                 "num_buckets_for_1pct": buckets_for_share(ids)}
        if features != [owner]:
            entry["features"] = list(features)
        report[owner] = entry
    return report


def collision_warnings(report, threshold=WARN_SHARE):
    """One line per table whose expected shared-row share exceeds `threshold`."""
    lines = []
    for name, e in report.items():
        if e["expected_shared_share"] > threshold:
            lines.append(
                f"feature {name}: {e['distinct_ids']:,} distinct ids hashed into num_buckets={e['num_buckets']:,}: "
                f"about {100 * e['expected_shared_share']:.1f}% of ids share an embedding row with another id "
                f"(num_buckets is a hash range, not a vocabulary size); "
                f"num_buckets >= {e['num_buckets_for_1pct']:,} brings this under {100 * TARGET_SHARE:g}%"
            )
    return lines

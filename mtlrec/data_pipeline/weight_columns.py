"""The checks of the columns that weigh rows: sample weights and negative keep rates.

Neither a feature nor a label, such a column is read beside the labels (an extra column of
``make_dataset``); ``validate_day`` checks each of its values before training starts, since
a negative, infinite or missing weight would silently bend every loss it enters.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from mtlrec.data_pipeline.columns import is_list, is_number
from mtlrec.data_pipeline.data_validation_error import DataValidationError

#: kind -> (what the values must be, test of the good values)
KINDS = {
    "sample_weight": ("finite sample weights >= 0", lambda v: np.isfinite(v) & (v >= 0)),
    "keep_rate": ("keep rates in (0, 1]", lambda v: (v > 0) & (v <= 1)),
}


class WeightColumn(NamedTuple):
    """A column of row weights to check.

    Attributes:
        name: the column.
        kind: ``"sample_weight"`` or ``"keep_rate"``.
        key: the config key that names it (``data.sample_weight``), for messages.
    """

    name: str
    kind: str
    key: str


def missing_error(column: WeightColumn, path) -> DataValidationError:
    return DataValidationError(f"column missing from the file (the {column.key} column)", file=path, column=column.name)


def check_type(column: WeightColumn, arrow_type, path) -> None:
    """A scalar number column, or ``DataValidationError``."""
    if is_list(arrow_type) or not is_number(arrow_type):
        raise DataValidationError(
            f"type not readable as declared: expected numbers ({column.key}), found {arrow_type}",
            file=path, column=column.name,
        )


def check_arrow(column: WeightColumn, array, path, first_row: int) -> None:
    """Check one Arrow array of the column: no nulls, every value as its kind requires."""
    if array.null_count:
        i = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataValidationError(
            f"{array.null_count} null value(s) (first at row {first_row + i}); expected "
            f"{KINDS[column.kind][0]} ({column.key})", file=path, column=column.name,
        )
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    check_values(column, array.cast(pa.float64()).to_numpy(zero_copy_only=False), path, first_row)


def check_values(column: WeightColumn, values: np.ndarray, path, first_row: int) -> None:
    """Every value as the column's kind requires, or ``DataValidationError`` naming the
    first bad one."""
    what, good = KINDS[column.kind]
    values = np.asarray(values, dtype=np.float64)
    bad = ~good(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataValidationError(
            f"expected {what} ({column.key}); found {values[i]:g} at row {first_row + i} "
            f"({int(bad.sum())} bad rows in this batch)", file=path, column=column.name,
        )

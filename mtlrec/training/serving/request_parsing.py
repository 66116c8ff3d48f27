"""TF Serving's REST ``:predict`` bodies -> numpy arrays by a signature's inputs.

The two forms of TensorFlow Serving's REST API are read:

- row form ``{"instances": [{input: value, ...}, ...]}``: one object per row;
- columnar form ``{"inputs": {input: [value of each row, ...], ...}}``;

each with an optional ``"signature_name"`` (default ``serving_default``). Values are
checked against the signature, as TF Serving checks them, and every refusal is a
``RequestError`` naming the input, the row and what was expected: an unknown or
missing input, a value of the wrong type (a float or a string for an int64 id, a
number for a string id, a list for a scalar, JSON ``null``), id lists of different
lengths within one request (pad each row after its items with -1 or "" to the
longest, as TF Serving needs), a body that is not JSON.

Strings may also be sent as ``{"b64": "..."}`` (TF Serving's binary form). Numbers
accept ``NaN`` and ``Infinity`` as TF Serving does; a non-finite value of a numeric
feature reads as the feature's ``default``, the rule by which training and
``mtlrec predict`` read it (``mtlrec.data_pipeline.columns.column_plan`` gives the
default), so a row answers as the same row of a Parquet file does.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

from mtlrec.schema import PAD

DEFAULT_SIGNATURE = "serving_default"


class RequestError(Exception):
    """A request the server refuses: ``status`` (400, 404) and one line saying why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


_NUMPY = {
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8, "uint8": np.uint8,
    "float32": np.float32, "float64": np.float64, "float16": np.float16, "bool": np.bool_,
}


@dataclass(frozen=True)
class InputSpec:
    """One input of a signature as a request must give it.

    ``rank`` 1: one value per row; 2: a list per row, of ``width`` values (None: any
    length, the same for every row of a request). ``pad`` is what an id list is padded
    with after its items (-1, b""); such lists of different requests are padded to the
    longest when they run as one batch (the graph fits each row to ``max_len``).
    ``fill`` is what a non-finite number reads as (a numeric feature's default)."""

    name: str
    dtype: str
    rank: int
    width: int | None = None
    pad: object = None
    fill: float | None = None

    @classmethod
    def of(cls, name: str, spec, fill=None) -> "InputSpec":
        """From a ``tf.TensorSpec`` of a loaded signature."""
        dtype = spec.dtype.name
        shape = list(spec.shape)
        rank = len(shape)
        width = None if rank < 2 or shape[1] is None else int(shape[1])
        pad = None
        if rank == 2 and width is None and dtype in ("int64", "string"):
            pad = PAD["int64"] if dtype == "int64" else PAD["string"].encode()
        return cls(name, dtype, rank, width, pad, fill if dtype.startswith("float") else None)

    def describe(self) -> str:
        """What a row carries, for messages: "an integer (int64)", "a list of ..."."""
        one = _WHAT.get(self.dtype, f"a {self.dtype} value")
        if self.rank == 1:
            return one
        size = "" if self.width is None else f"{self.width} "
        return f"a list of {size}{_PLURAL.get(self.dtype, f'{self.dtype} values')}"


_WHAT = {"int64": "an integer (int64)", "int32": "an integer (int32)", "float32": "a number (float32)",
         "float64": "a number (float64)", "string": 'a string (or {"b64": ...})', "bool": "true or false"}
_PLURAL = {"int64": "integers (int64)", "int32": "integers (int32)", "float32": "numbers (float32)",
           "float64": "numbers (float64)", "string": "strings", "bool": "booleans"}


@dataclass
class PredictRequest:
    """A checked request: the signature, the form it came in, the arrays by input and the
    number of rows (None when the inputs' rows differ, e.g. one representation for many
    candidates: such a request runs on its own)."""

    signature: str
    columnar: bool
    arrays: dict
    rows: int | None


def _show(value) -> str:
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _bad(spec: InputSpec, value, row: int, what: str | None = None) -> RequestError:
    return RequestError(
        f"{spec.name}: expected {what or spec.describe()} per row, got {_show(value)} at row {row}"
    )


def _is_int(v) -> bool:
    return type(v) is int


def _is_number(v) -> bool:
    return type(v) is int or type(v) is float


def _scalars(values: list, spec: InputSpec, rows) -> np.ndarray:
    """A flat list of one input's scalars -> numpy (``rows[i]``: the row of ``values[i]``,
    for messages)."""
    dtype = spec.dtype
    if dtype == "string":
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if type(v) is str:
                out[i] = v.encode("utf-8")
            elif type(v) is dict and set(v) == {"b64"} and type(v["b64"]) is str:
                try:
                    out[i] = base64.b64decode(v["b64"], validate=True)
                except (binascii.Error, ValueError):
                    raise _bad(spec, v, rows[i], 'a string (or {"b64": <base64 text>})') from None
            else:
                hint = f' (send it as "{v}")' if _is_number(v) else ""
                raise RequestError(_bad(spec, v, rows[i]).args[0] + hint)
        return out
    if dtype == "bool":
        check = lambda v: type(v) is bool  # noqa: E731
    elif dtype.startswith(("int", "uint")):
        check = _is_int
    elif dtype.startswith("float"):
        check = _is_number
    else:
        raise RequestError(f"{spec.name}: inputs of type {dtype} are not served")
    if not all(map(check, values)):
        i = next(i for i, v in enumerate(values) if not check(v))
        raise _bad(spec, values[i], rows[i])
    if dtype.startswith("float"):
        array = np.asarray(values, dtype=np.float64).astype(_NUMPY[dtype])
        if spec.fill is not None:
            finite = np.isfinite(array)
            if not finite.all():
                array = np.where(finite, array, np.asarray(spec.fill, array.dtype))
        return array
    try:
        return np.asarray(values, dtype=_NUMPY[dtype])
    except OverflowError:
        info = np.iinfo(_NUMPY[dtype])
        i = next(i for i, v in enumerate(values) if not info.min <= v <= info.max)
        raise _bad(spec, values[i], rows[i], f"{spec.describe()} within [{info.min}, {info.max}]") from None


def column_array(values: list, spec: InputSpec) -> np.ndarray:
    """One input's values, one per row, -> a numpy array of the signature's dtype."""
    if spec.rank == 1:
        return _scalars(values, spec, range(len(values)))
    if spec.rank != 2:
        raise RequestError(f"{spec.name}: inputs of rank {spec.rank} are not served")
    lengths = []
    for i, row in enumerate(values):
        if type(row) is not list:
            raise _bad(spec, row, i)
        lengths.append(len(row))
    width = lengths[0] if lengths else 0
    if spec.width is not None and any(n != spec.width for n in lengths):
        i = next(i for i, n in enumerate(lengths) if n != spec.width)
        raise RequestError(f"{spec.name}: expected {spec.describe()} per row, got {lengths[i]} values at row {i}")
    if any(n != width for n in lengths):
        i = next(i for i, n in enumerate(lengths) if n != width)
        pad = "" if spec.pad is None else f" with {_show(spec.pad.decode() if isinstance(spec.pad, bytes) else spec.pad)}"
        raise RequestError(
            f"{spec.name}: rows of different lengths ({width} values at row 0, {lengths[i]} at row {i}); "
            f"pad each row after its items{pad} to the longest"
        )
    flat = [v for row in values for v in row]
    return _scalars(flat, spec, _RowOf(width)).reshape(len(values), width)


class _RowOf:
    """``[i]``: the row of the i-th value of a flattened list input (rows of ``width``)."""

    def __init__(self, width: int):
        self.width = width

    def __getitem__(self, i: int) -> int:
        return i // self.width


def _signature(body: dict, signatures: dict) -> tuple[str, dict]:
    name = body.get("signature_name", DEFAULT_SIGNATURE)
    if name is None or name == "":
        name = DEFAULT_SIGNATURE
    if type(name) is not str:
        raise RequestError(f"signature_name: expected a string, got {_show(name)}")
    if name not in signatures:
        raise RequestError(
            f'Serving signature name: "{name}" not found in signature def '
            f"(this export has: {', '.join(sorted(signatures))})"
        )
    return name, signatures[name]


def _takes(signature: str, specs: dict) -> str:
    return f"{signature} takes {', '.join(sorted(specs))}"


def _row_form(instances, signature: str, specs: dict) -> dict:
    if type(instances) is not list or not instances:
        raise RequestError(f"instances: expected a non-empty list of rows, got {_show(instances)}")
    if len(specs) == 1 and not all(type(r) is dict for r in instances):
        (name, spec), = specs.items()  # a single input: each instance is its value
        return {name: column_array(instances, spec)}
    columns = {name: [] for name in specs}
    for i, row in enumerate(instances):
        if type(row) is not dict:
            raise RequestError(
                f"instances: expected one object per row ({{input: value, ...}}), got {_show(row)} at row {i}"
            )
        if len(row) != len(specs) or row.keys() != specs.keys():
            unknown = sorted(set(row) - set(specs))
            if unknown:
                raise RequestError(f"{unknown[0]}: not an input of the model (row {i}); {_takes(signature, specs)}")
            missing = sorted(set(specs) - set(row))
            raise RequestError(
                f"{missing[0]}: missing at row {i}, expected {specs[missing[0]].describe()} per row; "
                f"{_takes(signature, specs)}"
            )
        for name, column in columns.items():
            column.append(row[name])
    return {name: column_array(values, specs[name]) for name, values in columns.items()}


def _columnar_form(inputs, signature: str, specs: dict) -> dict:
    if type(inputs) is not dict and len(specs) == 1:
        inputs = {next(iter(specs)): inputs}  # a single input: its value
    if type(inputs) is not dict:
        raise RequestError(f"inputs: expected an object {{input: [value of each row, ...]}}, got {_show(inputs)}")
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise RequestError(f"{unknown[0]}: not an input of the model; {_takes(signature, specs)}")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise RequestError(
            f"{missing[0]}: missing from inputs, expected {specs[missing[0]].describe()} per row; "
            f"{_takes(signature, specs)}"
        )
    arrays = {}
    for name, spec in specs.items():
        values = inputs[name]
        if type(values) is not list or not values:
            raise RequestError(
                f"{name}: expected a non-empty list with {spec.describe()} per row, got {_show(values)}"
            )
        arrays[name] = column_array(values, spec)
    return arrays


def parse_json(body: bytes):
    """The JSON of a request body (NaN and Infinity allowed, as TF Serving allows them)."""
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise RequestError("JSON Parse error: the body is not UTF-8 text") from None
    except ValueError as err:
        raise RequestError(f"JSON Parse error: {err}") from None
    except RecursionError:
        raise RequestError("JSON Parse error: nested too deeply") from None


def parse_predict(body: bytes, signatures: dict) -> PredictRequest:
    """A ``:predict`` body -> ``PredictRequest``.

    Args:
        body: the request body.
        signatures: ``{signature name: {input name: InputSpec}}`` of the served version.

    Raises:
        RequestError: the body is not a request the signature can answer.
    """
    data = parse_json(body)
    if type(data) is not dict:
        raise RequestError(
            f"the body must be a JSON object with \"instances\" or \"inputs\", got {_show(data)}"
        )
    has_rows, has_columns = "instances" in data, "inputs" in data
    if has_rows == has_columns:
        raise RequestError(
            'the body needs exactly one of "instances" (row form) or "inputs" (columnar form), got '
            + ("both" if has_rows else f"the keys {sorted(data)}")
        )
    signature, specs = _signature(data, signatures)
    if has_rows:
        arrays = _row_form(data["instances"], signature, specs)
    else:
        arrays = _columnar_form(data["inputs"], signature, specs)
    counts = {len(a) for a in arrays.values()}
    return PredictRequest(signature, has_columns, arrays, counts.pop() if len(counts) == 1 else None)


def _json_values(array: np.ndarray) -> list:
    if array.dtype == object:  # strings: text (TF Serving's b64 form is for *_bytes outputs)
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


def response_body(outputs: dict, columnar: bool) -> dict:
    """TF Serving's answer: ``{"predictions": [...]}`` (a row per row, an object per row
    when the signature has several outputs) or ``{"outputs": {...}}`` (a list per output;
    the list alone for a single output)."""
    names = sorted(outputs)
    lists = {name: _json_values(np.asarray(outputs[name])) for name in names}
    if columnar:
        return {"outputs": lists[names[0]] if len(names) == 1 else lists}
    if len(names) == 1:
        return {"predictions": lists[names[0]]}
    return {"predictions": [dict(zip(names, row)) for row in zip(*(lists[n] for n in names))]}

"""The `gate` setting of the mixture layers: which gate mixes the experts."""

from mtlrec.layers.experts.dselect_k_gate import DSelectKGate
from mtlrec.layers.experts.gate import Gate
from mtlrec.conventions.key_paths import KeyPathError

# type -> (class, options it takes besides num_experts / return_weights / seed)
GATE_TYPES = {"softmax": (Gate, ()), "dselect_k": (DSelectKGate, ("k", "gamma", "entropy_reg"))}


def check_gate(gate, path="gate"):
    """A normalised copy of a gate setting: None (softmax) or `{"type": "softmax"}` or
    `{"type": "dselect_k", "k": 2, "gamma": 1.0, "entropy_reg": 0.1}` (options optional).
    Raises KeyPathError naming `<path>.<key>`."""
    if gate is None:
        return {"type": "softmax"}
    if not isinstance(gate, dict):
        raise KeyPathError(
            path, f"expected a mapping like {{type: dselect_k, k: 2}}, got {gate!r}. Received: gate={gate!r}"
        )
    kind = gate.get("type")
    if kind not in GATE_TYPES:
        raise KeyPathError(f"{path}.type", f"expected one of {', '.join(GATE_TYPES)}, got {kind!r}")
    cls, allowed = GATE_TYPES[kind]
    for key in gate:
        if key != "type" and key not in allowed:
            hint = ", ".join(allowed) if allowed else "none"
            raise KeyPathError(f"{path}.{key}", f"unknown key for gate type {kind!r} (allowed: {hint})")
    options = {k: v for k, v in gate.items() if k != "type"}
    try:
        cls(2 if kind == "dselect_k" else 1, **options)  # the gate's own argument checks
    except ValueError as err:
        key = getattr(err, "argument", None)
        key = key if key in options else None
        raise KeyPathError(f"{path}.{key}" if key else path, str(err)) from None
    return {"type": kind, **options}


def make_gate(gate, num_experts, return_weights, seed, **kwargs):
    """The gate layer of a checked setting (`check_gate`) over `num_experts` experts."""
    cls, _ = GATE_TYPES[gate["type"]]
    options = {k: v for k, v in gate.items() if k != "type"}
    return cls(num_experts, return_weights=return_weights, seed=seed, **options, **kwargs)

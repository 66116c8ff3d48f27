"""The layers that read a model's behavior histories (`sequence_encoders`) and their wiring:
each history's encoder output joins the shared dense vector and, under an FM or dot
interaction, the interaction's fields."""

import keras
from keras import ops

from mtlrec.conventions.seeding import derive_seed, fresh_initializer
from mtlrec.layers.sequence.property_gated_lstm_encoder import PropertyGatedLSTMEncoder
from mtlrec.layers.sequence.self_attention_encoder import SelfAttentionEncoder
from mtlrec.layers.sequence.target_attention import TargetAttention
from mtlrec.models.base._masked_mean import MaskedMean
from mtlrec.models.base.history_specs import ALIGNED_QUERY, STEP_SHAPED


def _encoder(spec, schema, seed):
    """The encoder layer of one history, named `<history>_encoder`."""
    name = f"{spec.name}_encoder"
    o, seed = spec.options, derive_seed(seed, name)
    if spec.encoder == "mean":
        return MaskedMean(name=name)
    if spec.encoder == "target_attention":
        return TargetAttention(units=o["units"], activation=o["activation"], seed=seed, name=name)
    if spec.encoder == "self_attention":
        max_len = next(f.max_len for f in schema.sequence if f.name == spec.features[0])
        return SelfAttentionEncoder(
            num_layers=o["num_layers"], num_heads=o["num_heads"], position_dim=o["position_dim"],
            ffn_units=o["ffn_units"], dropout=o["dropout"], max_len=max_len, seed=seed, name=name,
        )
    return PropertyGatedLSTMEncoder(units=o["units"], attention_units=o["attention_units"], seed=seed, name=name)


def _field_parts(spec, schema):
    """`(part name, width)` of the pieces of a history's output that become interaction
    fields: one per feature for the encoders whose output is laid out like a step, else
    the whole output."""
    dims = {f.name: schema.table_size(f)[1] for f in schema.sequence}
    if spec.encoder in STEP_SHAPED:
        if len(spec.features) == 1:
            return [(spec.name, dims[spec.features[0]])]
        return [(f"{spec.name}_{f}", dims[f]) for f in spec.features]
    if spec.encoder == "self_attention":
        return [(spec.name, sum(dims[f] for f in spec.features) + spec.options["position_dim"])]
    return [(spec.name, spec.options["units"])]


def history_layers(specs, schema, seed, field_dim=None):
    """`(encoders, projections)`: each history's encoder by name, and for the field
    interactions (`field_dim` the fields' width; None: no field interaction) a linear map
    to `field_dim` for each output part of another width, by part name (`<part>_field`)."""
    encoders = {spec.name: _encoder(spec, schema, seed) for spec in specs}
    projections = {}
    if field_dim is not None:
        for spec in specs:
            for part, width in _field_parts(spec, schema):
                if width != field_dim:
                    projections[part] = keras.layers.Dense(
                        field_dim, use_bias=False, name=f"{part}_field",
                        kernel_initializer=fresh_initializer("glorot_uniform", seed, f"{part}_field"),
                    )
    return encoders, projections


def _concat(tensors):
    return tensors[0] if len(tensors) == 1 else ops.concatenate(tensors, axis=-1)


def _aligned_query(spec, schema, emb):
    """The candidate as a step: across from each history feature the embedding of the
    query feature reading its table, zeros where none does."""
    tables = {f.name: f.name if f.shared_with is None else f.shared_with for f in schema.categorical}
    by_table = {tables[q]: q for q in spec.query}
    shared = {f.name: f.shared_with for f in schema.sequence}
    parts = []
    for feature in spec.features:
        query = by_table.get(shared[feature])
        if query is None:
            parts.append(ops.zeros_like(emb["sequences"][feature][:, 0, :]))
        else:
            parts.append(emb["embeddings"][query])
    return _concat(parts)


def _mask(features, emb):
    """A step is real where any of the history's features has an id."""
    mask = emb["masks"][features[0]]
    for feature in features[1:]:
        mask = ops.logical_or(mask, emb["masks"][feature])
    return mask


def encode_histories(specs, encoders, projections, schema, emb, field_dim=None):
    """`(outputs, fields)`: each history's encoder output (B, width), in the order of
    `specs`, and (with `field_dim`) its interaction fields, each (B, 1, field_dim)."""
    outputs, fields = [], []
    for spec in specs:
        encoder = encoders[spec.name]
        mask = _mask(spec.features, emb)
        if spec.encoder == "mean":
            out = encoder(_concat([emb["sequences"][f] for f in spec.features]), mask=mask)
        elif spec.encoder in ALIGNED_QUERY:
            history = _concat([emb["sequences"][f] for f in spec.features])
            out = encoder([history, _aligned_query(spec, schema, emb)], mask=mask)
        else:
            items = _concat([emb["sequences"][f] for f in spec.item_features])
            query = _concat([emb["embeddings"][q] for q in spec.query])
            properties = spec.options["properties"]
            inputs = [items, query] + ([_concat([emb["sequences"][f] for f in properties])] if properties else [])
            out = encoder(inputs, mask=mask)
        outputs.append(out)
        if field_dim is None:
            continue
        parts, start = _field_parts(spec, schema), 0
        for part, width in parts:
            piece = out if len(parts) == 1 else out[:, start : start + width]
            start += width
            if part in projections:
                piece = projections[part](piece)
            fields.append(ops.expand_dims(piece, 1))
    return outputs, fields

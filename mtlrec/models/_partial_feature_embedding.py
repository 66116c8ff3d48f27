"""Private helper layer: a `FeatureEmbedding` that embeds only the features it is given."""

import keras
from keras import ops

from mtlrec.layers.feature_embedding import FeatureEmbedding


@keras.saving.register_keras_serializable(package="mtlrec")
class PartialFeatureEmbedding(FeatureEmbedding):
    """`FeatureEmbedding` (same tables, config and outputs) callable on a subset of the
    schema's features.

    DUPN embeds its user-side and its item-side inputs in separate calls of one layer,
    so that the user representation is a sub-model of the user inputs alone while the
    candidate item and the behavior sequence still read one shared item table.
    `FeatureEmbedding.call` requires every feature of the schema; this call embeds the
    features present in the dict and returns the same keys, restricted to them
    (`dense` = present categorical embeddings then present numerics).
    """

    def call(self, features):
        s = self._schema
        out = {"embeddings": {}, "sequences": {}, "masks": {}}
        for f in s.categorical:
            if f.name in features:
                out["embeddings"][f.name] = self._lookup(f, self._scalar(features, f.name))
        embedded = list(out["embeddings"].values())
        numerics = [f for f in s.numeric if f.name in features]
        if numerics:
            out["numeric"] = ops.stack(
                [self._normalize(f, self._scalar(features, f.name)) for f in numerics], axis=-1
            )
        dense = embedded + ([out["numeric"]] if numerics else [])
        if dense:
            out["dense"] = ops.concatenate(dense, axis=-1) if len(dense) > 1 else dense[0]
        if embedded and len({int(e.shape[-1]) for e in embedded}) == 1:
            out["fields"] = ops.stack(embedded, axis=1)
        for f in s.sequence:
            if f.name not in features:
                continue
            ids = features[f.name]
            mask = ops.not_equal(ids, f.pad)
            emb = self._lookup(f, ids)
            out["sequences"][f.name] = emb * ops.expand_dims(ops.cast(mask, emb.dtype), -1)
            out["masks"][f.name] = mask
        if not (out["embeddings"] or numerics or out["sequences"]):
            raise ValueError(
                f"{self.name}: none of the schema's features is in the input. "
                f"Received keys: {sorted(features)}"
            )
        return out

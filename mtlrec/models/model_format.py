"""The format of a saved mtlrec model (its `.keras` file and the run's checkpoints).

CHANGELOG.md says which mtlrec version writes which format.

Format 2: task heads output logits (a linear last layer, probabilities by a
weightless activation), funnel joints come from log-sigmoids, every weight is seeded
from the model seed by path. Files written before it (unmarked, format 1) do not load
correctly into today's models: Keras and `tf.train.Checkpoint` match weights by layer
position, and the new layers shift it (towers' weights land in other towers), silently.
So they are refused with one message instead.

Format 3: MMoE's experts batch-normalise their pre-activations (new weights
in every expert, which would shift a format-2 MMoE's weights the same way).

Format 4: MMoE's experts batch-normalise only when `expert_batch_norm` is set
(by default when every input is numeric). Every other model is unchanged, so format 3
still loads, and an MMoE whose experts batch-normalise reads it too
(`MultiTaskModel.readable_model_formats`); a format-3 MMoE checkpoint resumed without
`model.expert_batch_norm: true` is refused, since the restore would silently drop the
experts' batch norm.
"""

MODEL_FORMAT = 4

#: formats a model reads unless it says otherwise
READABLE_FORMATS = (3, 4)


def check_model_format(found, where, readable=(MODEL_FORMAT,)):
    """Raise ValueError unless `found` (the format a file records; None when it records
    none) is one of `readable`; `where` names the file."""
    if found is not None and int(found) in readable:
        return
    written = "before model formats were recorded" if found is None else f"in model format {found}"
    formats = " or ".join(str(f) for f in readable)
    raise ValueError(
        f"{where}: written by mtlrec {written}; this model reads model format {formats} "
        "only (format 2, mtlrec 0.2.0: heads output logits, weights seeded by path; format 3, "
        "0.3.0: MMoE experts batch-normalised; format 4, 0.4.0: only with expert_batch_norm), and loading "
        "the old weights would put them into the wrong layers. Retrain into a new run directory "
        "(or build the model anew and train it)"
        + ("; an MMoE of format 3 loads with model.expert_batch_norm: true." if found == 3 else ".")
    )

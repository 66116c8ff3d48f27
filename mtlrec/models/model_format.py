"""The format of a saved mtlrec model (its `.keras` file and the run's checkpoints).

Format 2 (issue 12): task heads output logits (a linear last layer, probabilities by a
weightless activation), funnel joints come from log-sigmoids, every weight is seeded
from the model seed by path. Files written before it (unmarked, format 1) do not load
correctly into today's models: Keras and `tf.train.Checkpoint` match weights by layer
position, and the new layers shift it (towers' weights land in other towers), silently.
So they are refused with one message instead.

Format 3 (issue 12): MMoE's experts batch-normalise their pre-activations (new weights
in every expert, which would shift a format-2 MMoE's weights the same way).
"""

MODEL_FORMAT = 3


def check_model_format(found, where):
    """Raise ValueError unless `found` (the format a file records; None when it records
    none) is `MODEL_FORMAT`; `where` names the file."""
    if found is not None and int(found) == MODEL_FORMAT:
        return
    written = "before model formats were recorded" if found is None else f"in model format {found}"
    raise ValueError(
        f"{where}: written by mtlrec {written}; this mtlrec reads model format {MODEL_FORMAT} "
        "only (issue 12: heads output logits, weights seeded by path, MMoE experts "
        "batch-normalised), and loading the old "
        "weights would put them into the wrong layers. Retrain into a new run directory "
        "(or build the model anew and train it)."
    )

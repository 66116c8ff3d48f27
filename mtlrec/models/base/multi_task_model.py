"""Base class of the mtlrec models: schema inputs, shared embedding, interaction block,
task heads and the multi-task loss."""

import copy
import json

import keras
import numpy as np

from mtlrec.conventions.key_paths import ArgumentError
from mtlrec.layers.interaction.cross_network import CrossNetwork
from mtlrec.layers.interaction.dot_interaction import DotInteraction
from mtlrec.layers.embedding.feature_embedding import FeatureEmbedding
from mtlrec.layers.interaction.fm_interaction import FMInteraction
from mtlrec.layers.mlp import MLP
from mtlrec.losses import make_weighting
from mtlrec.losses.objective import objective_terms
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base._funnel_joint import FunnelJoint
from mtlrec.models.base._masked_mean import MaskedMean
from mtlrec.models.base.compile_arguments import refuse_losses, saved_compile_arguments
from mtlrec.models.base.fit_lookups import check_fit, lookup_layers, observe, open_day
from mtlrec.models.base.history_encoders import encode_histories, history_layers
from mtlrec.models.base.history_specs import history_specs, specs_as_config
from mtlrec.models.base.output_metrics import OutputMetrics
from mtlrec.models.model_format import MODEL_FORMAT, READABLE_FORMATS, check_model_format
from mtlrec.models.base.variable_groups import VariableGroups
from mtlrec.schema import Schema
from mtlrec.conventions.seeding import derive_seed
from mtlrec.tasks import funnel_chain, logit_name, validate_tasks

INTERACTIONS = ("fm", "dot", "dcn")
FIELD_INTERACTIONS = ("fm", "dot")  # on the stacked field embeddings


def all_inputs_numeric(schema):
    """True when `schema` (a `Schema`) has numeric features only: no embedding input."""
    return not schema.categorical and not schema.sequence


def schema_inputs(schema):
    """One `keras.Input` per feature of `schema` (a dict or `Schema`), keyed by name.

    categorical: shape `()`, dtype `string` or `int64`; numeric: shape `()`, float32;
    sequence: shape `(max_len,)`, `string` or `int64`.
    """
    parsed = Schema.from_dict(schema)
    inputs = {}
    for f in parsed.categorical:
        inputs[f.name] = keras.Input(shape=(), dtype=f.dtype, name=f.name)
    for f in parsed.numeric:
        inputs[f.name] = keras.Input(shape=(), dtype="float32", name=f.name)
    for f in parsed.sequence:
        inputs[f.name] = keras.Input(shape=(f.max_len,), dtype=f.dtype, name=f.name)
    return inputs


def check_interaction(interaction, schema):
    """Validate an `interaction` config; returns a normalised copy (or None)."""
    if interaction is None:
        return None
    if not isinstance(interaction, dict) or interaction.get("type") not in INTERACTIONS:
        raise ArgumentError(
            "interaction",
            "Expected interaction to be None, {'type': 'fm'}, {'type': 'dot'} or "
            "{'type': 'dcn', 'num_layers': n, 'low_rank': r}. "
            f"Received: interaction={interaction!r}"
        )
    kind = interaction["type"]
    allowed = ("type",) if kind in FIELD_INTERACTIONS else ("type", "num_layers", "low_rank")
    for key in interaction:
        if key not in allowed:
            raise ArgumentError(
                "interaction",
                f"interaction.{key}: unknown key for type {kind!r} "
                f"(allowed: {', '.join(allowed)}). Received: interaction={interaction!r}"
            )
    out = {"type": kind}
    if kind == "dcn":
        out["num_layers"] = checks.check_positive_int(
            "interaction.num_layers", interaction.get("num_layers", 2)
        )
        low_rank = interaction.get("low_rank")
        out["low_rank"] = (
            None if low_rank is None else checks.check_positive_int("interaction.low_rank", low_rank)
        )
    else:
        parsed = Schema.from_dict(schema)
        dims = {f.name: parsed.table_size(f)[1] for f in parsed.categorical}
        dims.update({f.name: parsed.numeric_dim(f) for f in parsed.numeric if f.embedded})
        if len(dims) < 2 or len(set(dims.values())) != 1:
            raise ArgumentError(
                "interaction",
                f"interaction {{'type': {kind!r}}} needs at least two categorical or embedded "
                f"numeric features with the same embedding dim. Received embedding dims: {dims}"
            )
    return out


def _plain(value):
    """Deep copy as plain JSON types (tracked dicts/lists, tuples -> dict/list)."""
    return json.loads(json.dumps(value))


@keras.saving.register_keras_serializable(package="mtlrec")
class MultiTaskModel(keras.Model):
    """Base of the functional multi-task models (keras-hub "functional subclass" style).

    A subclass's `__init__` has three sections: *layers* (`self._setup(...)` then its own
    backbone layers), *functional wiring* (`schema_inputs` -> `self._embed` -> backbone ->
    `self._heads`, then `super().__init__(inputs=..., outputs=...)`), and *config* (store
    the normalised hyperparameters that `get_config` returns).

    Shared pieces:
    - `FeatureEmbedding` over the schema; sequence features are mean-pooled over their
      unpadded steps and appended to the dense vector, unless `sequence_encoders` names the
      history they belong to: its encoder's output (`history_encoders`) is appended
      instead, and is a field of an FM or dot interaction too.
    - `interaction`: None, `{"type": "fm"}` (`FMInteraction` bi-interaction vector of the
      fields: the categorical and embedded numeric features' embeddings, concatenated to
      the dense vector), `{"type": "dot"}` (`DotInteraction`: the inner product of every
      pair of fields, concatenated to the dense vector) or `{"type": "dcn",
      "num_layers": n, "low_rank": r}` (`CrossNetwork` on the dense vector, which holds
      the embedded numerics too).
    - Task heads: an `MLP` tower per task ending in a linear Dense(1) (binary, logit
      `(B,)`), Dense(num_classes) (multiclass, logits `(B, C)`) or Dense(1) (regression,
      `(B,)`). The outputs dict holds each task's probability under its name (sigmoid /
      softmax; the raw value for regression) and, for binary and multiclass tasks, its
      logits under `<name>_logit`. A task with a `parent` outputs its conditional
      probability under its name and the product along the parent chain under
      `task.joint_name`, with the joint's log-odds under `<joint>_logit`, computed from
      log-sigmoids (`FunnelJoint`). The losses read the `_logit` entries; serving,
      `predict` and evaluation publish only `probability_names()`.
    - Seeds: every weight derives from `seed` by `mtlrec.conventions.seeding.derive_seed` along its
      layer path (embedding tables included); the same seed gives the same weights.
    - `compute_loss`: the terms of `mtlrec.losses.objective.objective_terms` (task losses,
      the model's `auxiliary_losses`, `self.losses`) combined by the `loss_weighting`
      strategy (`make_weighting`; fixed task weights by default), so
      `model.compile(optimizer="adam"); model.fit(dataset)` trains on `(features, labels)`
      batches. GradNorm, PCGrad and MetaBalance need per-task gradients: the trainer's
      step gives them, over the groups of `variable_groups()`.
    - Keras' workflow: `compile` refuses losses (`compile_arguments`) and measures
      `metrics` per output (`OutputMetrics`); a `.keras` file comes back compiled as
      saved; `train_step` counts and admits ids as the trainer's step does, and
      `start_day` opens a day (`fit_lookups`).
    """

    def __init__(self, *args, **kwargs):
        if not hasattr(self, "task_specs"):
            raise TypeError(
                "MultiTaskModel is the base of the mtlrec models: a subclass calls "
                "self._setup(schema, tasks, ...) and wires its graph before "
                "super().__init__(inputs=..., outputs=...)."
            )
        super().__init__(*args, **kwargs)
        # Objects outside the functional graph are attached after the functional init.
        self.weighting = make_weighting(self.loss_weighting, self.task_specs)
        if self.weighting.requires_custom_step:
            raise ValueError(
                f"loss_weighting type {self.loss_weighting['type']!r} needs per-task "
                "gradients, which model.fit cannot give; train with mtlrec.training or "
                "pass loss_weighting=None (fixed) or {'type': 'uncertainty'}. "
                f"Received: loss_weighting={self.loss_weighting!r}"
            )
        self.task_loss_trackers = [
            keras.metrics.Mean(name=f"{t.name}_loss") for t in self.task_specs
        ]

    # === Layers (helpers called by subclasses before the functional init) ===

    def _setup(self, schema, tasks, interaction=None, loss_weighting=None, seed=None, sequence_encoders=None):
        """Validate the shared arguments and create the embedding, history encoder and
        interaction layers."""
        if hasattr(schema, "to_dict"):
            schema = schema.to_dict()
        if not isinstance(schema, dict):
            raise ValueError(
                f"Expected schema to be a dict (the schema section of a config). "
                f"Received: schema={schema!r}"
            )
        if not isinstance(tasks, (list, tuple)):
            raise ValueError(f"Expected tasks to be a list of task dicts. Received: tasks={tasks!r}")
        parsed = Schema.from_dict(schema)
        specs = validate_tasks(tasks, parsed)
        if loss_weighting is not None and not isinstance(loss_weighting, dict):
            raise ValueError(
                "Expected loss_weighting to be None or a dict like {'type': 'uncertainty'}. "
                f"Received: loss_weighting={loss_weighting!r}"
            )
        make_weighting(loss_weighting, specs)  # fail early on a bad config
        self.schema = _plain(schema)
        self.tasks = [t.to_dict() for t in specs]
        self.task_specs = specs
        self.interaction = check_interaction(interaction, schema)
        self.loss_weighting = None if loss_weighting is None else _plain(loss_weighting)
        self.seed = checks.check_seed(seed)
        self._parsed_schema = parsed
        # float32 whatever the global policy (training.mixed_precision): a 16-bit policy
        # would cast whole tables where the layer reads rows
        self.feature_embedding = FeatureEmbedding(
            self.schema, seed=derive_seed(self.seed, "feature_embedding"), name="feature_embedding",
            dtype="float32",
        )
        self.interaction_layer = None
        if self.interaction is not None and self.interaction["type"] == "fm":
            self.interaction_layer = FMInteraction(name="fm_interaction")
        elif self.interaction is not None and self.interaction["type"] == "dot":
            self.interaction_layer = DotInteraction(name="dot_interaction")
        elif self.interaction is not None:
            self.interaction_layer = CrossNetwork(
                num_layers=self.interaction["num_layers"],
                low_rank=self.interaction["low_rank"],
                seed=derive_seed(self.seed, "cross_network"),
                name="cross_network",
            )
        self._setup_histories(sequence_encoders)
        self.towers = {}

    def _setup_histories(self, sequence_encoders):
        """The encoders of the histories `sequence_encoders` names (`history_specs`) and the
        linear maps of their outputs to the interaction's field width."""
        self._history_specs = history_specs(sequence_encoders, self._parsed_schema)
        self.sequence_encoders = specs_as_config(self._history_specs) if sequence_encoders is not None else None
        self._field_dim = None
        if self.interaction is not None and self.interaction["type"] in FIELD_INTERACTIONS:
            self._field_dim = self._parsed_schema.table_size(self._parsed_schema.categorical[0])[1]
        self.history_encoders, self.history_fields = history_layers(
            self._history_specs, self._parsed_schema, self.seed, self._field_dim
        )

    def _task_tower(self, task, units, dropout):
        """A tower ending in a linear output layer: the task's logits (or its value)."""
        width = task.num_classes if task.kind == "multiclass" else 1
        return MLP(
            list(units) + [width],
            dropout=dropout,
            output_activation="linear",
            seed=derive_seed(self.seed, f"{task.name}_tower"),
            name=f"{task.name}_tower",
        )

    # === Functional wiring helpers ===

    def _embed(self, inputs):
        """features -> the shared dense vector (B, D) (with pooled sequences and the
        interaction block applied)."""
        emb = self.feature_embedding(inputs)
        parts = [emb["dense"]] if "dense" in emb else []
        encoded = {f for spec in self._history_specs for f in spec.features}
        for name in emb["sequences"]:
            if name in encoded:
                continue
            pooled = MaskedMean(name=f"{name}_mean")(emb["sequences"][name], mask=emb["masks"][name])
            parts.append(pooled)
        histories, history_fields = encode_histories(
            self._history_specs, self.history_encoders, self.history_fields, self._parsed_schema, emb, self._field_dim
        )
        parts += histories
        if self.interaction is not None and self.interaction["type"] in FIELD_INTERACTIONS:
            fields = emb["fields"]
            if history_fields:
                fields = keras.layers.Concatenate(axis=1, name="interaction_fields")([fields] + history_fields)
            parts.append(self.interaction_layer(fields))
        x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="shared_input")(parts)
        if self.interaction is not None and self.interaction["type"] == "dcn":
            x = self.interaction_layer(x)
        return x

    def _heads(self, task_inputs, tower_units, dropout):
        """task name -> (B, d) tensors -> output dict (with the funnel joint outputs)."""
        raw = {}
        for task in self.task_specs:
            tower = self._task_tower(task, tower_units, dropout)
            self.towers[task.name] = tower
            raw[task.name] = self._squeeze(task, tower(task_inputs[task.name]))
        return self._outputs(raw)

    @staticmethod
    def _squeeze(task, y):
        """A tower's `(B, 1)` output as `(B,)` (multiclass logits stay `(B, C)`)."""
        if task.kind == "multiclass":
            return y
        # float32 under training.mixed_precision too: logits are outputs and loss inputs
        return keras.layers.Reshape((), dtype="float32", name=f"{task.name}_output")(y)

    def _outputs(self, raw):
        """task name -> its head's logits (value for regression) -> the outputs dict:
        probabilities under the task and joint names, logits under `<name>_logit`."""
        outputs = {}
        for task in self.task_specs:
            outputs[task.name] = self._probability(task, raw[task.name])
            if task.kind != "regression":
                outputs[logit_name(task.name)] = raw[task.name]
        for task in self.task_specs:
            if task.parent is not None:
                chain = funnel_chain(task, self.task_specs)
                prob, logit = FunnelJoint(dtype="float32", name=task.joint_name)([raw[t.name] for t in chain])
                outputs[task.joint_name] = prob
                outputs[logit_name(task.joint_name)] = logit
        return outputs

    @staticmethod
    def _probability(task, z):
        """sigmoid (binary) or softmax (multiclass) of a head's logits; a regression
        head's value as it is."""
        if task.kind == "regression":
            return z
        activation = "sigmoid" if task.kind == "binary" else "softmax"
        return keras.layers.Activation(
            activation, dtype="float32", name=f"{task.name}_probability"
        )(z)

    def probability_names(self):
        """The user-facing outputs, in order: each task's probability (its value for
        regression) and each funnel joint; not the `<name>_logit` entries."""
        names = [t.name for t in self.task_specs]
        return names + [t.joint_name for t in self.task_specs if t.parent is not None]

    # === Training ===

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None, **kwargs):
        """`keras.Model.compile`, then the optimizer's slots are created eagerly.

        `loss`, `loss_weights` and `weighted_metrics` are refused (`ValueError`): the
        losses are the tasks' own. `metrics`: a dict output name -> metrics, or a list for
        every output, measured on each task's evaluation space and logged as
        `<output>_<metric>` (`OutputMetrics`).

        Without a distribution strategy Keras defers building the optimizer to the first
        traced train step, where creating its variables costs about as much as tracing the
        whole model again (Adam: ~3x slower first `fit` here). The model's variables all
        exist at construction, so build it now.
        """
        refuse_losses(loss, loss_weights, weighted_metrics)
        taken = ["loss"] + [tracker.name for tracker in self.task_loss_trackers]
        output_metrics = None
        if metrics is not None:
            output_metrics = OutputMetrics(metrics, self.task_specs, self.probability_names(), taken)
        super().compile(optimizer=optimizer, **kwargs)
        self._output_metrics = output_metrics  # a plain object: Keras tracks none of it
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def get_compile_config(self):
        config = super().get_compile_config()
        spec = getattr(self, "_output_metrics", None)
        if config is not None and spec is not None:
            config["metrics"] = keras.saving.serialize_keras_object(spec.spec)
        return config

    def compile_from_config(self, config):
        """A `.keras` file's model comes back compiled as it was saved (optimizer state
        included), so `fit` continues training."""
        self.compile(**saved_compile_arguments(config))

    @property
    def metrics(self):
        found = super().metrics
        own = getattr(self, "_output_metrics", None)
        return found + own.metrics if own is not None and self.compiled else found

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        own = getattr(self, "_output_metrics", None)
        if own is not None and isinstance(y, dict):
            own.update_state(y, y_pred)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def train_step(self, data):
        """Keras' step; the identity/dynamic lookups first count the batch's ids and admit
        those due, as the trainer's step does (`fit_lookups`)."""
        observe(self, keras.utils.unpack_x_y_sample_weight(data)[0])
        return super().train_step(data)

    def fit(self, *args, **kwargs):
        check_fit(self)
        return super().fit(*args, **kwargs)

    def start_day(self, day, seed=None) -> dict:
        """Open `day` (`"YYYY-MM-DD"` or a date) in the model's identity/dynamic lookups
        before fitting that day's data, as `mtlrec train` does before each day: ids not
        seen for `ttl_days` leave, waiting ids evict the least counted when the table is
        full, freed rows get fresh seeded values (`seed`: when the model has none) and
        their optimizer slots are reset. Returns `{table: rows freed}`."""
        return open_day(self, day, seed)

    def lookup_report(self) -> dict:
        """Table name -> the day's figures of its identity/dynamic lookup (rows in use,
        admitted, OOV lookups, ...; `FeatureEmbedding.lookup_report`)."""
        report = {}
        for layer in lookup_layers(self):
            report.update(layer.lookup_report())
        return report

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """sum_k w_k L_k (per the loss weighting) + `self.losses`.

        `y` is the labels dict of a `(features, labels)` batch. Rows are selected per task
        by its `sample_space` and weighed by its `sample_weight` column (an entry of `y`),
        not by Keras' `sample_weight` argument (which is refused).
        """
        if sample_weight is not None:
            raise ValueError(
                "MultiTaskModel.compute_loss does not take sample_weight; restrict a task's "
                "rows with its sample_space and weigh them with its sample_weight column (a "
                "column of the labels dict). Received: sample_weight given"
            )
        if y is None:
            return None
        if not isinstance(y, dict):
            raise ValueError(
                "Expected y to be a dict label name -> (B,) tensor (the labels of a "
                f"(features, labels) batch). Received: y of type {type(y).__name__}"
            )
        terms = objective_terms(self, y, y_pred)
        for tracker, task in zip(self.task_loss_trackers, self.task_specs):
            tracker.update_state(terms[task.name])
        return self.weighting.combine(terms)

    def auxiliary_losses(self, labels, outputs):
        """Loss terms beside the tasks' own (AITM's calibrator, ESCM²'s counterfactual
        risk): name -> scalar, added to the objective with weight 1 by every loss
        weighting, here and in the trainer's step. None by default."""
        return {}

    # === Variable groups (the trainer's optimizers and loss weighting read them) ===

    def variable_groups(self) -> VariableGroups:
        """The trainable variables by role: the embedding tables, the shared variables,
        each task's own (`_task_layers`) and GradNorm's W (`_balance_layer_variables`);
        the loss weighting's variables are in no group."""
        return VariableGroups.of(
            embedding_tables=self.feature_embedding.trainable_variables,
            task_layers=self._task_layers(),
            trainable=self.trainable_variables,
            excluded=self.weighting.trainable_variables,
            balance_layer=self._balance_layer_variables(),
        )

    def _task_layers(self):
        """(task name, layer) of every layer that serves one task, in the fixed order of
        `VariableGroups.task_order`: the towers; subclasses append their other layers."""
        return list(self.towers.items())

    def _balance_layer_variables(self):
        """GradNorm's W: the last layer all tasks share (here the interaction block, else
        the embedding tables; backbones override it)."""
        layer = self.interaction_layer if self.interaction_layer is not None else self.feature_embedding
        return list(layer.trainable_variables)

    # === Saving ===

    _FORMAT_KEY = "model_format"

    def readable_model_formats(self):
        """The model formats whose files and checkpoints load into this model."""
        return READABLE_FORMATS

    def save_own_variables(self, store):
        """The model's own variables plus its `MODEL_FORMAT`, so that a later mtlrec can
        tell a `.keras` file of another format and refuse it."""
        super().save_own_variables(store)
        store[self._FORMAT_KEY] = np.array(MODEL_FORMAT, dtype="int32")

    def load_own_variables(self, store):
        keys = list(store.keys())
        found = int(np.asarray(store[self._FORMAT_KEY])) if self._FORMAT_KEY in keys else None
        check_model_format(found, f"the .keras file of model {self.name!r}", self.readable_model_formats())
        super().load_own_variables({k: store[k] for k in keys if k != self._FORMAT_KEY})

    # === Config ===

    def get_config(self):
        config = {
            "name": self.name,
            "trainable": self.trainable,
            "schema": copy.deepcopy(_plain(self.schema)),
            "tasks": _plain(self.tasks),
            "interaction": None if self.interaction is None else _plain(self.interaction),
            "loss_weighting": None if self.loss_weighting is None else _plain(self.loss_weighting),
            "seed": self.seed,
        }
        if self.sequence_encoders is not None:  # only the models that take the argument set it
            config["sequence_encoders"] = _plain(self.sequence_encoders)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

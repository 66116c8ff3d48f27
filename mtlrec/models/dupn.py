"""DUPN: Deep User Perception Network."""

import keras

from mtlrec.layers.sequence.attention_pooling import AttentionPooling
from mtlrec.layers.mlp import MLP
from mtlrec.layers.sequence.property_gated_lstm import PropertyGatedLSTM
from mtlrec.conventions import arg_checks as checks
from mtlrec.models.base.multi_task_model import FIELD_INTERACTIONS, MultiTaskModel, _plain, schema_inputs
from mtlrec.conventions.seeding import derive_seed, fresh_initializer

#: role -> (constructor argument, key of the older `features` dict)
FEATURE_ROLES = {
    "user": ("user_features", "user"),
    "item": ("item_features", "item"),
    "behavior": ("behavior_features", "behavior"),
    "properties": ("property_features", "properties"),
    "rank": ("rank_features", "rank"),
}


@keras.saving.register_keras_serializable(package="mtlrec")
class DUPN(MultiTaskModel):
    """Deep User Perception Network (Ni et al., KDD 2018): a user representation shared
    by several tasks and transferable to new ones.

    Behavior t of the user's history has item features e_t (e.g. `hist_item_id`, which
    shares the `item_id` table, and `hist_category`) and properties p_t (behavior type,
    time bucket, scene). A `PropertyGatedLSTM` runs over the sequence (its gates read
    p_t), `AttentionPooling` pools the hidden states with
    a_t = softmax_t(v^T tanh(W [h_t; q; p_t] + b)), q the user-side features (user
    profile plus query / scene context), and

        r = relu(W_r [sum_t a_t h_t; q] + b_r)          (representation_dim)

    is the user representation. Heads:
    - item tasks (default: `ctr`, the rank task and funnel steps): a tower over
      [r; candidate item vector], the candidate's `item_id` embedding read from the same
      table as the behavior sequence; the `interaction` block applies here
      (`dcn`: cross layers on [r; item]; `fm`: FM over [W_k r, item field embeddings]).
    - the rank task (learning to rank, default: a task named `rank`): per-user weights
      w(r) = tower(r) over the item ranking features f, logit = a <w(r), f> + b,
      score = sigmoid(logit).
      Its relevance label is the task's label (by default give it `click`); the BCE on
      that label is the paper's pointwise logistic ranking loss.
    - every other task (e.g. purchasing power, 7 classes; follow, binary): a tower on r.

    `user_model()` is the representation as a model of the user-side inputs only, to
    train a new head on it frozen (`user_model().trainable = False`) or fine-tuned;
    `item_scorer()` scores candidates given a representation.

    Feature roles are arguments; each left at None is inferred from the schema and the
    task names as written under its argument (the rule of mtlrec before they were
    arguments, so configs that name none of them build the same model).

    Args:
        schema: the schema dict.
        tasks: list of task dicts.
        user_features: categorical / numeric user-side features: the attention query q
            (profile, query, scene context). Default: every categorical and numeric
            feature that is not item side (in `item_features` or `rank_features`).
        item_features: categorical / numeric features of the candidate item. Default: the
            categorical features whose table the behavior sequences share (`item_id` for
            `hist_item_id`), the features named `item_*`, and every numeric feature.
        behavior_features: sequences of item features of the behaviors. Default: the
            sequences that read a categorical feature's table (`shared_with`).
        property_features: property sequences p_t (behavior type, time, scene). Default:
            the sequences that are not behavior features.
        rank_features: numeric ranking features f of the rank task. Default: the numeric
            features among `item_features`.
        features: the same roles as one dict `{user, item, behavior, properties, rank}`
            (how configs and `.keras` files written before the arguments above name
            them); a role may be given one way only.
        item_tasks: task names whose head sees the candidate item. Default: the task
            named `ctr`, the rank task and every funnel step (task with a `parent`).
        rank_task: name of the learning-to-rank task. Default: the task named `rank` when
            there is one and there are ranking features (None: no rank head).
        lstm_units: size of the property-gated LSTM.
        attention_units: hidden size of the attention.
        representation_dim: size of the user representation r.
        tower_units: hidden widths of each task tower.
        dropout: dropout rate of the towers.
        interaction: None, `{"type": "fm"}`, `{"type": "dot"}` or `{"type": "dcn", ...}` (item heads).
        loss_weighting: None (fixed task weights) or `{"type": "uncertainty"}`.
        seed: optional int for the initializers.
    """

    def __init__(
        self,
        schema,
        tasks,
        user_features=None,
        item_features=None,
        behavior_features=None,
        property_features=None,
        rank_features=None,
        features=None,
        item_tasks=None,
        rank_task=None,
        lstm_units=32,
        attention_units=32,
        representation_dim=128,
        tower_units=(64,),
        dropout=0.0,
        interaction=None,
        loss_weighting=None,
        seed=None,
        **kwargs,
    ):
        # === Layers ===
        self._setup(schema, tasks, interaction, loss_weighting, seed)
        given = self._given_roles(
            features,
            dict(user=user_features, item=item_features, behavior=behavior_features,
                 properties=property_features, rank=rank_features),
        )
        roles = self._feature_roles(given)
        task_names = [t.name for t in self.task_specs]
        by_name = {t.name: t for t in self.task_specs}
        rank_task_arg = rank_task
        if rank_task is None and "rank" in by_name and roles["rank"]:
            rank_task = "rank"
        if rank_task is not None:
            if rank_task not in by_name or by_name[rank_task].kind != "binary":
                raise ValueError(
                    f"Expected rank_task to name a binary task ({', '.join(task_names)}). "
                    f"Received: rank_task={rank_task!r}"
                )
            if not roles["rank"]:
                raise ValueError(
                    f"The rank task needs numeric ranking features ({given['rank'][0]}). "
                    f"Received: rank_task={rank_task!r}, {given['rank'][0]}={roles['rank']!r}"
                )
        if item_tasks is None:
            item_list = [
                t.name
                for t in self.task_specs
                if t.name in ("ctr", rank_task) or t.parent is not None
            ]
        else:
            item_list = checks.check_names("item_tasks", item_tasks, by_name)
        if rank_task is not None and rank_task not in item_list:
            item_list.append(rank_task)
        if item_list and not roles["item"]:
            raise ValueError(
                f"Item tasks {item_list} need candidate-item features ({given['item'][0]}). "
                f"Received: {given['item'][0]}={roles['item']!r}"
            )
        lstm_units = checks.check_positive_int("lstm_units", lstm_units)
        attention_units = checks.check_positive_int("attention_units", attention_units)
        representation_dim = checks.check_positive_int("representation_dim", representation_dim)
        tower_units = checks.check_units("tower_units", tower_units, allow_empty=True, int_as_list=True)
        dropout = checks.check_rate("dropout", dropout)
        self._roles = roles
        self._item_task_names = [n for n in task_names if n in item_list]
        self._rank_task = rank_task

        self.lstm = PropertyGatedLSTM(
            lstm_units, return_sequences=True, seed=derive_seed(self.seed, "property_gated_lstm"),
            name="property_gated_lstm",
        )
        self.attention = AttentionPooling(
            attention_units, seed=derive_seed(self.seed, "attention_pooling"),
            name="attention_pooling",
        )
        self.representation = keras.layers.Dense(
            representation_dim, activation="relu",
            kernel_initializer=fresh_initializer("glorot_uniform", self.seed, "representation"),
            name="representation",
        )
        self.fm_projection = None
        if self.interaction is not None and self.interaction["type"] in FIELD_INTERACTIONS:
            dims = {self._parsed_schema.table_size(f)[1] for f in self._parsed_schema.categorical}
            self.fm_projection = keras.layers.Dense(
                dims.pop(),
                kernel_initializer=fresh_initializer("glorot_uniform", self.seed, "fm_user_projection"),
                name="fm_user_projection",
            )
        self.rank_score = None
        for task in self.task_specs:
            if task.name == rank_task:
                self.towers[task.name] = MLP(
                    tower_units + [len(roles["rank"])],
                    dropout=dropout,
                    output_activation="linear",
                    seed=derive_seed(self.seed, f"{task.name}_tower"),
                    name=f"{task.name}_tower",
                )
                self.rank_score = keras.layers.Dense(
                    1,
                    kernel_initializer=fresh_initializer(
                        "glorot_uniform", self.seed, f"{task.name}_score"
                    ),
                    name=f"{task.name}_score",
                )
            else:
                self.towers[task.name] = self._task_tower(task, tower_units, dropout)

        # === Functional wiring ===
        inputs = schema_inputs(self.schema)
        user_inputs = {n: inputs[n] for n in roles["user"]}
        item_inputs = {n: inputs[n] for n in roles["item_side"]}
        rep = self._user_representation(user_inputs)
        heads = self._item_logits(rep, item_inputs)
        for task in self.task_specs:
            if task.name not in heads:
                heads[task.name] = self._squeeze(task, self.towers[task.name](rep))
        outputs = self._outputs(heads)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        # === Config ===
        for role, (argument, _) in FEATURE_ROLES.items():
            setattr(self, argument, None if given[role][1] is None else list(given[role][1]))
        self.item_tasks = None if item_tasks is None else list(item_tasks)
        self.rank_task = rank_task_arg
        self.lstm_units = lstm_units
        self.attention_units = attention_units
        self.representation_dim = representation_dim
        self.tower_units = tower_units
        self.dropout = dropout
        # Symbolic tensors for user_model(); not state, so kept out of Keras tracking.
        object.__setattr__(self, "_user_graph", (user_inputs, rep))

    # --- feature roles -------------------------------------------------------------

    @staticmethod
    def _given_roles(features, arguments):
        """role -> (name for messages, names given or None) from the role arguments and
        the older `features` dict."""
        if features is None:
            features = {}
        if not isinstance(features, dict):
            raise ValueError(
                f"Expected features to be None or a dict with keys "
                f"{tuple(k for _, k in FEATURE_ROLES.values())}. Received: features={features!r}"
            )
        keys = {key: role for role, (_, key) in FEATURE_ROLES.items()}
        for key in features:
            if key not in keys:
                raise ValueError(
                    f"features.{key}: unknown key (allowed: {', '.join(keys)}). "
                    f"Received: features={features!r}"
                )
        given = {}
        for role, (argument, key) in FEATURE_ROLES.items():
            if key in features and arguments[role] is not None:
                raise ValueError(
                    f"Expected the {role} features once, as {argument} or as features.{key}. "
                    f"Received: {argument}={arguments[role]!r}, features={features!r}"
                )
            if key in features:
                given[role] = (f"features.{key}", features[key])
            else:
                given[role] = (argument, arguments[role])
        return given

    def _feature_roles(self, given):
        parsed = self._parsed_schema
        categorical = [f.name for f in parsed.categorical]
        numeric = [f.name for f in parsed.numeric]
        sequences = {f.name: f for f in parsed.sequence}

        def role(name, default, known, allow_empty=True):
            where, value = given[name]
            value = default() if value is None else value
            return checks.check_names(where, value, known, allow_empty=allow_empty)

        behavior = role(
            "behavior", lambda: [n for n, f in sequences.items() if f.shared_with is not None],
            sequences, allow_empty=False,
        )
        properties = role(
            "properties", lambda: [n for n in sequences if n not in behavior], sequences,
            allow_empty=False,
        )
        overlap = sorted(set(behavior) & set(properties))
        if overlap:
            raise ValueError(
                f"{given['properties'][0]}: {overlap} are also behavior sequences. "
                f"Received: {given['behavior'][0]}={behavior!r}, {given['properties'][0]}={properties!r}"
            )
        lengths = {n: sequences[n].max_len for n in behavior + properties}
        if len(set(lengths.values())) != 1:
            raise ValueError(
                f"{given['behavior'][0]} and {given['properties'][0]} must have one max_len. "
                f"Received max_len: {lengths}"
            )
        owners = [sequences[n].shared_with for n in behavior if sequences[n].shared_with]
        item = role(
            "item",
            lambda: [n for n in categorical + numeric
                     if n in owners or n.startswith("item_") or n in numeric],
            set(categorical + numeric),
        )
        scalar = [f.name for f in parsed.numeric if not f.embedded]  # a rank feature is a value
        rank = role("rank", lambda: [n for n in item if n in scalar], set(scalar))
        item_side = [n for n in categorical + numeric if n in item or n in rank]
        user = role("user", lambda: [n for n in categorical + numeric if n not in item_side],
                    set(categorical + numeric))
        both = sorted(set(user) & set(item_side))
        if both:
            raise ValueError(
                f"{given['user'][0]}: {both} are also item-side features. "
                f"Received: {given['user'][0]}={user!r}"
            )
        if not user:
            raise ValueError(
                "DUPN needs user-side features (profile or query / scene context) for the "
                f"attention query; all categorical and numeric features are item side. "
                f"Received: {given['item'][0]}={item!r}, {given['rank'][0]}={rank!r}"
            )
        user = [n for n in categorical + numeric if n in user]
        return {
            "user": user + behavior + properties,
            "query": user,
            "item": item,
            "item_side": item_side,
            "behavior": behavior,
            "properties": properties,
            "rank": rank,
        }

    # --- wiring helpers ----------------------------------------------------------------

    @staticmethod
    def _concat(tensors, axis=-1):
        return tensors[0] if len(tensors) == 1 else keras.layers.Concatenate(axis=axis)(tensors)

    def _user_representation(self, user_inputs):
        emb = self.feature_embedding(user_inputs, subset=list(user_inputs))
        query = emb["dense"]
        items = self._concat([emb["sequences"][n] for n in self._roles["behavior"]])
        props = self._concat([emb["sequences"][n] for n in self._roles["properties"]])
        mask = emb["masks"][self._roles["behavior"][0]]
        hidden = self.lstm([items, props], mask=mask)
        pooled = self.attention([hidden, query, props], mask=mask)
        return self.representation(self._concat([pooled, query]))

    def _item_logits(self, rep, item_inputs):
        """Logits of the item tasks (dict task name -> tensor) for a representation and
        candidate-item inputs."""
        outputs = {}
        if not self._item_task_names:
            return outputs
        item = self._roles["item"]
        emb = self.feature_embedding({n: item_inputs[n] for n in item}, subset=item)
        head_input = self._concat([rep, emb["dense"]])
        if self.fm_projection is not None:
            user_field = keras.layers.Reshape((1, -1))(self.fm_projection(rep))
            item_fields = [
                keras.layers.Reshape((1, -1))(emb["embeddings"][n])
                for n in self._roles["item"]
                if n in emb["embeddings"]
            ]
            fields = self._concat([user_field] + item_fields, axis=1)
            head_input = self._concat([head_input, self.interaction_layer(fields)])
        elif self.interaction_layer is not None:
            head_input = self.interaction_layer(head_input)
        by_name = {t.name: t for t in self.task_specs}
        for name in self._item_task_names:
            task = by_name[name]
            if name == self._rank_task:
                rank = self._roles["rank"]
                ranking = self.feature_embedding(
                    {n: item_inputs[n] for n in rank}, subset=rank
                )["numeric"]
                weights = self.towers[name](rep)  # per-user weights of the ranking features
                score = keras.layers.Dot(axes=1)([weights, ranking])
                outputs[name] = self._squeeze(task, self.rank_score(score))
            else:
                outputs[name] = self._squeeze(task, self.towers[name](head_input))
        return outputs

    # --- sub-models --------------------------------------------------------------------

    def user_model(self):
        """The user representation `(B, representation_dim)` as a model of the user-side
        inputs only (profile / context features and the behavior sequences). Its layers
        are this model's: set `.trainable = False` on it to freeze them for transfer."""
        user_inputs, rep = self._user_graph
        return keras.Model(dict(user_inputs), rep, name=f"{self.name}_user")

    def item_scorer(self):
        """A model `{"representation": (N, representation_dim), <item features>: (N,)}`
        -> the item tasks' outputs, for scoring N candidates of one user: compute the
        representation once with `user_model()` and repeat it N times."""
        if "representation" in self._parsed_schema.feature_names:
            raise ValueError("item_scorer: a schema feature is named 'representation'.")
        rep = keras.Input((self.representation_dim,), name="representation")
        all_inputs = schema_inputs(self.schema)
        item_inputs = {n: all_inputs[n] for n in self._roles["item_side"]}
        by_name = {t.name: t for t in self.task_specs}
        outputs = {
            name: self._probability(by_name[name], z)
            for name, z in self._item_logits(rep, item_inputs).items()
        }
        return keras.Model(
            {"representation": rep, **item_inputs}, outputs, name=f"{self.name}_item_scorer"
        )

    def _task_layers(self):
        layers = super()._task_layers()
        return layers + ([(self._rank_task, self.rank_score)] if self.rank_score is not None else [])

    def _balance_layer_variables(self):
        """GradNorm's W: the user representation layer."""
        return list(self.representation.trainable_variables)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                **{arg: _plain(getattr(self, arg)) for arg, _ in FEATURE_ROLES.values()},
                "features": None,
                "item_tasks": None if self.item_tasks is None else list(self.item_tasks),
                "rank_task": self.rank_task,
                "lstm_units": self.lstm_units,
                "attention_units": self.attention_units,
                "representation_dim": self.representation_dim,
                "tower_units": list(self.tower_units),
                "dropout": self.dropout,
            }
        )
        return config

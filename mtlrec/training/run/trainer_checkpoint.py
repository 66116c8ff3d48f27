"""The trainer's `tf.train.Checkpoint`, which also reads the checkpoints of versions whose
id maps held fewer variables."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from mtlrec.layers.embedding.dynamic_id_map import ADDED_VARIABLES


class TrainerCheckpoint(tf.train.Checkpoint):
    """A `tf.train.Checkpoint` of `children(older=False)` whose `read` also takes the files
    written before the id maps held `DynamicIdMap.ADDED_VARIABLES`.

    `tf.train.Checkpoint` refuses such a file (its variables of today have no value in
    it). Those are read through `children(older=True)`: the same objects laid out as
    the older versions wrote them, without the added variables, which keep their initial
    values (`ids_dropped`: none dropped yet on the day).

    Args:
        children: `(older: bool) -> dict` of the checkpoint's children by name.
        has_id_maps: whether the model holds dynamic id maps (else `read` is the usual one).
    """

    def __init__(self, children: Callable[..., dict], has_id_maps: bool):
        super().__init__(**children(older=False))
        self._older_layout = _OlderLayout(children) if has_id_maps else None

    def read(self, save_path, options=None):
        if self._older_layout is not None and self._older_layout.wrote(save_path):
            return self._older_layout.checkpoint().read(save_path, options)
        return super().read(save_path, options)


class _OlderLayout:
    """The layout of the checkpoints written before the id maps' added variables (a plain
    object: a checkpoint does not track it)."""

    def __init__(self, children):
        self._children = children

    @staticmethod
    def wrote(save_path) -> bool:
        """Whether the checkpoint at `save_path` holds id maps without the added variables."""
        names = [name for name, _ in tf.train.list_variables(str(save_path))]
        maps = [n for n in names if n.startswith("lookups/") and "/table/.ATTRIBUTES/" in n]
        added = [n for n in names if n.startswith("lookups/") and any(f"/{a}/.ATTRIBUTES/" in n for a in ADDED_VARIABLES)]
        return bool(maps) and not added

    def checkpoint(self) -> tf.train.Checkpoint:
        return tf.train.Checkpoint(**self._children(older=True))

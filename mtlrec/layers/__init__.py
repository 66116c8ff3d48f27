"""mtlrec.layers: serializable Keras layers for multi-task ranking models, grouped by concern.

- ``experts/``: ``Expert``, ``Gate``, ``DSelectKGate``, ``MixtureOfExperts`` (MMoE), ``CGC`` (PLE)
- ``sharing/``: ``CrossStitch``, ``InformationTransfer`` (AITM)
- ``sequence/``: history encoders ``TargetAttention`` (DIN), ``SelfAttentionEncoder`` (BST),
  ``PropertyGatedLSTMEncoder`` (DUPN's ``PropertyGatedLSTM`` read out by ``AttentionPooling``)
- ``interaction/``: ``FMInteraction``, ``DotInteraction``, ``CrossNetwork`` (DCN-v2)
- ``embedding/``: ``FeatureEmbedding``, ``DynamicIdMap`` (TensorFlow only)
- ``MLP``, the building block of experts and towers

Every layer but the embedding ones is pure ``keras.ops``. Those two need TensorFlow, so they are
imported on first use: ``import mtlrec.layers`` does not import TensorFlow under another backend.
"""

import importlib

from mtlrec.layers.mlp import MLP
from mtlrec.layers.experts.expert import Expert
from mtlrec.layers.experts.gate import Gate
from mtlrec.layers.experts.dselect_k_gate import DSelectKGate
from mtlrec.layers.experts.mixture_of_experts import MixtureOfExperts
from mtlrec.layers.experts.cgc import CGC
from mtlrec.layers.sharing.cross_stitch import CrossStitch
from mtlrec.layers.sharing.information_transfer import InformationTransfer
from mtlrec.layers.sequence.property_gated_lstm import PropertyGatedLSTM
from mtlrec.layers.sequence.attention_pooling import AttentionPooling
from mtlrec.layers.sequence.property_gated_lstm_encoder import PropertyGatedLSTMEncoder
from mtlrec.layers.sequence.target_attention import TargetAttention
from mtlrec.layers.sequence.self_attention_encoder import SelfAttentionEncoder
from mtlrec.layers.interaction.fm_interaction import FMInteraction
from mtlrec.layers.interaction.dot_interaction import DotInteraction
from mtlrec.layers.interaction.cross_network import CrossNetwork

_TENSORFLOW_ONLY = {
    "FeatureEmbedding": "mtlrec.layers.embedding.feature_embedding",
    "DynamicIdMap": "mtlrec.layers.embedding.dynamic_id_map",
}

__all__ = sorted(
    [
        "MLP",
        "Expert",
        "Gate",
        "DSelectKGate",
        "MixtureOfExperts",
        "CGC",
        "CrossStitch",
        "InformationTransfer",
        "PropertyGatedLSTM",
        "AttentionPooling",
        "PropertyGatedLSTMEncoder",
        "TargetAttention",
        "SelfAttentionEncoder",
        "FMInteraction",
        "DotInteraction",
        "CrossNetwork",
        *_TENSORFLOW_ONLY,
    ]
)


def __getattr__(name):
    if name in _TENSORFLOW_ONLY:
        import keras

        if keras.backend.backend() != "tensorflow":
            raise ImportError(
                f"mtlrec.layers.{name} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); "
                f"this process runs Keras on {keras.backend.backend()!r}"
            )
        value = getattr(importlib.import_module(_TENSORFLOW_ONLY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mtlrec.layers' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_TENSORFLOW_ONLY))

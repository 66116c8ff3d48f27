"""mtlrec.layers."""

# core multi-task layers
from mtlrec.layers.mlp import MLP
from mtlrec.layers.expert import Expert
from mtlrec.layers.gate import Gate
from mtlrec.layers.dselect_k_gate import DSelectKGate
from mtlrec.layers.mixture_of_experts import MixtureOfExperts
from mtlrec.layers.cgc import CGC
from mtlrec.layers.cross_stitch import CrossStitch
from mtlrec.layers.information_transfer import InformationTransfer

# sequence and interaction layers
from mtlrec.layers.property_gated_lstm import PropertyGatedLSTM
from mtlrec.layers.attention_pooling import AttentionPooling
from mtlrec.layers.fm_interaction import FMInteraction
from mtlrec.layers.dot_interaction import DotInteraction
from mtlrec.layers.cross_network import CrossNetwork

# feature embedding
from mtlrec.layers.feature_embedding import FeatureEmbedding
from mtlrec.layers.dynamic_id_map import DynamicIdMap

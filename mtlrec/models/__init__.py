"""mtlrec.models: multi-task models with dict outputs keyed by task name."""

from mtlrec.models.base.multi_task_model import MultiTaskModel, schema_inputs
from mtlrec.models.single_task import SingleTask
from mtlrec.models.shared_bottom import SharedBottom
from mtlrec.models.esmm import ESMM
from mtlrec.models.mmoe import MMoE
from mtlrec.models.ple import PLE
from mtlrec.models.cross_stitch_net import CrossStitchNet
from mtlrec.models.soft_sharing import SoftSharing
from mtlrec.models.dupn import DUPN
from mtlrec.models.aitm import AITM
from mtlrec.models.escm2 import ESCM2
from mtlrec.models.registry import MODELS, build_model
from mtlrec.models.base.variable_groups import VariableGroups

__all__ = [
    "AITM",
    "CrossStitchNet",
    "DUPN",
    "ESCM2",
    "ESMM",
    "MMoE",
    "MODELS",
    "MultiTaskModel",
    "PLE",
    "SharedBottom",
    "SingleTask",
    "SoftSharing",
    "VariableGroups",
    "build_model",
    "schema_inputs",
]

"""mtlrec: multi-task CTR/CVR modeling for e-commerce ranking on Keras 3."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.7.0"

from mtlrec.tasks import Task  # noqa: E402  (after the backend is fixed)

__all__ = ["Task", "__version__"]

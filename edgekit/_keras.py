"""The one place that imports TensorFlow and Keras 2 (tf-keras).

TensorFlow's C++ start-up logs (oneDNN notice, CUDA probing, absl pre-init warnings) are
written straight to file descriptor 2 and ignore TF_CPP_MIN_LOG_LEVEL for some messages, so
the import runs with fd 2 captured. Set EDGEKIT_TF_LOGS=1 to see them.
"""

from __future__ import annotations

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # see edgekit/__init__.py

from contextlib import nullcontext as _nullcontext

from edgekit._native import capture_native_stderr

with capture_native_stderr() if "tensorflow" not in sys.modules else _nullcontext():
    import tensorflow as tf
    import tf_keras as keras

    tf.get_logger().setLevel("ERROR")
    # Device discovery (and its CUDA probe) is lazy; trigger it here, while fd 2 is captured.
    tf.config.list_physical_devices()

__all__ = ["keras", "tf"]

"""Process-level TensorFlow settings for trainers: thread pools and the device class.

The device class is part of a candidate's key, because training times measured on different
hardware are not comparable.
"""

from __future__ import annotations

import logging
import re
from functools import cache

import tensorflow as tf

logger = logging.getLogger(__name__)


def configure_threads(threads: int) -> None:
    """Limit TensorFlow to ``threads`` intra-op threads and 1 inter-op thread.

    Trainer processes that share a machine then do not compete for cores, so each one's measured
    times stay comparable. TensorFlow fixes its thread pools when it runs its first op, so call
    this before that. Calling it again with the same value is harmless. A different value after
    the first op raises RuntimeError.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, received threads={threads}")
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as error:
        current = (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
        raise RuntimeError(
            f"cannot set TensorFlow to {threads} intra-op and 1 inter-op threads: TensorFlow already ran an op "
            f"with (intra-op, inter-op) = {current} (0 means one per core); call configure_threads first"
        ) from error
    logger.debug("TensorFlow threads: intra-op %d, inter-op 1", threads)


@cache
def device_class() -> str:
    """Return the class of the device that trains here: ``"cpu"``, ``"gpu-<model>"`` or ``"tpu"``.

    A GPU's model name is lowercased, with runs of other characters replaced by hyphens, so
    "NVIDIA H200" gives ``"gpu-nvidia-h200"``. Only the first GPU is named.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        name = re.sub(r"[^a-z0-9]+", "-", str(details.get("device_name", "")).lower()).strip("-")
        return f"gpu-{name}" if name else "gpu"
    if tf.config.list_physical_devices("TPU"):
        # NOTE: TPU generations share the class "tpu", so their results share keys; name the
        # generation here once a TPU trainer image exists to test against.
        return "tpu"
    return "cpu"

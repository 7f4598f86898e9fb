"""prune2drive_ros: driving QA over six surround cameras with Prune2Drive token pruning.

Everything in this package but :mod:`prune2drive_ros.node` imports without ROS.
"""

import logging

__version__ = "0.1.0"

#: Loggers that only speak when torchao is imported, which transformers' model classes do
#: whenever it is installed (the ``quantization`` extra): notes on optional kernels this build
#: of torch lacks (its CUDA extensions on a CPU torch, Triton) and an Enum registration that
#: torch deprecates, printed on every model load though nothing here uses them. Errors still
#: show; the quantisation that runs is logged by :mod:`prune2drive_ros.vlm.quantization`.
IMPORT_NOISE_LOGGERS = ("torchao", "torchao.kernel.intmm", "torch.utils._pytree")
for _name in IMPORT_NOISE_LOGGERS:
    logging.getLogger(_name).setLevel(logging.ERROR)

"""What this package writes into a checkpoint's ``config.json``, and what it says about it.

Beyond transformers' own fields, a checkpoint may carry keys that :mod:`.tiny` and
``prune2drive convert`` write and :mod:`.loading` reads (the prompt's key is
:data:`~prune2drive_ros.prompts.PROMPT_KEY`). Torch-free, so that the commands that print
:data:`RANDOM_WEIGHTS_NOTE` and the converters that write the keys import no model code for them.
"""

from __future__ import annotations

#: Config attribute that marks a checkpoint built by :mod:`~prune2drive_ros.vlm.tiny`.
RANDOM_WEIGHTS_KEY = "prune2drive_random_weights"
#: Config attribute: how views fit the encoder input (:data:`~.results.IMAGE_FITS`); written by
#: ``prune2drive convert`` for checkpoints trained on padded views (DriveMM).
IMAGE_FIT_KEY = "prune2drive_image_fit"
#: Shown next to every answer of a random-weight model.
RANDOM_WEIGHTS_NOTE = "random-weight test model: its answers are meaningless"

"""Greedy decoding on a transformers cache, and the timing of the stages around it.

What :meth:`~prune2drive_ros.vlm.base.DrivingVLM.generate` runs after the prefill: one token
per step on a stock :class:`~transformers.DynamicCache` until a stop token, the length limit or
a :class:`~prune2drive_ros.stopping.StopSignal` (checked after every token, so a cancel, a
timeout or a shutdown ends it within one step), then the cache cut back to the shared prefix
for the next question. Family-free: the adapter passes the step that embeds a token at its
position and runs the decoder.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

from ..stopping import StopSignal
from ..timings import Timings

#: One decoding step: ``(token id [1], its position) -> logits [vocab]`` of the next token.
Step = Callable[[torch.Tensor, int], torch.Tensor]
#: Called with the tokens generated so far, after each new one (e.g. to stream them).
OnToken = Callable[[list[int]], None]


@dataclass(frozen=True)
class Decoded:
    """What :func:`greedy` generated, and why it ended: ``"stop"`` (a stop token, included),
    ``"length"`` (``max_new_tokens``), or the :class:`StopSignal`'s reason."""

    tokens: list[int]
    finish: str


def greedy(
    logits: torch.Tensor,
    step: Step,
    position: int,
    *,
    max_new_tokens: int,
    stop_ids: frozenset[int],
    stop: StopSignal | None = None,
    on_token: OnToken | None = None,
) -> Decoded:
    """Greedy decoding from ``logits``, the first token at ``position``, until a stop token,
    ``max_new_tokens`` or ``stop`` (checked after every token, before the next step)."""
    tokens: list[int] = []
    while True:
        ids = logits.argmax().view(1)  # stays on the device; int() below is the one sync
        tokens.append(int(ids))
        if on_token is not None:
            on_token(tokens)
        if tokens[-1] in stop_ids:
            return Decoded(tokens, "stop")
        if len(tokens) == max_new_tokens:
            return Decoded(tokens, "length")
        if stop is not None and stop.is_set():
            return Decoded(tokens, stop.reason)
        logits = step(ids, position)
        position += 1


def cache_keyword(decoder: nn.Module) -> str:
    """The cache argument's name: ``cache`` since transformers 5.2x, ``past_key_values`` before."""
    parameters = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def stop_ids(model: PreTrainedModel, tokenizer: Any) -> frozenset[int]:
    """Token ids that end an answer: the generation config's eos ids and the tokenizer's."""
    stops: set[int] = set()
    config_eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(config_eos, int):
        stops.add(config_eos)
    elif config_eos is not None:
        stops.update(int(i) for i in config_eos)
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    return frozenset(stops)


def crop(cache: DynamicCache, length: int) -> None:
    """Cut ``cache`` back to its first ``length`` tokens (transformers 5 takes a negative count)."""
    surplus = cache.get_seq_length() - length
    if surplus > 0:
        cache.crop(-surplus)


@contextmanager
def stopwatch(timings: Timings, stage: str, device: torch.device) -> Iterator[None]:
    """Add the wall time of the block to ``timings.<stage>`` (CUDA work on ``device``
    synchronised before and after, so the time is the work's, not its launch's)."""
    _synchronize(device)
    start = time.perf_counter()
    yield
    _synchronize(device)
    setattr(timings, stage, getattr(timings, stage) + (time.perf_counter() - start) * 1e3)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

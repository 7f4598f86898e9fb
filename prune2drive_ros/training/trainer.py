"""Train a scene model end to end, resumably, and save it as any checkpoint is saved.

One training row is one scene: the shared prefix (prompt and six views, exactly as the model
sees it at inference, built by the adapter's own code) followed by all of the scene's question
turns, each with its answer. A tree mask lets every question see the prefix and itself only,
and every question's positions start where the prefix ends, so each question is trained
exactly as it is asked at inference (where questions share the prefix's cache); one row
teaches 21 questions for the cost of one prefix. The loss is next-token cross-entropy on the
answer tokens and the stop token, plus a per-patch auxiliary loss on the projector's output
(:mod:`.data`). Teacher-forced exact match (every answer token and the stop token argmax-right)
is greedy decoding's exact match, so held-out accuracy is measured in the same batched pass.

The vision tower, projector and decoder all train (nothing is frozen: at this size the tower
must learn vehicles from scratch). The training state is saved to ``<out>.partial/state.pt``
every minute and on Ctrl-C; training the same spec into the same folder resumes from it. The
finished model is written with ``save_pretrained`` (with its tokenizer, image processor and a
``scene_model.json`` report) and loads through :func:`~prune2drive_ros.vlm.loading.load_vlm`.

Training runs at the spec's thread count (:attr:`SceneModelSpec.threads`), not the process's:
the weight gradients' reductions are split across threads, so the thread count decides their
float32 rounding. The same spec then trains to bit-identical weights on CPUs with the same
kernels, whatever the machine's core count or ``OMP_NUM_THREADS``; the report records the torch
version and the kernels it ran on (``build``), which is what may still differ between machines.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..files import give_default_modes, move_into_place, write_atomically
from ..progress import NO_PROGRESS, Progress
from ..sensors.scene import RoadScene, all_scene_questions
from ..views import VIEWS
from ..vlm.llava_onevision import LlavaOnevisionVLM
from ..vlm.results import Normalization
from ..vlm.tiny import llava_onevision_config, llava_onevision_processor, train_tokenizer
from .data import PATCH_TARGETS, ScenePool, draw_pool
from .spec import REPORT_FILE, SceneModelSpec

logger = logging.getLogger(__name__)

#: The report written beside the weights.
_STATE_FILE = "state.pt"
_SAVE_EVERY_S = 60.0
_IGNORE = -100


@dataclass(frozen=True)
class Accuracy:
    """Exact-match accuracy over some questions, overall and per kind."""

    overall: float
    per_kind: dict[str, float]
    questions: int


@dataclass(frozen=True)
class TrainReport:
    """What a training run reached (also ``scene_model.json`` in the checkpoint)."""

    spec: SceneModelSpec
    steps: int
    seconds: float
    draw_seconds: float
    held_out: Accuracy
    majority: Accuracy
    build: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scene_corpus() -> list[str]:
    """Question and answer texts of the scenes, for the scene model's tokenizer."""
    facts = RoadScene(0, 64, 36).facts(0)
    answers = [str(n) for n in range(10)] + ["yes", "no", "front", "back", "left", "right"]
    lanes = [f"the {lane} lane" for lane in ("left", "middle", "right")]
    return [q.question for q in all_scene_questions(facts)] + answers + lanes + ["none"]


def build_untrained(spec: SceneModelSpec) -> LlavaOnevisionVLM:
    """The scene model's architecture with seeded initial weights, as a :class:`DrivingVLM`."""
    tokenizer = train_tokenizer("llava_onevision", scene_corpus())
    config = llava_onevision_config(
        tokenizer,
        spec.vision_config(),
        spec.text_config(),
        image_size=spec.image_size,
        patch_size=spec.patch_size,
    )
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        model = LlavaOnevisionVLM.model_class._from_config(
            config, dtype=torch.float32, attn_implementation="sdpa"
        )
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    processor = llava_onevision_processor(spec.image_size)
    return LlavaOnevisionVLM(
        model,
        tokenizer,
        name=f"scene-{spec.name}",
        normalization=Normalization.from_processor_dict(processor.to_dict()),
    )


class _Batches:
    """Turns scenes of a pool into training rows: prefix embeddings, question blocks, targets."""

    def __init__(self, vlm: LlavaOnevisionVLM, pool: ScenePool) -> None:
        self.vlm, self.pool = vlm, pool
        tokenizer = vlm.tokenizer
        self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id)
        self.question_ids = [vlm._prompt.question_ids(q).tolist() for q in pool.questions]
        # Every kind weighs the same in the loss, as in the accuracy: the six per-view slots of
        # a kind share its weight, so 12 bus slots (mostly "0" and "no") do not drown the lane.
        per_kind = {kind: pool.kinds.count(kind) for kind in pool.kinds}
        self.slot_weight = torch.tensor([1.0 / per_kind[kind] for kind in pool.kinds])
        self._answer_ids: dict[str, list[int]] = {}
        for answers in pool.answers:
            for answer in answers:
                if answer not in self._answer_ids:
                    ids = tokenizer.encode(answer, add_special_tokens=False)
                    if tokenizer.decode(ids, skip_special_tokens=True).strip() != answer:
                        raise RuntimeError(f"answer {answer!r} does not round-trip the tokenizer")
                    self._answer_ids[answer] = ids

    def forward(
        self, indices: Sequence[int], head: nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Answer loss, patch loss, and per (scene, slot) whether the answer was exactly right
        (``[B, slots]`` bool, slots in the pool's order)."""
        vlm = self.vlm
        pixels = torch.cat([vlm.preprocess(list(self.pool.images[i])) for i in indices])
        visual = vlm._encode(pixels).reshape(len(indices), len(VIEWS), vlm.tokens_per_view, -1)
        targets = torch.from_numpy(self.pool.patch_targets[list(indices)])
        patch_loss = nn.functional.binary_cross_entropy_with_logits(head(visual), targets)
        prefixes = [vlm._prefix_inputs(visual[b], None, "original") for b in range(len(indices))]
        prefix_len, start = prefixes[0].length, prefixes[0].next_position
        ids, labels, block, rel = self._blocks(indices)
        hidden = torch.cat([torch.cat([p.embeds for p in prefixes]), vlm._text_embeds(ids)], dim=1)
        positions = torch.cat([prefixes[0].positions[0], start + rel])[None]
        mask = _tree_mask(prefix_len, block)
        layers = vlm._layers
        embeddings = layers.rotary(hidden, positions)
        for layer in layers.layers:
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=embeddings,
                position_ids=None,
                use_cache=False,
            )
        text_hidden = layers.norm(hidden[:, prefix_len:])
        where = labels != _IGNORE
        logits = vlm.model.get_output_embeddings()(text_hidden[where])
        weight = self.slot_weight[block].expand_as(labels)[where]
        losses = nn.functional.cross_entropy(logits, labels[where], reduction="none")
        answer_loss = (losses * weight).sum() / weight.sum()
        right = torch.ones_like(labels, dtype=torch.bool)
        right[where] = logits.argmax(-1) == labels[where]
        slots = len(self.question_ids)
        exact = torch.stack(
            [right[:, block == s].all(dim=1) for s in range(slots)], dim=1
        )  # [B, slots]
        return answer_loss, patch_loss, exact

    def _blocks(
        self, indices: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Question turns with answers, padded per slot to the batch's longest answer: ids and
        labels ``[B, L]``, each position's slot and its position within the slot ``[L]``."""
        rows_ids: list[list[int]] = [[] for _ in indices]
        rows_labels: list[list[int]] = [[] for _ in indices]
        block: list[int] = []
        rel: list[int] = []
        for slot, question in enumerate(self.question_ids):
            answers = [self._answer_ids[self.pool.answers[i][slot]] for i in indices]
            width = len(question) + max(len(a) for a in answers)
            for b, answer in enumerate(answers):
                ids = question + answer + [self.pad] * (width - len(question) - len(answer))
                labels = [_IGNORE] * width
                for j, token in enumerate([*answer, self.eos]):
                    labels[len(question) - 1 + j] = token
                rows_ids[b] += ids
                rows_labels[b] += labels
            block += [slot] * width
            rel += list(range(width))
        return (
            torch.tensor(rows_ids),
            torch.tensor(rows_labels),
            torch.tensor(block),
            torch.tensor(rel),
        )


def _tree_mask(prefix: int, block: torch.Tensor) -> torch.Tensor:
    """``[1, 1, T, T]`` True where a query may attend: the prefix causally; each question block
    the whole prefix and itself causally, never another block."""
    length = prefix + block.numel()
    keys = torch.arange(length)
    causal = keys[None, :] <= keys[:, None]
    slot = torch.cat([torch.full((prefix,), -1), block])
    same = (slot[:, None] == slot[None, :]) | (slot[None, :] == -1)
    return (causal & same)[None, None]


def _patch_head(vlm: LlavaOnevisionVLM, spec: SceneModelSpec) -> nn.Module:
    """The training-only per-patch head on the projector's output (not saved)."""
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed + 1)
        return nn.Linear(vlm._hidden_size, PATCH_TARGETS)


def _bf16(spec: SceneModelSpec) -> bool:
    """Whether the training forward runs in bfloat16: the spec asks for it and the CPU computes
    in it natively (AVX512-BF16 or AMX: about a fifth faster here)."""
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return spec.bf16 and bool(native)


def _autocast(spec: SceneModelSpec) -> torch.autocast:
    """bfloat16 autocast for the forward pass where :func:`_bf16`; weights, optimizer and loss
    stay float32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=_bf16(spec))


def _build_info(spec: SceneModelSpec) -> dict[str, Any]:
    """What besides the spec decides the weights: torch, the CPU kernels it dispatched to, the
    thread count, and whether the forward ran in bfloat16."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": spec.threads,
        "bf16": _bf16(spec),
    }


@contextmanager
def _fixed_threads(count: int) -> Iterator[None]:
    """Run the block at ``count`` intra-op threads, then restore the process's count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _learning_rate(spec: SceneModelSpec, step: int) -> float:
    """Linear warmup, then cosine decay to a tenth."""
    if step < spec.warmup:
        return spec.learning_rate * (step + 1) / spec.warmup
    done = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(done, 1.0))))


def evaluate_pool(
    batches: _Batches, head: nn.Module, batch: int, *, limit: int | None = None
) -> Accuracy:
    """Teacher-forced exact-match accuracy (= greedy exact match) on ``batches``' pool."""
    count = len(batches.pool) if limit is None else min(limit, len(batches.pool))
    results = []
    with torch.no_grad():
        for first in range(0, count, batch):
            *_, exact = batches.forward(range(first, min(first + batch, count)), head)
            results.append(exact)
    return _accuracy(torch.cat(results).numpy(), batches.pool.kinds)


def _accuracy(exact: np.ndarray, kinds: Sequence[str]) -> Accuracy:
    """Accuracy of ``exact`` ``[scenes, slots]``, with every kind weighed equally overall (as
    the ``default`` question mix asks them)."""
    per_kind: dict[str, list[bool]] = defaultdict(list)
    for slot, kind in enumerate(kinds):
        per_kind[kind] += exact[:, slot].tolist()
    means = {kind: float(np.mean(values)) for kind, values in per_kind.items()}
    return Accuracy(float(np.mean(list(means.values()))), means, int(exact.size))


def majority_accuracy(train: ScenePool, held_out: ScenePool) -> Accuracy:
    """What answering each question slot with its most common training answer scores: the
    floor a model that ignores the pixels reaches."""
    exact = np.zeros((len(held_out), len(held_out.kinds)), bool)
    for slot in range(len(held_out.kinds)):
        values, counts = np.unique([a[slot] for a in train.answers], return_counts=True)
        common = values[counts.argmax()]
        exact[:, slot] = [a[slot] == common for a in held_out.answers]
    return _accuracy(exact, held_out.kinds)


def train_scene_model(
    spec: SceneModelSpec, out: Path, *, progress: Progress = NO_PROGRESS
) -> TrainReport:
    """Train ``spec`` and save it to the new folder ``out``; resume from ``out.partial``.

    Runs at ``spec.threads`` intra-op threads (the caller's count is restored after), so the
    weights do not depend on the machine's core count.

    Raises:
        FileExistsError: ``out`` exists already.
    """
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists already; remove it to train again")
    if spec.threads < 1:
        raise ValueError(f"spec {spec.name!r} names {spec.threads} threads; it needs at least 1")
    with _fixed_threads(spec.threads):
        return _train(spec, out, progress=progress)


def _train(spec: SceneModelSpec, out: Path, *, progress: Progress) -> TrainReport:
    """:func:`train_scene_model`'s body, at the spec's thread count."""
    work = out.with_name(out.name + ".partial")
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    vlm = build_untrained(spec)
    head = _patch_head(vlm, spec)
    params = [*vlm.model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=0.01)
    step, elapsed = _resume(work / _STATE_FILE, spec, vlm, head, optimizer)
    drawing = time.monotonic()
    train_pool = draw_pool(spec, held_out=False, progress=progress)
    held_pool = draw_pool(spec, held_out=True, progress=progress)
    drawing = time.monotonic() - drawing
    train, held = _Batches(vlm, train_pool), _Batches(vlm, held_pool)
    vlm.model.train()
    started, saved = time.monotonic() - elapsed, time.monotonic()
    bar = progress(
        total=spec.steps, initial=step, desc=f"training scene model {spec.name}", unit="step"
    )
    accuracy = None
    with bar:
        try:
            while step < spec.steps:
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(spec, step)
                order = np.random.default_rng([spec.seed, step]).choice(
                    len(train_pool), spec.batch, replace=False
                )
                with _autocast(spec):
                    answer_loss, patch_loss, _ = train.forward(order.tolist(), head)
                loss = answer_loss + spec.patch_loss * patch_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                step += 1
                bar.update()
                if step % max(1, spec.steps // 10) == 0 or step == spec.steps:
                    vlm.model.eval()
                    accuracy = evaluate_pool(held, head, 2 * spec.batch, limit=64)
                    vlm.model.train()
                held_out = "-" if accuracy is None else f"{accuracy.overall:.1%}"
                bar.set_postfix_str(
                    f"loss={answer_loss.item():.3f}, patch={patch_loss.item():.3f}, "
                    f"held_out={held_out}"
                )
                if time.monotonic() - saved > _SAVE_EVERY_S:
                    _save_state(work / _STATE_FILE, spec, vlm, head, optimizer, step, started)
                    saved = time.monotonic()
        except KeyboardInterrupt:
            _save_state(work / _STATE_FILE, spec, vlm, head, optimizer, step, started)
            logger.warning("interrupted at step %d of %d; run again to resume", step, spec.steps)
            raise
    vlm.model.eval()
    report = TrainReport(
        spec=spec,
        steps=step,
        seconds=time.monotonic() - started,
        draw_seconds=drawing,
        held_out=evaluate_pool(held, head, 2 * spec.batch),
        majority=majority_accuracy(train_pool, held_pool),
        build=_build_info(spec),
    )
    _save_model(vlm, spec, work / "model", report)
    if not move_into_place(work / "model", out, replace=False):
        raise FileExistsError(f"{out} appeared while training; the model is in {work / 'model'}")
    shutil.rmtree(work, ignore_errors=True)
    logger.info("saved scene model %s to %s", spec.name, out)
    return report


def _save_model(
    vlm: LlavaOnevisionVLM, spec: SceneModelSpec, folder: Path, report: TrainReport
) -> None:
    """``save_pretrained`` the model, tokenizer and image processor, and the report, readable
    by every user the umask allows (the node may run as another user than the trainer)."""
    folder.mkdir(parents=True, exist_ok=True)
    vlm.model.save_pretrained(folder)
    vlm.tokenizer.save_pretrained(folder)
    llava_onevision_processor(spec.image_size).save_pretrained(folder)
    (folder / REPORT_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    give_default_modes(folder)


def _save_state(
    path: Path,
    spec: SceneModelSpec,
    vlm: LlavaOnevisionVLM,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    started: float,
) -> None:
    """The training state, written atomically (a kill mid-write keeps the previous one)."""
    state = {
        "digest": spec.digest(),
        "step": step,
        "elapsed": time.monotonic() - started,
        "model": vlm.model.state_dict(),
        "head": head.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    write_atomically(path, lambda tmp: torch.save(state, tmp))


def _resume(
    path: Path,
    spec: SceneModelSpec,
    vlm: LlavaOnevisionVLM,
    head: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> tuple[int, float]:
    """Load a saved state of the same spec into the model and optimizer: (step, seconds)."""
    if not path.is_file():
        return 0, 0.0
    state = torch.load(path, weights_only=True)
    if state.get("digest") != spec.digest():
        logger.warning("%s is from another spec; starting afresh", path)
        return 0, 0.0
    vlm.model.load_state_dict(state["model"])
    head.load_state_dict(state["head"])
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming scene model %s at step %d", spec.name, state["step"])
    return int(state["step"]), float(state["elapsed"])

"""The named prompts: how each checkpoint was trained to be asked about six cameras.

A model answers best when asked the way it was trained, so the prompt follows the checkpoint:

* ``drivemm``: DriveMM's six-image prompt (``1: <image> 2: <image> ... 6: <image>. These six
  images are the front view, ...``) built as its demo and the Prune2Drive reference build it
  (``preprocess_llama3``: the tokenizer's chat template applied to the system message, the user
  message and an empty assistant message one at a time, each after the first without its
  BOS, the final end-of-turn token dropped).
* ``drivelmm_o1``: DriveLMM-o1's structured-reasoning instruction, then the six views stitched
  into ONE image, then the question (``evaluation/inference.py``), in the checkpoint's chat
  template.
* ``chat_template``: the tokenizer's own chat template around one user turn holding one line
  per view (``"CAM_FRONT view: <image>"``) and the question: any transformers checkpoint that
  ships a chat template (e.g. ``llava-hf/llava-onevision-qwen2-7b-ov-hf``).
* ``generic``: this package's own ChatML prompt (a system turn, the same view lines, the
  question). A fallback for checkpoints without a chat template (the random test models);
  not what any published model was trained on.

``auto`` (the default) takes the prompt a converted checkpoint names in its config.json
(``prune2drive_prompt``, written by ``prune2drive convert``), else ``chat_template`` when the
tokenizer has one, else ``generic``.

Torch-free, so the config schema can list :data:`PROMPT_CHOICES` without importing torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ModelLoadError
from .views import VIEW_LABELS, VIEWS

logger = logging.getLogger(__name__)

#: The field of a :class:`PromptTemplate` question where the question text goes.
QUESTION_FIELD = "{question}"

#: config.json key naming the prompt a converted checkpoint was trained with.
PROMPT_KEY = "prune2drive_prompt"


@dataclass(frozen=True)
class PromptTemplate:
    """A whole prompt as text, cut where the question goes.

    Attributes:
        name: which named prompt this is (:data:`PROMPT_CHOICES`).
        prefix: everything the questions of one frame set share: it ends with the last image
            and holds ``images`` image placeholders (one per view, or one stitched image).
        question: the rest, with one ``{question}`` field (the assistant turn follows it).
        images: placeholders in ``prefix``: six, or one when the views are stitched.
    """

    name: str
    prefix: str
    question: str
    images: int = len(VIEWS)

    @property
    def stitched(self) -> bool:
        """True when the six views are one stitched image."""
        return self.images == 1

    def question_parts(self) -> tuple[str, str]:
        """The template text before and after ``{question}``."""
        before, marker, after = self.question.partition(QUESTION_FIELD)
        if not marker:
            raise ValueError(f"question template {self.question!r} has no {QUESTION_FIELD} field")
        return before, after


def view_lines(image: str) -> str:
    """One ``"<label> view: <image>"`` line per view, in :data:`VIEWS` order."""
    return "".join(f"{VIEW_LABELS[name]} view: {image}\n" for name in VIEWS)


#: ChatML's special tokens, which the generic prompt is written in (Qwen2's chat format).
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def generic_prompt(image: str, tokenizer: Any, placeholder: str) -> PromptTemplate:
    """This package's own ChatML prompt: the fallback for checkpoints without a chat template."""
    return PromptTemplate(
        name="generic",
        prefix=(
            "<|im_start|>system\nYou are a helpful driving assistant. You see the six surround "
            "cameras of the ego vehicle.<|im_end|>\n<|im_start|>user\n" + view_lines(image)
        ),
        question=QUESTION_FIELD + "<|im_end|>\n<|im_start|>assistant\n",
    )


#: What a chat template that places the images itself is told about them.
CAMERAS_SENTENCE = (
    "The six images are the "
    + ", ".join(VIEW_LABELS[name] for name in VIEWS[:-1])
    + f" and {VIEW_LABELS[VIEWS[-1]]} cameras of the ego vehicle. "
)


def chat_template_prompt(image: str, tokenizer: Any, placeholder: str) -> PromptTemplate:
    """The tokenizer's chat template around one user turn: the view lines, then the question.

    Multimodal chat templates (transformers' processors', e.g. LLaVA-OneVision's) take typed
    content and write the image placeholders themselves, all images first: for those the
    turn is six images and a sentence naming the cameras in order, then the question, and a
    bare placeholder the template writes gets the family's markup around it.
    """
    text = _render(tokenizer, [_user(view_lines(image) + QUESTION_FIELD)], "chat_template")
    if text.count(image) == len(VIEWS) and text.count(QUESTION_FIELD) == 1:
        return _cut(text, image, "chat_template", images=len(VIEWS))
    typed = [{"type": "image"}] * len(VIEWS)
    typed.append({"type": "text", "text": CAMERAS_SENTENCE + QUESTION_FIELD})
    text = _render(tokenizer, [{"role": "user", "content": typed}], "chat_template")
    if text.count(image) != len(VIEWS):
        text = text.replace(placeholder, image)
    return _cut(text, image, "chat_template", images=len(VIEWS))


#: DriveMM's system message (``preprocess_llama3``'s default in its ``llava.train.train``).
DRIVEMM_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)
#: What DriveMM's demo says after the six images, before the question.
DRIVEMM_VIEWS = (
    ". These six images are the front view, front left view, front right view, back view, back "
    "left view and back right view of the ego vehicle. "
)


def drivemm_prompt(image: str, tokenizer: Any, placeholder: str) -> PromptTemplate:
    """DriveMM's six-image prompt, message by message as ``preprocess_llama3`` tokenises it."""
    images = " ".join(f"{index}: {image}" for index in range(1, len(VIEWS) + 1))
    bos: str = getattr(tokenizer, "bos_token", None) or ""
    parts = []
    for i, message in enumerate(
        (
            {"role": "system", "content": DRIVEMM_SYSTEM},
            _user(images + DRIVEMM_VIEWS + QUESTION_FIELD),
            {"role": "assistant", "content": ""},
        )
    ):
        text = _render(tokenizer, [message], "drivemm", generation_prompt=False)
        if i and not (bos and text.startswith(bos)):
            raise ModelLoadError(
                "the drivemm prompt needs a Llama-3 chat template that starts each rendering "
                f"with the BOS token (DriveMM drops it from every message but the first); this "
                f"tokenizer's starts {text[:30]!r}. Use prompt chat_template or generic"
            )
        parts.append(text[len(bos) :] if i else text)
    text = "".join(parts)
    end = getattr(tokenizer, "eos_token", None) or "<|eot_id|>"
    # preprocess_llama3's ids end with the empty assistant turn's end-of-turn token, which the
    # demo cuts ([:, :-1]) so that generation continues the assistant turn.
    for marker in (end, "<|eot_id|>"):
        if text.endswith(marker):
            return _cut(text[: -len(marker)], image, "drivemm", images=len(VIEWS))
    raise ModelLoadError(
        "the drivemm prompt needs a chat template whose assistant turn ends with the end-of-turn "
        f"token {end!r}; use prompt chat_template or generic"
    )


#: DriveLMM-o1's instruction before the stitched image (its ``evaluation/inference.py``).
DRIVELMM_O1_INSTRUCTION = (
    "When answering the question based on the provided image, follow a structured and logical "
    "reasoning process. Organize your response using the format, ensuring each step builds upon "
    "the previous one and clearly explains how the image(s) contribute to the solution. Your "
    "answer should be structured as Reasoning Steps: (step by step reasoning) Final Answer: "
    "(final answer) \n Question: "
)


def drivelmm_o1_prompt(image: str, tokenizer: Any, placeholder: str) -> PromptTemplate:
    """DriveLMM-o1's prompt: instruction, the stitched image, the question, in its template."""
    content = DRIVELMM_O1_INSTRUCTION + "\n" + image + "\n" + QUESTION_FIELD
    text = _render(tokenizer, [_user(content)], "drivelmm_o1")
    return _cut(text, image, "drivelmm_o1", images=1)


#: Prompt name -> builder ``(image markup, tokenizer, image placeholder) -> PromptTemplate``.
PROMPTS: Mapping[str, Callable[[str, Any, str], PromptTemplate]] = {
    "drivemm": drivemm_prompt,
    "drivelmm_o1": drivelmm_o1_prompt,
    "chat_template": chat_template_prompt,
    "generic": generic_prompt,
}
#: What the ``prompt`` setting accepts.
PROMPT_CHOICES: tuple[str, ...] = ("auto", *PROMPTS)


def resolve_prompt(name: str, tokenizer: Any, model_prompt: str | None) -> str:
    """The prompt ``name`` stands for: ``auto`` follows the checkpoint (see the module doc).

    Raises:
        ModelLoadError: an unknown name, in the setting or in the checkpoint's config.json.
    """
    if name != "auto":
        if name not in PROMPTS:
            raise ModelLoadError(
                f"unknown prompt {name!r}; expected one of {', '.join(PROMPT_CHOICES)}"
            )
        return name
    if model_prompt:
        if model_prompt not in PROMPTS:
            raise ModelLoadError(
                f"the checkpoint's config.json names prompt {model_prompt!r} ({PROMPT_KEY}), "
                f"which this version does not know ({', '.join(PROMPTS)}); set prompt explicitly"
            )
        return model_prompt
    if getattr(tokenizer, "chat_template", None):
        return "chat_template"
    logger.info("the tokenizer has no chat template: using the generic prompt")
    return "generic"


def _user(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _render(
    tokenizer: Any, messages: list[dict[str, Any]], name: str, *, generation_prompt: bool = True
) -> str:
    """``messages`` through the tokenizer's chat template, as text."""
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"the {name} prompt is written with the checkpoint's chat template, and this "
            "tokenizer has none; convert the checkpoint with `prune2drive convert` (which keeps "
            "its template) or use prompt generic"
        )
    text: str = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt
    )
    return text


def _cut(text: str, image: str, name: str, *, images: int) -> PromptTemplate:
    """Split a rendered prompt after its last image; check images and question appear as meant."""
    found, questions = text.count(image), text.count(QUESTION_FIELD)
    if found != images or questions != 1:
        raise ModelLoadError(
            f"the {name} prompt rendered with {found} image placeholders {image!r} and "
            f"{questions} question fields, not {images} and 1: the chat template rewrites its "
            "content; use prompt generic"
        )
    end = text.rindex(image) + len(image)
    if text.index(QUESTION_FIELD) < end:
        raise ModelLoadError(f"the {name} prompt puts the question before the images")
    return PromptTemplate(name=name, prefix=text[:end], question=text[end:], images=images)

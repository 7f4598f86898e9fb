"""The prompt follows the checkpoint: DriveMM's ids as its own code builds them, the chat
template of a transformers checkpoint, the generic fallback, and the prompt setting."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from original_llava_next import write_original_drivemm
from transformers import PreTrainedTokenizerFast

from prune2drive_ros.errors import ModelLoadError
from prune2drive_ros.prompts import (
    PROMPT_CHOICES,
    chat_template_prompt,
    drivemm_prompt,
    generic_prompt,
    resolve_prompt,
)
from prune2drive_ros.views import VIEW_LABELS, VIEWS
from prune2drive_ros.vlm import DrivingVLM, load_vlm
from prune2drive_ros.vlm.conversion import convert_checkpoint

#: DriveMM's demo questions (scripts/inference_demo/demo_image.py), the second with a DriveLM
#: object tag.
QUESTIONS = (
    "What are the important objects in the current scene? Those objects will be considered for "
    "the future reasoning and driving decision.",
    "Would <c3,CAM_FRONT,373.7,526.2> be in the moving direction of the ego vehicle?",
)
#: The demo's text, with DriveMM's six images.
DRIVEMM_TEXT = (
    "1: <image> 2: <image> 3: <image> 4: <image> 5: <image> 6: <image>. These six images are "
    "the front view, front left view, front right view, back view, back left view and back right "
    "view of the ego vehicle. {question}"
)
DRIVEMM_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)
IMAGE_TOKEN_INDEX = -200  # llava.constants


def _ids(encoded: Any) -> list[int]:
    """apply_chat_template's ids, whether it returns a list or a BatchEncoding."""
    return list(encoded["input_ids"] if isinstance(encoded, Mapping) else encoded)


def preprocess_llama3(tokenizer: Any, question: str) -> list[int]:
    """DriveMM's llava.train.train.preprocess_llama3 for one question and an empty answer, cut
    as its demo cuts it ([:, :-1]), written out from its source: the reference."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    image = tokenizer.convert_tokens_to_ids("<image>")
    ids = _ids(tokenizer.apply_chat_template([{"role": "system", "content": DRIVEMM_SYSTEM}]))
    for message in (
        {"role": "user", "content": DRIVEMM_TEXT.format(question=question)},
        {"role": "assistant", "content": ""},
    ):
        ids += _ids(tokenizer.apply_chat_template([message]))[1:]
    return [IMAGE_TOKEN_INDEX if i == image else i for i in ids][:-1]


def full_prompt_ids(vlm: DrivingVLM, question: str) -> list[int]:
    """Our prompt's ids with one image placeholder per view, the original's -200 standing in."""
    pieces: list[torch.Tensor] = []
    for v, segment in enumerate(vlm._prompt.segments):
        pieces.append(segment)
        if v < len(VIEWS):
            pieces.append(torch.tensor([IMAGE_TOKEN_INDEX]))
    return torch.cat([*pieces, vlm._prompt.question_ids(question)]).tolist()


@pytest.fixture(scope="module")
def drivemm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    source = write_original_drivemm(tmp_path_factory.mktemp("drivemm"))
    return source, convert_checkpoint(source, source.parent / "hf")


@pytest.mark.parametrize("question", QUESTIONS)
def test_drivemm_prompt_ids_are_what_drivemms_code_builds(
    drivemm: tuple[Path, Path], question: str
) -> None:
    source, converted = drivemm
    vlm = load_vlm(converted)
    assert vlm.prompt_name == "drivemm"  # auto: the prompt the converted config names
    original = PreTrainedTokenizerFast.from_pretrained(source)  # as DriveMM ships it
    assert full_prompt_ids(vlm, question) == preprocess_llama3(original, question)


def test_drivemm_views_are_letterboxed_with_the_mean_colour(drivemm: tuple[Path, Path]) -> None:
    vlm = load_vlm(drivemm[1])
    assert vlm.pad_color == (127, 127, 127)  # SigLIP's mean 0.5, as expand2square pads


def test_the_prompt_setting_overrides_the_checkpoint(drivemm: tuple[Path, Path]) -> None:
    vlm = load_vlm(drivemm[1], prompt="chat_template")
    assert vlm.prompt_name == "chat_template"
    text = vlm.tokenizer.decode(vlm._prompt.segments[0])
    assert text.startswith("<|begin_of_text|><|start_header_id|>system")
    assert text.endswith("user<|end_header_id|>\n\nfront view: ")
    generic = load_vlm(drivemm[1], prompt="generic")
    assert generic.prompt_name == "generic"


def test_auto_follows_the_chat_template_then_falls_back_to_generic() -> None:
    class Tokenizer:
        chat_template: str | None = "{{ messages }}"

    assert resolve_prompt("auto", Tokenizer(), None) == "chat_template"
    assert resolve_prompt("auto", Tokenizer(), "drivemm") == "drivemm"
    Tokenizer.chat_template = None
    assert resolve_prompt("auto", Tokenizer(), None) == "generic"
    assert resolve_prompt("generic", Tokenizer(), "drivemm") == "generic"
    with pytest.raises(ModelLoadError, match="unknown prompt 'llava'"):
        resolve_prompt("llava", Tokenizer(), None)
    with pytest.raises(ModelLoadError, match="set prompt explicitly"):
        resolve_prompt("auto", Tokenizer(), "future_prompt")
    assert set(PROMPT_CHOICES) == {"auto", "drivemm", "drivelmm_o1", "chat_template", "generic"}


def test_generic_prompt_names_every_view_once() -> None:
    template = generic_prompt("<image>", None, "<image>")
    assert template.prefix.count("<image>") == len(VIEWS) and not template.stitched
    assert all(f"{VIEW_LABELS[view]} view: <image>\n" in template.prefix for view in VIEWS)
    assert template.question_parts() == ("", "<|im_end|>\n<|im_start|>assistant\n")


def test_a_prompt_that_needs_a_chat_template_says_so() -> None:
    with pytest.raises(ModelLoadError, match="has none"):
        drivemm_prompt("<image>", object(), "<image>")


#: A multimodal chat template that writes the images itself, all first, then the text (as
#: transformers' LLaVA-OneVision checkpoints ship one: typed content only).
IMAGES_FIRST_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ '\\n' + content['text'] }}{% endfor %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class TemplateTokenizer:
    """Just what the prompt builders read from a tokenizer: its chat template, rendered."""

    def __init__(self, template: str) -> None:
        from transformers.utils.chat_template_utils import render_jinja_template

        self.chat_template = template
        self._render = render_jinja_template

    def apply_chat_template(self, messages: Any, **_: Any) -> str:
        rendered, _ = self._render(
            conversations=[messages], chat_template=self.chat_template, add_generation_prompt=True
        )
        return str(rendered[0])


@pytest.mark.parametrize("markup", ["<image>", "<img><IMG_CONTEXT></img>"])
def test_a_template_that_places_images_itself_gets_typed_content(markup: str) -> None:
    placeholder = "<image>" if markup == "<image>" else "<IMG_CONTEXT>"
    template = IMAGES_FIRST_TEMPLATE.replace("<image>", placeholder)
    prompt = chat_template_prompt(markup, TemplateTokenizer(template), placeholder)
    assert prompt.prefix == "<|im_start|>user " + markup * len(VIEWS)
    assert prompt.question.startswith("\nThe six images are the front, front left, front right,")
    assert prompt.question.endswith(
        "back right cameras of the ego vehicle. {question}<|im_end|>\n<|im_start|>assistant\n"
    )

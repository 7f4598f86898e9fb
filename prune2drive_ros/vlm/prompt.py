"""The multi-view driving prompt: a family's template as text, and tokenised once per model.

Every family asks the same question the same way: a fixed prefix (the chat preamble, then one
line per view in :data:`~prune2drive_ros.views.VIEWS` order holding that view's image
placeholder), then the question and the open assistant turn. :class:`PromptTemplate` is that
text; :class:`TokenizedPrompt` is its token ids for one tokenizer, cut at the placeholders so
the kept visual tokens can be spliced in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch

from ..errors import ModelLoadError
from ..views import VIEW_LABELS, VIEWS


@dataclass(frozen=True)
class PromptTemplate:
    """A family's multi-view prompt, as text around the image placeholders.

    ``prefix`` opens the conversation, ``view`` is formatted once per view with ``label`` (from
    :data:`~prune2drive_ros.views.VIEW_LABELS`) and ``image`` (the placeholder token), and
    ``question`` holds one ``{question}`` field followed by the assistant turn. The question
    text is tokenised with special tokens split, so a question cannot inject chat markers or
    image placeholders.
    """

    prefix: str
    view: str
    question: str

    def prefix_text(self, image: str, views: Sequence[str] = VIEWS) -> str:
        """The shared prefix: preamble and one line per view."""
        return self.prefix + "".join(
            self.view.format(label=VIEW_LABELS[name], image=image) for name in views
        )

    def question_parts(self) -> tuple[str, str]:
        """The template text before and after ``{question}``."""
        before, marker, after = self.question.partition("{question}")
        if not marker:
            raise ValueError(f"question template {self.question!r} has no {{question}} field")
        return before, after


#: ChatML's special tokens (Qwen2's chat format), for the tokenizers of Qwen2-based families.
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def chatml_prompt(view: str) -> PromptTemplate:
    """The driving prompt in ChatML, with ``view`` (a :class:`PromptTemplate` view line) per view.

    One system turn and one user turn holding the six views and the question, then the open
    assistant turn: what Qwen2's chat template writes, so every Qwen2-based family asks the
    same question the same way and only the image wrapping in ``view`` differs.
    """
    return PromptTemplate(
        prefix=(
            "<|im_start|>system\nYou are a helpful driving assistant. You see the six surround "
            "cameras of the ego vehicle.<|im_end|>\n<|im_start|>user\n"
        ),
        view=view,
        question="{question}<|im_end|>\n<|im_start|>assistant\n",
    )


class TokenizedPrompt:
    """A :class:`PromptTemplate` tokenised once, on ``device``, for one model's tokenizer.

    Attributes:
        image_token: id of the image placeholder.
        segments: the shared prefix's ids cut at the placeholders (one segment more than views;
            the placeholders themselves are left out, the kept visual tokens go there).

    Raises:
        ModelLoadError: the tokenizer lacks the placeholder or splits it (``model`` and
            ``family`` name the checkpoint in the message).
    """

    def __init__(
        self,
        template: PromptTemplate,
        tokenizer: Any,
        placeholder: str,
        device: torch.device,
        *,
        model: str,
        family: str,
    ) -> None:
        self.tokenizer = tokenizer
        self.device = device
        image_token = tokenizer.convert_tokens_to_ids(placeholder)
        if image_token is None or image_token == tokenizer.unk_token_id:
            raise ModelLoadError(
                f"the tokenizer of {model} has no {placeholder!r} token; "
                f"{family} checkpoints ship it as an added special token"
            )
        ids = self.ids(template.prefix_text(placeholder))
        cuts = (ids == image_token).nonzero().flatten().tolist()
        if len(cuts) != len(VIEWS):
            raise ModelLoadError(
                f"the tokenizer of {model} does not keep {placeholder!r} as one "
                f"token ({len(cuts)} found for {len(VIEWS)} views)"
            )
        bounds = [-1, *cuts, ids.numel()]
        before, after = template.question_parts()
        self.image_token = int(image_token)
        self.segments = [ids[a + 1 : b] for a, b in pairwise(bounds)]
        self._question_before = self.ids(before)
        self._question_after = self.ids(after)

    def ids(self, text: str, *, split_special_tokens: bool = False) -> torch.Tensor:
        """``text`` as ids on the device, without the tokenizer's BOS/EOS."""
        encoded = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=split_special_tokens
        )
        return torch.tensor(encoded["input_ids"], dtype=torch.long, device=self.device)

    def question_ids(self, question: str) -> torch.Tensor:
        """The question turn's ids: template text around ``question`` (its special tokens split)."""
        asked = self.ids(question, split_special_tokens=True)
        return torch.cat([self._question_before, asked, self._question_after])

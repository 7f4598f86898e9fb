"""A prompt tokenised once per model, cut at the image placeholders.

:class:`~prune2drive_ros.prompts.PromptTemplate` is the text (which one follows the checkpoint:
see :mod:`~prune2drive_ros.prompts`); :class:`TokenizedPrompt` is its token ids for one
tokenizer: the shared prefix cut at the placeholders so the kept visual tokens can be spliced in
between, and the question turn tokenised per question.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

import torch

from ..errors import ModelLoadError
from ..prompts import PromptTemplate


class TokenizedPrompt:
    """A :class:`PromptTemplate` tokenised once, on ``device``, for one model's tokenizer.

    Attributes:
        template: the text this was tokenised from.
        image_token: id of the image placeholder.
        segments: the shared prefix's ids cut at the placeholders (one segment more than
            images; the placeholders themselves are left out, the visual tokens go there).

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
        self.template = template
        self.tokenizer = tokenizer
        self.device = device
        image_token = tokenizer.convert_tokens_to_ids(placeholder)
        if image_token is None or image_token == tokenizer.unk_token_id:
            raise ModelLoadError(
                f"the tokenizer of {model} has no {placeholder!r} token; "
                f"{family} checkpoints ship it as an added special token"
            )
        ids = self.ids(template.prefix)
        cuts = (ids == image_token).nonzero().flatten().tolist()
        if len(cuts) != template.images:
            raise ModelLoadError(
                f"the tokenizer of {model} does not keep {placeholder!r} as one "
                f"token ({len(cuts)} found for {template.images} images)"
            )
        bounds = [-1, *cuts, ids.numel()]
        self.image_token = int(image_token)
        self.segments = [ids[a + 1 : b] for a, b in pairwise(bounds)]
        # The question is tokenised together with the plain text around it, as the original
        # prompts tokenise one string: BPE merges across "vehicle. What" as it would there.
        # Only the text beyond the nearest added token on either side is tokenised apart.
        before, after = template.question_parts()
        added = sorted(getattr(tokenizer, "added_tokens_encoder", {}), key=len, reverse=True)
        marker = re.compile("|".join(re.escape(token) for token in added)) if added else None
        head, self._lead = _split_last(before, marker)
        self._trail, tail = _split_first(after, marker)
        self._question_before = self.ids(head)
        self._question_after = self.ids(tail)

    def ids(self, text: str, *, split_special_tokens: bool = False) -> torch.Tensor:
        """``text`` as ids on the device, without the tokenizer's BOS/EOS."""
        encoded = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=split_special_tokens
        )
        return torch.tensor(encoded["input_ids"], dtype=torch.long, device=self.device)

    def question_ids(self, question: str) -> torch.Tensor:
        """The question turn's ids: the template around ``question``, whose own special tokens
        are split so that a question cannot inject chat markers or image placeholders."""
        asked = self.ids(self._lead + question + self._trail, split_special_tokens=True)
        return torch.cat([self._question_before, asked, self._question_after])


def _split_last(text: str, marker: re.Pattern[str] | None) -> tuple[str, str]:
    """``text`` cut after its last added token: (up to it, plain text after it)."""
    ends = [m.end() for m in marker.finditer(text)] if marker else []
    cut = ends[-1] if ends else 0
    return text[:cut], text[cut:]


def _split_first(text: str, marker: re.Pattern[str] | None) -> tuple[str, str]:
    """``text`` cut before its first added token: (plain text before it, from it on)."""
    found = marker.search(text) if marker else None
    cut = found.start() if found else len(text)
    return text[:cut], text[cut:]

"""A slow SentencePiece tokenizer (``tokenizer.model`` + added tokens) -> a fast tokenizer.

Original checkpoints of the InternLM2 / Llama-2 lineage ship only ``tokenizer.model`` and a
remote-code slow tokenizer class. The package loads tokenizers with ``AutoTokenizer`` and no
remote code, so conversion writes a ``tokenizer.json``. The model part is built by transformers'
own converter machinery (:meth:`SpmConverter.build_tokenizer_from_spm_proto`), which follows the
SentencePiece model's normalizer settings, so that a text chunk encodes as
``SentencePieceProcessor.encode`` does; the tokenizer's added tokens then keep their ids, and are
split off before the model sees the text, as the slow tokenizer does.

Reading ``tokenizer.model`` needs ``protobuf`` (the ``convert`` extra of the package).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, processors

from ...errors import ConversionError

#: SentencePiece's model types (ModelProto.TrainerSpec.ModelType).
_BPE = 2


def fast_from_sentencepiece(
    model_file: Path,
    added_tokens: Mapping[int, Mapping[str, Any]],
    *,
    bos_token: str | None,
    add_bos_token: bool,
) -> Tokenizer:
    """The fast tokenizer of the BPE SentencePiece model ``model_file``.

    Args:
        model_file: the ``tokenizer.model``.
        added_tokens: id -> ``added_tokens_decoder`` entry (``content``, ``special``, ``lstrip``,
            ``rstrip``, ``single_word``) as ``tokenizer_config.json`` writes them. Ids inside the
            SentencePiece vocabulary rename that piece; the others must follow it without gaps.
        bos_token, add_bos_token: the slow tokenizer's BOS handling, as a post-processor.

    Raises:
        ConversionError: protobuf is not installed, the model is not BPE, or added token ids
            leave gaps (they would get other ids in the fast tokenizer).
    """
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    try:
        proto = import_protobuf().ModelProto()
    except ImportError:
        raise ConversionError(
            "reading a SentencePiece tokenizer.model needs protobuf; install it with "
            "`pip install protobuf` (or `pip install prune2drive_ros[convert]`)"
        ) from None
    proto.ParseFromString(model_file.read_bytes())
    if proto.trainer_spec.model_type != _BPE:
        raise ConversionError(
            f"{model_file} is a SentencePiece model of type {proto.trainer_spec.model_type}, not "
            "BPE (2); only BPE tokenizers (InternLM2, Llama-2) are converted"
        )
    size = len(proto.pieces)
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    for index, entry in added_tokens.items():
        if index < size and proto.pieces[index].piece != entry["content"]:
            del vocab[proto.pieces[index].piece]
            vocab[str(entry["content"])] = index
    tokenizer = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    tokenizer.add_special_tokens(
        [
            AddedToken(
                str(entry["content"]),
                special=bool(entry.get("special", True)),
                normalized=bool(entry.get("normalized", False)),
                lstrip=bool(entry.get("lstrip", False)),
                rstrip=bool(entry.get("rstrip", False)),
                single_word=bool(entry.get("single_word", False)),
            )
            for _, entry in sorted(added_tokens.items())
        ]
    )
    for index, entry in sorted(added_tokens.items()):
        got = tokenizer.token_to_id(str(entry["content"]))
        if got != index:
            raise ConversionError(
                f"added token {entry['content']!r} has id {index} in the tokenizer config but "
                f"would get {got} in the fast tokenizer (SentencePiece vocabulary of {size}: "
                "added ids past it must follow it without gaps); fix tokenizer_config.json"
            )
    if add_bos_token and bos_token is not None:
        bos_id = tokenizer.token_to_id(bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A",
            pair=f"{bos_token} $A $B:1",
            special_tokens=[(bos_token, bos_id)],
        )
    return tokenizer

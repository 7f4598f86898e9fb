"""On-disk cache of per-view visual tokens and unpruned answers, so a study encodes each frame once.

A trial only changes the retention rates, and pruning happens after the projector, so the
vision encoder's output for a frame is the same in every trial of every study on the same model.
It is computed once and kept in ``cache_dir()/features/<model key>/<frame key>.safetensors``:

* the **model key** (:func:`model_key`) hashes what the tokens depend on: the checkpoint (path
  or hub id, and for a local folder the size and modification time of every file in it), the
  model config, the family, dtype, device type, encoder input size, resize mode and pixel
  normalisation. A
  retrained checkpoint at the same path, another dtype or another preprocessing never reads old
  tokens.
* the **frame key** comes from the validation source (:attr:`~.sources.Frame.key`: bag path,
  bag files' sizes and times, topics and frame stamp; or the six image files' paths, sizes and
  times).

Both keys are *stamps*, not contents: they invalidate the cache whenever a file may have
changed, without reading it, and a needless miss costs only an encoder call. A study is named
by *content* instead (:func:`model_content_key` and
:attr:`~.sources.ValidationSet.identity`): a study's name must be the same for the same model
and data on every machine and after every ``touch``, or resuming and sharing it break, and it
leaves the device out (a GPU and a CPU worker may score one objective; their tokens still
differ in the last bits, so the cache keeps them apart).

Entries are written to a temporary file and renamed into place, so parallel workers never read
half an entry; an entry that still cannot be read (truncated by a full disk, edited by hand, of
the wrong shape) is logged, recomputed and rewritten, never a crash. The header of an entry
(names, shapes, offsets) can be intact while its tensor bytes are not (a flipped bit on disk, a
partial overwrite): each entry therefore carries the CRC-32 of its tensor bytes in the
safetensors metadata, checked on every read. CRC-32 detects accidental damage, not tampering,
and costs next to nothing beside the minutes a trial spends in the language model (see
BENCHMARKS.md).

The unpruned model's answers to the validation questions (the reference of the fidelity reward
and the "none" row of ``eval``) are cached beside the tokens, per frame and answer length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..cache import features_dir
from ..engine import Engine
from ..files import write_atomically, write_text_atomically
from ..progress import NO_PROGRESS, Progress
from ..quantization import NO_QUANTIZATION
from ..views import VIEWS
from ..vlm import DrivingVLM
from .sources import Frame, content_digest, decode_frame, digest, file_stamp

logger = logging.getLogger(__name__)

#: Checkpoint files whose whole content names the model (configs, tokenizer, chat template).
_TEXT_SUFFIXES = frozenset({".json", ".txt", ".model", ".jinja", ".tiktoken"})
#: Weight files, named by size and the SHA-256 of their first and last :data:`_WEIGHT_SAMPLE`
#: bytes: reading a 15 GB checkpoint whole would cost a minute per run, while retraining
#: changes every tensor and so both ends (the header with every tensor's shape and offset is
#: at the start of a safetensors file).
_WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".gguf"})
_WEIGHT_SAMPLE = 1 << 20
#: Bump when the layout of cache entries changes; old entries are then never read.
FEATURES_FORMAT = "2"
_TENSOR = "visual"
_CHECKSUM = "crc32"
# What reading a damaged entry raises: safetensors' own error for a bad header or a short file,
# OSError for unreadable files, ValueError/KeyError for entries that parse but do not fit.
_READ_ERRORS = (SafetensorError, OSError, ValueError, KeyError, RuntimeError)


def model_identity(vlm: DrivingVLM) -> dict[str, object]:
    """Everything the visual tokens of ``vlm`` depend on (see the module docstring)."""
    source = Path(vlm.name).expanduser()
    checkpoint: object = file_stamp(source) if source.is_dir() else vlm.name
    return {
        "format": FEATURES_FORMAT,
        "checkpoint": checkpoint,
        "family": vlm.family,
        "config": vlm.model.config.to_dict(),
        "dtype": str(vlm.dtype),
        "device": vlm.device.type,
        "image_size": list(vlm.image_size),
        "image_resize": vlm.image_resize,
        "normalization": [vlm.normalization.mean, vlm.normalization.std, vlm.normalization.rescale],
    }


def model_key(vlm: DrivingVLM) -> str:
    """Short hex digest of :func:`model_identity`: the cache folder of ``vlm``'s tokens."""
    return digest(model_identity(vlm))


def model_content_key(vlm: DrivingVLM) -> str:
    """Short hex digest of what ``vlm`` is, by content, for study names (see the module doc).

    The checkpoint's files (:func:`checkpoint_content`), the adapter family, the dtype and a
    quantisation of the language model: the same on every machine and in every folder,
    unchanged by a ``touch``, and not the device. (Unquantised models keep the key they had
    before quantisation existed, so their studies resume.)
    """
    quantized = vlm.quantization.scheme != NO_QUANTIZATION
    return digest(
        checkpoint_content(vlm.name),
        vlm.family,
        str(vlm.dtype),
        *([vlm.quantization.scheme] if quantized else []),
    )


def checkpoint_content(name: str) -> object:
    """The files of checkpoint ``name`` (a folder, or a hub id in the local hub cache) by
    content: text files (config, tokenizer, templates) by SHA-256, weight files by size and
    sampled bytes (see :data:`_WEIGHT_SUFFIXES`); other files (README, licence, hidden
    folders) do not take part. A hub id that is not in the local cache is named by the id."""
    folder = _checkpoint_folder(name)
    if folder is None:
        return name
    files: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix in _TEXT_SUFFIXES:
            files[path.name] = content_digest(path)
        elif path.suffix in _WEIGHT_SUFFIXES:
            files[path.name] = _weights_fingerprint(path)
    return files


def _checkpoint_folder(name: str) -> Path | None:
    """The folder ``name`` was loaded from: itself, or the hub cache's snapshot of the id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    cached = try_to_load_from_cache(name, "config.json")
    return Path(cached).parent if isinstance(cached, str) else None


def _weights_fingerprint(path: Path) -> list[object]:
    size = path.stat().st_size
    sampled = hashlib.sha256()
    with path.open("rb") as stream:
        sampled.update(stream.read(_WEIGHT_SAMPLE))
        stream.seek(max(_WEIGHT_SAMPLE, size - _WEIGHT_SAMPLE))
        sampled.update(stream.read())
    return [size, sampled.hexdigest()]


class FeatureCache:
    """Visual tokens and unpruned answers of ``vlm`` for validation frames, on disk.

    Attributes:
        folder: ``<root>/<model key>``.
        encoder_calls: frames encoded by this object (cache misses and recomputed entries).
        recomputed: entries that existed but could not be read.
    """

    def __init__(self, vlm: DrivingVLM, root: str | Path | None = None) -> None:
        self.vlm = vlm
        self.key = model_key(vlm)
        self.folder = Path(root) if root is not None else features_dir()
        self.folder = self.folder / self.key
        self.encoder_calls = 0
        self.recomputed = 0

    # ------------------------------------------------------------------ visual tokens

    def path(self, frame: Frame) -> Path:
        """Where the tokens of ``frame`` are kept."""
        return self.folder / f"{frame.key}.safetensors"

    def visual(self, frame: Frame) -> torch.Tensor:
        """Tokens ``[V, tokens_per_view, D]`` of ``frame`` on the model's device.

        Read from the cache, or encoded (and cached) when missing or unusable.
        """
        cached = self._cached(frame)
        return self._encode(frame) if cached is None else cached.to(self.vlm.device)

    def prepare(self, frames: Sequence[Frame], *, progress: Progress = NO_PROGRESS) -> None:
        """Make sure every frame's tokens are cached; the only place a study runs the encoder.

        Entries already cached are only checked, not moved onto the device.
        """
        with progress(total=len(frames), desc="visual tokens", unit="frame") as bar:
            for frame in frames:
                if self._cached(frame) is None:
                    self._encode(frame)
                bar.update()

    def _cached(self, frame: Frame) -> torch.Tensor | None:
        """The cached tokens of ``frame`` on the CPU, checked; None when there are none or they
        cannot be used (logged and counted in :attr:`recomputed`)."""
        path = self.path(frame)
        if not path.exists():
            return None
        try:
            return self._read(path)
        except _READ_ERRORS as exc:
            self.recomputed += 1
            logger.warning(
                "feature cache entry %s of %s cannot be used (%s); encoding the frame again",
                path,
                frame.label,
                exc,
            )
            return None

    def _read(self, path: Path) -> torch.Tensor:
        with safe_open(path, framework="pt", device="cpu") as entry:
            stored = (entry.metadata() or {}).get(_CHECKSUM)
            visual = entry.get_tensor(_TENSOR)
        expected = (len(VIEWS), self.vlm.tokens_per_view)
        if tuple(visual.shape[:2]) != expected or visual.dim() != 3:
            raise ValueError(
                f"shape {tuple(visual.shape)}, expected [{expected[0]}, {expected[1]}, D]"
            )
        if visual.dtype != self.vlm.dtype:
            raise ValueError(f"dtype {visual.dtype}, expected {self.vlm.dtype}")
        if stored != checksum(visual):
            raise ValueError("the tensor bytes do not match the checksum they were written with")
        return visual

    def _encode(self, frame: Frame) -> torch.Tensor:
        path = self.path(frame)
        vlm = self.vlm
        images = decode_frame(frame.read(), vlm.image_size, vlm.pad_color, vlm.image_resize)
        visual = self.vlm.encode_views(self.vlm.preprocess(images))
        self.encoder_calls += 1
        stored = visual.contiguous().cpu()
        metadata = {
            "format": FEATURES_FORMAT,
            "model": self.key,
            "frame": frame.key,
            _CHECKSUM: checksum(stored),
        }
        write_atomically(path, lambda tmp: save_file({_TENSOR: stored}, tmp, metadata=metadata))
        logger.debug("encoded %s into %s", frame.label, path)
        return visual

    # ------------------------------------------------------------------ unpruned answers

    def unpruned_answers(self, frame: Frame, questions: Sequence[str], engine: Engine) -> list[str]:
        """The unpruned answers of ``engine`` (its model, every token kept, its answer length)
        to ``questions`` about ``frame`` (cached).

        Questions already answered at this answer length by the same quantisation of the
        language model are read back; the others are answered and added to the entry. (The
        visual tokens do not depend on it: the vision tower is never quantised.)
        """
        scheme = engine.vlm.quantization.scheme
        quantized = "" if scheme == NO_QUANTIZATION else f"-{scheme}"
        path = self.folder / f"{frame.key}.unpruned-{engine.max_new_tokens}{quantized}.json"
        known = self._read_answers(path)
        missing = [q for q in dict.fromkeys(questions) if q not in known]
        if missing:
            generations, _ = engine.answer_encoded(
                self.visual(frame), missing, budgets=engine.full_budgets
            )
            known.update({g.question: g.text for g in generations})
            text = json.dumps(known, ensure_ascii=False, indent=0)
            write_text_atomically(path, text)
        return [known[q] for q in questions]

    def _read_answers(self, path: Path) -> dict[str, str]:
        if not path.exists():
            return {}
        try:
            answers = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(answers, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in answers.items()
            ):
                return answers
            raise ValueError("not a mapping of question to answer")
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.recomputed += 1
            logger.warning("unpruned answers %s cannot be used (%s); answering again", path, exc)
            return {}


def checksum(tensor: torch.Tensor) -> str:
    """CRC-32 of the bytes of a CPU tensor, as 8 hex digits (read in place, not copied)."""
    raw = tensor.contiguous().view(torch.uint8).numpy().data
    return f"{zlib.crc32(raw):08x}"

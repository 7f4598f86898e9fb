"""Per-stage wall-clock times of one answer, without importing torch.

The model adapter fills the stages it runs, the engine the rest; the node, its diagnostics
(:mod:`~prune2drive_ros.serving.stats`, tested without torch) and ``prune2drive replay`` read
the fields by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass
class Timings:
    """Wall-clock milliseconds per stage, in pipeline order (CUDA work is synchronised before
    each reading).

    Attributes:
        decode: the six camera messages to RGB arrays.
        encode: vision tower and projector.
        prune: the pruner's selection.
        prefill: the shared prefix once plus every question turn.
        generate: the decoding steps of every question.
        total: the whole call, measured on its own (more than the sum: it includes the work
            between the stages); 0 until the caller that times the whole call sets it.
    """

    decode: float = 0.0
    encode: float = 0.0
    prune: float = 0.0
    prefill: float = 0.0
    generate: float = 0.0
    total: float = 0.0

    @property
    def model_ttft(self) -> float:
        """The model's stages before the first token (encode, prune, prefill): what a latency
        cost model predicts from the tokens kept."""
        return self.encode + self.prune + self.prefill

    @property
    def ttft(self) -> float:
        """Time to the first token, the queue aside: the image decode and :attr:`model_ttft`."""
        return self.decode + self.model_ttft

    @classmethod
    def stages(cls) -> tuple[str, ...]:
        """The stage names, in pipeline order (``total`` last)."""
        return tuple(f.name for f in fields(cls))

    def rounded(self, digits: int = 3) -> Timings:
        """A copy with every stage rounded to ``digits`` decimals (what an answer reports)."""
        return replace(self, **{k: round(v, digits) for k, v in asdict(self).items()})

    def as_dict(self) -> dict[str, float]:
        """Stage -> milliseconds, in pipeline order."""
        return asdict(self)

"""Batched T-FPS: greedy farthest point selection of visual tokens in every view at once.

Prune2Drive keeps, per camera view, the tokens that a greedy max-min (farthest point) walk over
the token features visits first: start at one token, then repeatedly add the token farthest
from everything kept so far. This is Gonzalez' greedy k-center algorithm, so for any metric that
obeys the triangle inequality (l2, l1) the covering radius of the kept set is at most twice the
optimal one; cosine distance does not obey it strictly, which is why the bound is tested on l2
and l1 only.

Why this implementation is shaped the way it is:

* The default start (the most isolated token, as in the reference code) needs every pairwise
  distance anyway, so the ``[views, tokens, tokens]`` distance matrix is computed once, by
  batched matmuls that skip the mirrored quarter of the symmetric product (:func:`gram`). Each
  greedy step is then a gather of one row per view, a running minimum and an argmax:
  O(views * tokens), with no host synchronisation and no Python branching on tensor values, so
  on a GPU the whole loop is queued without stalls. The one sync is the finiteness check's,
  read after everything is queued.
* All views walk in the same loop; a view whose budget is reached keeps walking but its extra
  picks are discarded when the result is built (masking at the end is cheaper than masking
  every step).
* An incremental variant (no matrix: one matrix-vector product per step against the new
  token) could serve the "first"/"random" starts. Measured against this code it lost except
  in one case (see BENCHMARKS.md). Its k matrix-vector products re-read all features every
  step (memory bound) while the one symmetric matmul below is compute bound, and on a GPU
  each step would add kernel launches. So there is one code path, the full matrix.
* Distances are computed in float32 (or float64 for float64 input) whatever the token dtype,
  so that bf16/fp16 tokens select the same tokens as their float32 upcast.
* Ties go to the lowest index (``torch.argmax`` returns the first maximum), as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import PruningInputError
from .budget import check_budgets, check_counts
from .registry import METRICS
from .selection import Selection, patch_grid, real_tokens
from .sharing import check_share, share_bounds, share_total

STARTS: tuple[str, ...] = ("isolated", "first", "random")


def check_tokens(
    tokens: torch.Tensor, budgets: Sequence[int], counts: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Validate a pruner's input (shape, dtype, budgets, real tokens per view ``counts``) and
    return the budgets as ints.

    Values are not looked at here (see :func:`require_finite`): reading them back from a GPU
    is a host synchronisation, which each pruner places where it costs least.

    Raises:
        PruningInputError: not a ``[views, tokens, dim]`` floating-point tensor, or empty.
        BudgetError: wrong number of budgets, or a budget outside ``[1, tokens]``.
    """
    if not isinstance(tokens, torch.Tensor):
        raise PruningInputError(f"tokens must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() != 3:
        raise PruningInputError(
            f"tokens must have shape [views, tokens, dim], got {tuple(tokens.shape)} "
            f"({tokens.dim()} dimensions)"
        )
    if not tokens.is_floating_point():
        raise PruningInputError(f"tokens must be floating point, got {tokens.dtype}")
    views, count, dim = tokens.shape
    for name, size in (("views", views), ("tokens", count), ("dim", dim)):
        if size == 0:
            raise PruningInputError(
                f"tokens of shape {tuple(tokens.shape)} are empty: {name} is 0; "
                "a pruner needs at least one view, one token per view and one feature"
            )
    return check_budgets(budgets, views, count, counts)


def upcast(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens`` in the dtype the distance math runs in: float32, or float64 if given float64.

    bf16/fp16 tokens are converted once, up front, so that ties come out the same as for their
    float32 upcast and so that no later step pays for the conversion again.
    """
    return tokens.to(torch.promote_types(tokens.dtype, torch.float32))


def all_finite(tokens: torch.Tensor) -> torch.Tensor:
    """A 0-d bool tensor, True unless ``tokens`` hold NaN or inf (not read back: no sync).

    Checks each token's feature sum rather than every element: NaN and inf survive a sum, and
    one reduction is more than ten times cheaper on the CPU than ``torch.isfinite(tokens)``'s
    elementwise passes. The price is a false alarm for a token whose feature sum overflows,
    which only values near the float32 limit do, and those would break the distances anyway.
    The sum runs in the tokens' dtype (a conversion would cost as much as the whole check)
    unless that overflows before float32 does (fp16).
    """
    narrow = torch.finfo(tokens.dtype).max < torch.finfo(torch.float32).max
    return torch.isfinite(tokens.sum(dim=-1, dtype=torch.float32 if narrow else None)).all()


def require_finite(finite: torch.Tensor) -> None:
    """Raise unless the flag from :func:`all_finite` is true.

    Takes the flag rather than the tokens so that a caller can queue the check early and read
    it late, after the rest of its GPU work has been queued.
    """
    if not bool(finite):
        raise PruningInputError(
            "tokens contain NaN or inf (or values so large that their sum overflows); check "
            "the encoder output (a half-precision overflow is the usual cause)"
        )


#: Below this many tokens per view the Gram matrix is one plain matmul (blocking buys nothing).
SYMMETRIC_FROM = 128


def gram(x: torch.Tensor) -> torch.Tensor:
    """``x @ x^T`` per view, ``[views, N, dim]`` -> ``[views, N, N]``, with 3/4 of the FLOPs.

    The product is symmetric, and it is nearly the whole cost of T-FPS on a CPU, so it is
    computed in blocks of the split ``N = h + (N - h)``: the top ``h`` rows against every token,
    the bottom-right square, and the bottom-left block copied from the top-right one transposed.
    That is 3/4 of the FLOPs of one full matmul and less time (see BENCHMARKS.md). The result
    is exactly symmetric.
    """
    views, count, _ = x.shape
    if count < SYMMETRIC_FROM:
        return torch.bmm(x, x.transpose(1, 2))
    half = count // 2
    out = torch.empty(views, count, count, dtype=x.dtype, device=x.device)
    torch.bmm(x[:, :half], x.transpose(1, 2), out=out[:, :half])
    out[:, half:, :half] = out[:, :half, half:].transpose(1, 2)
    torch.bmm(x[:, half:], x[:, half:].transpose(1, 2), out=out[:, half:, half:])
    return out


def pairwise_distances(tokens: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """Distances between all tokens of each view: ``[views, tokens, dim]`` -> ``[views, N, N]``.

    Computed in float32 (float64 stays float64). ``cosine`` is ``1 - <x/|x|, y/|y|>`` as in the
    reference code (a zero token is at distance 1 from everything); ``l2`` is the *squared*
    Euclidean distance from the Gram identity, clamped at 0 (farthest point selection only
    compares distances and squaring is monotone, so the selection is the same and a square root
    over the whole matrix is saved); ``l1`` uses ``torch.cdist``, which has no matmul form and
    is much slower on large ``dim``.

    Raises:
        ValueError: unknown metric.
    """
    x = upcast(tokens)
    if metric == "cosine":
        # The Gram matrix of the raw tokens scaled by inverse norms: equal to the reference's
        # Gram of normalised tokens up to rounding, but scaling N x N products instead of
        # dividing N x dim features is 3 % instead of 15 % of the time at dim 3584.
        inverse = torch.linalg.vector_norm(x, dim=-1).clamp_min_(1e-12).reciprocal_()
        product = gram(x).mul_(inverse.unsqueeze(2)).mul_(inverse.unsqueeze(1))
        return product.neg_().add_(1.0)
    if metric == "l2":
        squared = x.square().sum(dim=-1)
        norms = squared.unsqueeze(2) + squared.unsqueeze(1)
        return norms.sub_(gram(x), alpha=2.0).clamp_min_(0.0)
    if metric == "l1":
        return torch.cdist(x, x, p=1.0)
    raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")


def image_distances(grid: tuple[int, int] | None, count: int, device: torch.device) -> torch.Tensor:
    """``[N, N]`` distances between the centres of a view's ``grid`` patches (see
    :func:`patch_grid`), in units of the image diagonal (0 to 1), for the coverage term of
    :func:`tfps`.

    Raises:
        PruningInputError: a grid that does not hold the ``count`` tokens.
    """
    rows, cols = patch_grid(count, grid)
    r, c = torch.meshgrid(
        (torch.arange(rows, device=device) + 0.5) / rows,
        (torch.arange(cols, device=device) + 0.5) / cols,
        indexing="ij",
    )
    centres = torch.stack([r.flatten(), c.flatten()], dim=1)
    return torch.cdist(centres, centres).div_(2**0.5)


def _walk_scores(dist: torch.Tensor, walk: torch.Tensor) -> torch.Tensor:
    """``[views, steps]``: each pick's distance to the picks before it (+inf for the first),
    the running minimum the walk read when it chose that pick.

    Recomputed after the loop from the ``steps x steps`` distances among the picks, in the
    loop's own orientation (row of the earlier pick), so the values are the loop's exactly and
    the loop itself stays as lean as plain T-FPS's.
    """
    views, steps = walk.shape
    rows = dist.gather(1, walk.unsqueeze(2).expand(views, steps, dist.shape[2]))
    among = rows.gather(2, walk.unsqueeze(1).expand(views, steps, steps))  # [v, earlier, later]
    later = torch.ones(steps, steps, dtype=torch.bool, device=walk.device).triu_(1)
    return among.masked_fill_(~later, float("inf")).amin(dim=1)


def _rows(dist: torch.Tensor, picked: torch.Tensor) -> torch.Tensor:
    """Row ``picked[v]`` of ``dist[v]`` for every view: ``[views, N]``."""
    views, count, _ = dist.shape
    return dist.gather(1, picked.view(views, 1, 1).expand(views, 1, count)).squeeze(1)


def _to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small host tensor to ``device`` without waiting for the work queued there.

    A plain host-to-GPU copy synchronises the stream, so it would wait for the encoder's
    queued kernels; a copy from pinned memory with ``non_blocking`` is queued like a kernel.
    """
    if device.type == "cuda":
        return values.pin_memory().to(device, non_blocking=True)
    return values.to(device)


def _fixed_start(
    start: str, views: int, count: int, seed: int, device: torch.device, counts: Sequence[int]
) -> torch.Tensor | None:
    """First token of each view for the starts that need no distances; None for "isolated"."""
    if start == "first":
        return torch.zeros(views, dtype=torch.long, device=device)
    if start == "random":
        generator = torch.Generator().manual_seed(seed)
        picks = torch.randint(count, (views,), generator=generator)
        return _to_device(picks % torch.tensor(list(counts)), device)  # a real token
    return None


@torch.no_grad()
def tfps(
    tokens: torch.Tensor,
    budgets: Sequence[int],
    *,
    seed: int = 0,
    grid: tuple[int, int] | None = None,
    counts: Sequence[int] | None = None,
    metric: str = "cosine",
    start: str = "isolated",
    share: float = 0.0,
    cover: float = 0.0,
) -> Selection:
    """Keep ``budgets[v]`` tokens of view ``v`` by greedy farthest point selection.

    Args:
        tokens: ``[views, tokens, dim]``, any floating dtype, CPU or CUDA.
        budgets: tokens to keep per view, each in ``[1, tokens]``.
        seed: seeds the ``"random"`` start; ignored by the deterministic starts.
        grid: the views' patch grid; only the coverage term looks at it (plain T-FPS looks at
            token content, not position).
        counts: real tokens per view, the rest padding (views of different sizes); each view
            gets the picks it would get alone. None: every token is real.
        metric: ``"cosine"`` (the paper's), ``"l2"`` or ``"l1"``.
        start: ``"isolated"`` (the paper's: largest nearest-neighbour distance), ``"first"``
            (token 0) or ``"random"``.
        share: 0 (the paper's) keeps ``budgets`` as given; in (0, 1) the views share their
            total by content, each keeping between ``1 - share`` and ``1 + share`` times its
            budget (:mod:`~prune2drive_ros.pruning.sharing`).
        cover: 0 (the paper's) measures distances between features alone; above 0 each
            distance also counts how far apart the two patches lie on the image, ``cover``
            times the view's mean feature distance per image diagonal. Farthest point
            sampling then covers the image as well as the features, so a large uniform object
            (a bus side, all patches alike, one pick for plain T-FPS) keeps tokens across its
            extent, while distinct details still win by their feature distance.

    Returns:
        The kept tokens of each view in original order (with ``share``, the budgets it chose).

    Raises:
        PruningInputError: malformed, empty or non-finite tokens, or a coverage term without
            the views' patch grid.
        BudgetError: budgets that do not fit the tokens, or a share outside [0, 1).
        ValueError: unknown metric or start, or a negative cover.
    """
    budgets = check_tokens(tokens, budgets, counts)
    share = check_share(share)
    if not cover >= 0.0:
        raise ValueError(f"cover must be >= 0 (0: plain T-FPS), got {cover}")
    if cover > 0 and counts is not None:
        raise PruningInputError(
            "the coverage term needs each view's patch grid; stitched views (the drivelmm_o1 "
            "prompt) have none: use tfps or tfps_shared there"
        )
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; expected one of {', '.join(STARTS)}")
    views, count, _ = tokens.shape
    device = tokens.device
    floors, ceilings = share_bounds(budgets, check_counts(counts, views, count), share)
    real = real_tokens(counts, views, count, device)
    picked = _fixed_start(start, views, count, seed, device, counts or (count,) * views)
    x = upcast(tokens)
    # Queued now, read once at the very end: the call's only host synchronisation.
    finite = all_finite(x)

    dist = pairwise_distances(x, metric)
    diagonal = dist.diagonal(dim1=1, dim2=2)
    if cover > 0:
        scale = dist.mean(dim=(1, 2), keepdim=True).mul_(cover)
        dist.add_(image_distances(grid, count, device).mul(scale))
    if real is not None:
        # Padding is nobody's neighbour (its rows and columns +inf), and never picked (below).
        dist.masked_fill_(~real.unsqueeze(1), float("inf"))
        dist.masked_fill_(~real.unsqueeze(2), float("inf"))
    if picked is None:
        # Most isolated token: largest nearest-neighbour distance, a token not being its own.
        # Two tokens that are each other's nearest neighbour are exactly as isolated; the
        # minimum over row and column makes that tie exact whatever rounding made d[i, j] and
        # d[j, i] differ, so it goes to the lower index here and in the reference alike.
        diagonal.fill_(float("inf"))
        isolation = torch.minimum(dist.amin(dim=2), dist.amin(dim=1))
        if real is not None:
            isolation.masked_fill_(~real, float("-inf"))
        picked = isolation.argmax(dim=1)
    # From here on a -inf diagonal makes the running minimum of a kept token -inf, so it is
    # never picked again and needs no separate mask.
    diagonal.fill_(float("-inf"))

    nearest = torch.full((views, count), float("inf"), dtype=dist.dtype, device=device)
    if real is not None:
        nearest.masked_fill_(~real, float("-inf"))  # a running minimum of -inf: never picked
    order = [picked]
    for _ in range(max(ceilings) - 1):
        torch.minimum(nearest, _rows(dist, picked), out=nearest)
        picked = nearest.argmax(dim=1)
        order.append(picked)
    walk = torch.stack(order, dim=1)

    if share:
        kept = share_total(_walk_scores(dist, walk), budgets, floors, ceilings)
        limit = kept.unsqueeze(1)
        budgets = tuple(int(k) for k in kept.tolist())
    else:
        limit = _to_device(torch.tensor(budgets), device).unsqueeze(1)
    # Picks past a view's budget are sent to a spare column that is cut off afterwards.
    step = torch.arange(walk.shape[1], device=device)
    slots = torch.where(step < limit, walk, count)
    mask = torch.zeros(views, count + 1, dtype=torch.bool, device=device)
    mask = mask.scatter_(1, slots, True)[:, :count].contiguous()
    ordered = slots.sort(dim=1).values[:, : max(budgets)]  # a shared walk went further
    indices = torch.where(ordered == count, -1, ordered)
    require_finite(finite)
    return Selection(indices=indices, mask=mask, budgets=budgets)


#: The budget share of :func:`tfps_shared` and the coverage weight of :func:`tfps_cover`.
SHARED_SHARE = 0.5
COVER_WEIGHT = 0.5


def tfps_shared(tokens: torch.Tensor, budgets: Sequence[int], **options: Any) -> Selection:
    """T-FPS whose views share their total budget by content (``share`` 0.5): each view keeps
    between half and 1.5 times its budget, the frame set's total unchanged."""
    return tfps(tokens, budgets, share=SHARED_SHARE, **options)


def tfps_cover(tokens: torch.Tensor, budgets: Sequence[int], **options: Any) -> Selection:
    """T-FPS with the coverage term (``cover`` 0.5), so a large uniform object keeps tokens
    across its extent."""
    return tfps(tokens, budgets, cover=COVER_WEIGHT, **options)

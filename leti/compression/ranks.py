"""Rank selection for low-rank compression: EVBMF extreme ranks, MUSCO's weakened rank, fixed ratios.

Kernels use Keras layouts: Conv2D ``(kh, kw, c_in, c_out)``, Dense ``(c_in, c_out)``. A compression ratio is
``original weights / factor weights`` (> 1); biases are left out of both counts because a decomposition keeps the
original bias unchanged on its last layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from leti.compression.evbmf import evbmf
from leti.errors import LetiError

__all__ = [
    "MIN_RANK_TO_COMPRESS",
    "extreme_ranks",
    "extreme_rank_dense",
    "weakened_rank",
    "weakened_tucker2_ranks",
    "tucker2_params",
    "cp_params",
    "svd_params",
    "tucker2_ranks_for_ratio",
    "cp_rank_for_ratio",
    "svd_rank_for_ratio",
    "ranks_for_ratio",
]

# MUSCO leaves layers alone once their rank is this small: further cuts save little and cost accuracy.
MIN_RANK_TO_COMPRESS = 21


def _as_kernel(kernel: np.ndarray, ndim: int, field: str = "kernel") -> np.ndarray:
    k = np.asarray(kernel)
    if k.ndim != ndim or min(k.shape) < 1:
        raise LetiError(f"must be a non-empty {ndim}-D array, got shape {k.shape}", field=field)
    if not np.issubdtype(k.dtype, np.number) or np.iscomplexobj(k) or not np.all(np.isfinite(k)):
        raise LetiError("must hold finite real numbers", field=field)
    return k.astype(np.float64)


def _check_int(value: object, field: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise LetiError(f"must be an integer >= {minimum}, got {value!r}", field=field)
    return int(value)


def extreme_ranks(kernel: np.ndarray) -> tuple[int, int]:
    """EVBMF ranks ``(R_in_extr, R_out_extr)`` of a conv kernel ``(kh, kw, c_in, c_out)``.

    Each is the EVBMF rank of the kernel unfolded along that channel axis (``c_in x kh*kw*c_out`` and
    ``c_out x kh*kw*c_in``). Works the same on a Tucker-2 core. Clamped to at least 1 because a rank feeds a layer
    width; a 0 means EVBMF saw only noise in that mode.
    """
    k = _as_kernel(kernel, 4)
    kh, kw, c_in, c_out = k.shape
    unfold_in = np.moveaxis(k, 2, 0).reshape(c_in, -1)
    unfold_out = np.moveaxis(k, 3, 0).reshape(c_out, -1)
    return max(evbmf(unfold_in).rank, 1), max(evbmf(unfold_out).rank, 1)


def extreme_rank_dense(kernel: np.ndarray) -> int:
    """EVBMF rank of a Dense kernel ``(c_in, c_out)`` (at least 1), the extreme rank for SVD."""
    return max(evbmf(_as_kernel(kernel, 2)).rank, 1)


def weakened_rank(r_init: int, r_extr: int, w: float, min_rank: int = MIN_RANK_TO_COMPRESS) -> int | None:
    """MUSCO's weakened rank ``floor(R_init - w * (R_init - R_extr))``, ``0 < w < 1``.

    Returns None when ``r_init < min_rank`` (default 21): the layer is to be left alone, not decomposed or
    re-decomposed. When ``r_extr >= r_init`` nothing can be cut and ``r_init`` is returned. The result is >= 1.
    """
    r_init = _check_int(r_init, "r_init")
    r_extr = _check_int(r_extr, "r_extr")
    min_rank = _check_int(min_rank, "min_rank")
    if isinstance(w, bool) or not isinstance(w, int | float | np.floating) or not 0 < w < 1:
        raise LetiError(f"must be a number strictly between 0 and 1, got {w!r}", field="w")
    if r_init < min_rank:
        return None
    if r_extr >= r_init:
        return r_init
    return max(1, math.floor(r_init - w * (r_init - r_extr) + 1e-9))


def weakened_tucker2_ranks(
    r_init: tuple[int, int], r_extr: tuple[int, int], w: float, min_rank: int = MIN_RANK_TO_COMPRESS
) -> tuple[int, int] | None:
    """Weakened ``(R_in, R_out)`` for Tucker-2; None when both initial ranks are below ``min_rank``.

    A mode whose initial rank is below ``min_rank`` keeps its initial rank while the other mode shrinks.
    """
    for name, pair in (("r_init", r_init), ("r_extr", r_extr)):
        if not isinstance(pair, Sequence) or len(pair) != 2:
            raise LetiError(f"must be a pair (r_in, r_out), got {pair!r}", field=name)
    out = [weakened_rank(r_init[i], r_extr[i], w, min_rank) for i in range(2)]  # validates each entry
    if out[0] is None and out[1] is None:
        return None
    return (
        out[0] if out[0] is not None else int(r_init[0]),
        out[1] if out[1] is not None else int(r_init[1]),
    )


def _check_shape(kernel_shape: Sequence[int], ndim: int) -> tuple[int, ...]:
    if not isinstance(kernel_shape, tuple | list) or len(kernel_shape) != ndim:
        raise LetiError(
            f"must be a {ndim}-tuple of positive ints, got {kernel_shape!r}", field="kernel_shape"
        )
    return tuple(_check_int(d, f"kernel_shape[{i}]") for i, d in enumerate(kernel_shape))


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float | np.number) or not np.isfinite(ratio):
        raise LetiError(f"must be a finite number, got {ratio!r}", field="ratio")
    if ratio <= 1:
        raise LetiError(f"must be > 1 (original / compressed weights), got {ratio}", field="ratio")
    return float(ratio)


def tucker2_params(kernel_shape: Sequence[int], r_in: int, r_out: int) -> int:
    """Weights of the 1x1 -> kxk -> 1x1 Tucker-2 replacement of a ``(kh, kw, c_in, c_out)`` kernel."""
    kh, kw, c_in, c_out = _check_shape(kernel_shape, 4)
    r_in, r_out = _check_int(r_in, "r_in"), _check_int(r_out, "r_out")
    return c_in * r_in + kh * kw * r_in * r_out + r_out * c_out


def cp_params(kernel_shape: Sequence[int], rank: int) -> int:
    """Weights of the 1x1 -> kx1 dw -> 1xk dw -> 1x1 CP replacement."""
    kh, kw, c_in, c_out = _check_shape(kernel_shape, 4)
    return _check_int(rank, "rank") * (c_in + kh + kw + c_out)


def svd_params(kernel_shape: Sequence[int], rank: int) -> int:
    """Weights of the two-Dense SVD replacement of a ``(c_in, c_out)`` kernel."""
    c_in, c_out = _check_shape(kernel_shape, 2)
    return _check_int(rank, "rank") * (c_in + c_out)


def _unreachable(ratio: float, best: float) -> LetiError:
    return LetiError(f"{ratio} cannot be reached; rank 1 gives only {best:.3g}", field="ratio")


def tucker2_ranks_for_ratio(kernel_shape: Sequence[int], ratio: float) -> tuple[int, int]:
    """Largest Tucker-2 ranks with ``R_in / R_out ~= c_in / c_out`` whose weights are at most original / ratio.

    With ``R_in = b c_in`` and ``R_out = b c_out`` the count is ``b (c_in^2 + c_out^2) + b^2 kh kw c_in c_out``,
    a quadratic in ``b``; its root is floored per mode (so the ratio is met or exceeded), capped at the channels.
    """
    kh, kw, c_in, c_out = _check_shape(kernel_shape, 4)
    ratio = _check_ratio(ratio)
    full = kh * kw * c_in * c_out
    a, b = kh * kw * c_in * c_out, c_in**2 + c_out**2
    beta = (-b + math.sqrt(b * b + 4 * a * full / ratio)) / (2 * a)
    r_in = min(c_in, max(1, math.floor(beta * c_in + 1e-9)))
    r_out = min(c_out, max(1, math.floor(beta * c_out + 1e-9)))
    got = full / tucker2_params(kernel_shape, r_in, r_out)
    if got < ratio:
        raise _unreachable(ratio, full / tucker2_params(kernel_shape, 1, 1))
    return r_in, r_out


def cp_rank_for_ratio(kernel_shape: Sequence[int], ratio: float) -> int:
    """Largest CP rank whose weights are at most original / ratio."""
    kh, kw, c_in, c_out = _check_shape(kernel_shape, 4)
    ratio = _check_ratio(ratio)
    full = kh * kw * c_in * c_out
    per_rank = c_in + kh + kw + c_out
    rank = math.floor(full / (ratio * per_rank) + 1e-9)
    if rank < 1:
        raise _unreachable(ratio, full / per_rank)
    return rank


def svd_rank_for_ratio(kernel_shape: Sequence[int], ratio: float) -> int:
    """Largest SVD rank (at most ``min(c_in, c_out)``) whose weights are at most original / ratio."""
    c_in, c_out = _check_shape(kernel_shape, 2)
    ratio = _check_ratio(ratio)
    rank = min(min(c_in, c_out), math.floor(c_in * c_out / (ratio * (c_in + c_out)) + 1e-9))
    if rank < 1:
        raise _unreachable(ratio, c_in * c_out / (c_in + c_out))
    return rank


def ranks_for_ratio(kernel_shape: Sequence[int], ratio: float, method: str) -> tuple[int, ...]:
    """Dispatch on ``method``: 'tucker2' -> ``(R_in, R_out)``, 'cp' -> ``(R,)``, 'svd' -> ``(r,)``."""
    if method == "tucker2":
        return tucker2_ranks_for_ratio(kernel_shape, ratio)
    if method == "cp":
        return (cp_rank_for_ratio(kernel_shape, ratio),)
    if method == "svd":
        return (svd_rank_for_ratio(kernel_shape, ratio),)
    raise LetiError(f"must be 'tucker2', 'cp' or 'svd', got {method!r}", field="method")

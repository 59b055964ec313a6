"""Structured (output-channel) pruning by L1/L2 filter norm.

A *producer* (Conv2D ``(kh, kw, c_in, c_out)`` or Dense ``(c_in, c_out)``) loses output channels; everything that
reads those channels must drop the same ones: its bias, a following BatchNorm, a depthwise conv in between (which
keeps channels one-to-one) and the *consumer*'s kernel on its input axis. A Dense consumer behind a Flatten sees
``h * w * c`` inputs, not ``c``; map the indices before calling :func:`prune_consumer` in that case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from leti.errors import LetiError

__all__ = [
    "BatchNormParams",
    "PrunedLayer",
    "channel_scores",
    "n_kept",
    "prune_plan",
    "prune_producer",
    "prune_depthwise",
    "prune_consumer",
    "pruned_rel_error",
]


def _real_array(value: object, field: str, ndims: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(value)
    if a.ndim not in ndims or a.size == 0:
        raise LetiError(
            f"must be a non-empty array with {' or '.join(map(str, ndims))} dims, got {a.shape}", field
        )
    if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a) or not np.all(np.isfinite(a)):
        raise LetiError("must hold finite real numbers", field=field)
    return a


def _vector(value: np.ndarray | None, length: int, field: str) -> np.ndarray | None:
    if value is None:
        return None
    v = _real_array(value, field, (1,))
    if v.shape != (length,):
        raise LetiError(f"must have shape ({length},), got {v.shape}", field=field)
    return v


@dataclass(frozen=True, eq=False)
class BatchNormParams:
    """A BatchNormalization's per-channel arrays; ``gamma`` / ``beta`` are None when Keras' scale / center is off."""

    moving_mean: np.ndarray
    moving_variance: np.ndarray
    gamma: np.ndarray | None = None
    beta: np.ndarray | None = None

    def take(self, keep: np.ndarray) -> BatchNormParams:
        return BatchNormParams(
            self.moving_mean[keep],
            self.moving_variance[keep],
            None if self.gamma is None else self.gamma[keep],
            None if self.beta is None else self.beta[keep],
        )

    def weights(self) -> list[np.ndarray]:
        """Arguments for Keras ``BatchNormalization.set_weights`` (gamma, beta, mean, variance; absent ones skipped)."""
        return [w for w in (self.gamma, self.beta, self.moving_mean, self.moving_variance) if w is not None]


def _check_bn(bn: BatchNormParams | None, channels: int) -> BatchNormParams | None:
    if bn is None:
        return None
    if not isinstance(bn, BatchNormParams):
        raise LetiError(f"must be BatchNormParams, got {type(bn).__name__}", field="bn")
    for name in ("moving_mean", "moving_variance", "gamma", "beta"):
        _vector(getattr(bn, name), channels, f"bn.{name}")
    return bn


@dataclass(frozen=True, eq=False)
class PrunedLayer:
    """A layer after pruning; ``keep``: the original output-channel indices it still produces, ascending."""

    kernel: np.ndarray
    bias: np.ndarray | None
    bn: BatchNormParams | None
    keep: np.ndarray


def _check_norm(norm: str) -> str:
    if norm not in ("l1", "l2"):
        raise LetiError(f"must be 'l1' or 'l2', got {norm!r}", field="norm")
    return norm


def _check_ratio(ratio: float) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float | np.integer | np.floating):
        raise LetiError(f"must be a number in [0, 1), got {ratio!r}", field="ratio")
    if not 0 <= ratio < 1:  # also rejects NaN
        raise LetiError(f"must be in [0, 1), got {ratio}", field="ratio")
    return float(ratio)


def channel_scores(kernel: np.ndarray, norm: str = "l1") -> np.ndarray:
    """L1 or L2 norm of each output channel (last axis) of a Conv2D or Dense kernel."""
    k = _real_array(kernel, "kernel", (2, 4)).astype(np.float64)
    flat = k.reshape(-1, k.shape[-1])
    if _check_norm(norm) == "l1":
        return np.abs(flat).sum(axis=0)
    return np.sqrt((flat * flat).sum(axis=0))


def n_kept(channels: int, ratio: float) -> int:
    """Channels left after pruning ``floor(ratio * channels)`` of them; at least 1 since ratio < 1."""
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or channels < 1:
        raise LetiError(f"must be an integer >= 1, got {channels!r}", field="channels")
    # the epsilon absorbs float products such as 0.29 * 100 = 28.999999999999996
    return max(1, int(channels) - math.floor(_check_ratio(ratio) * channels + 1e-9))


def prune_plan(kernel: np.ndarray, ratio: float, norm: str = "l1") -> np.ndarray:
    """Indices (ascending) of the output channels to keep: the ``n_kept`` highest-norm ones.

    Ties go to the lower index, so a plan is deterministic.
    """
    ratio = _check_ratio(ratio)
    scores = channel_scores(kernel, norm)
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[: n_kept(scores.size, ratio)]).astype(np.int64)


def _check_keep(keep: object, channels: int) -> np.ndarray:
    k = np.asarray(keep)
    if k.ndim != 1 or k.size == 0 or not np.issubdtype(k.dtype, np.integer):
        raise LetiError("must be a non-empty 1-D array of integer channel indices", field="keep")
    if k.min() < 0 or k.max() >= channels:
        raise LetiError(f"indices must lie in [0, {channels}), got {k.min()}..{k.max()}", field="keep")
    if np.unique(k).size != k.size:
        raise LetiError("holds duplicate indices", field="keep")
    return np.sort(k).astype(np.int64)


def prune_producer(
    kernel: np.ndarray, keep: np.ndarray, bias: np.ndarray | None = None, bn: BatchNormParams | None = None
) -> PrunedLayer:
    """Keep only output channels ``keep`` of a Conv2D / Dense kernel, its bias and the BatchNorm that follows."""
    k = _real_array(kernel, "kernel", (2, 4))
    c_out = k.shape[-1]
    keep = _check_keep(keep, c_out)
    b = _vector(bias, c_out, "bias")
    bn = _check_bn(bn, c_out)
    return PrunedLayer(
        kernel=k[..., keep],
        bias=None if b is None else b[keep],
        bn=None if bn is None else bn.take(keep),
        keep=keep,
    )


def prune_depthwise(
    kernel: np.ndarray, keep: np.ndarray, bias: np.ndarray | None = None, bn: BatchNormParams | None = None
) -> PrunedLayer:
    """Follow a producer's pruning through a DepthwiseConv2D ``(kh, kw, c, multiplier)``.

    ``keep`` indexes its input channels; output channel ``c * multiplier + j`` comes from input ``c``, so the
    returned ``keep`` lists the surviving *output* channels, which is what the next consumer must keep.
    """
    k = _real_array(kernel, "kernel", (4,))
    channels, mult = k.shape[2], k.shape[3]
    keep = _check_keep(keep, channels)
    keep_out = (keep[:, None] * mult + np.arange(mult)[None, :]).ravel()
    b = _vector(bias, channels * mult, "bias")
    bn = _check_bn(bn, channels * mult)
    return PrunedLayer(
        kernel=k[:, :, keep, :],
        bias=None if b is None else b[keep_out],
        bn=None if bn is None else bn.take(keep_out),
        keep=keep_out,
    )


def prune_consumer(kernel: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Drop the pruned input channels of a consumer: Conv2D kernel axis 2, Dense kernel axis 0."""
    k = _real_array(kernel, "kernel", (2, 4))
    axis = 2 if k.ndim == 4 else 0
    return np.take(k, _check_keep(keep, k.shape[axis]), axis=axis)


def pruned_rel_error(kernel: np.ndarray, keep: np.ndarray) -> float:
    """``||K - K_pruned||_F / ||K||_F`` with the dropped output channels zeroed (the share of weight norm lost)."""
    k = _real_array(kernel, "kernel", (2, 4)).astype(np.float64)
    keep = _check_keep(keep, k.shape[-1])
    total = np.linalg.norm(k)
    if total == 0:
        raise LetiError("is all zeros; relative error is undefined", field="kernel")
    dropped = np.ones(k.shape[-1], dtype=bool)
    dropped[keep] = False
    return float(np.linalg.norm(k[..., dropped]) / total)

"""Structured channel pruning: scores, plans, slicing of producer / depthwise / consumer, validation."""

from __future__ import annotations

import numpy as np
import pytest

from leti.compression.prune import (
    BatchNormParams,
    channel_scores,
    n_kept,
    prune_consumer,
    prune_depthwise,
    prune_plan,
    prune_producer,
    pruned_rel_error,
)
from leti.errors import LetiError


def scaled_kernel(seed: int, shape=(3, 3, 5, 12)):
    """A kernel whose output-channel norms follow a random permutation of 1..c_out."""
    rng = np.random.default_rng(seed)
    k = rng.standard_normal(shape)
    k /= np.linalg.norm(k.reshape(-1, shape[-1]), axis=0)
    scale = rng.permutation(shape[-1]) + 1.0
    return k * scale, scale


def test_scores_are_channel_norms():
    rng = np.random.default_rng(0)
    for k in (rng.standard_normal((3, 3, 4, 7)), rng.standard_normal((9, 6))):
        for c in range(k.shape[-1]):
            ch = k[..., c]
            assert channel_scores(k, "l1")[c] == pytest.approx(np.abs(ch).sum())
            assert channel_scores(k, "l2")[c] == pytest.approx(np.sqrt((ch**2).sum()))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.9])
def test_plan_keeps_the_highest_norm_channels(seed, ratio):
    k, scale = scaled_kernel(seed)
    keep = prune_plan(k, ratio, "l2")
    n = 12 - int(np.floor(ratio * 12 + 1e-9))
    assert keep.size == n and np.all(np.diff(keep) > 0)
    assert set(keep.tolist()) == set(np.argsort(-scale)[:n].tolist())
    assert channel_scores(k, "l2")[keep].min() >= np.delete(channel_scores(k, "l2"), keep).max(initial=0.0)


def test_l1_and_l2_rank_channels_differently():
    # channel 0: many small weights (large L1, small L2); channel 1: one big weight (small L1, large L2)
    k = np.zeros((3, 3, 4, 2))
    k[..., 0] = 0.5
    k[0, 0, 0, 1] = 4.0
    assert prune_plan(k, 0.5, "l1").tolist() == [0]
    assert prune_plan(k, 0.5, "l2").tolist() == [1]


def test_kept_counts_and_ties():
    assert n_kept(10, 0.0) == 10
    assert n_kept(10, 0.5) == 5
    assert n_kept(100, 0.29) == 71
    assert n_kept(3, 0.99) == 1  # never prune a layer away
    assert prune_plan(np.ones((2, 6)), 0.5).tolist() == [0, 1, 2]  # ties go to the lower index


def test_pruned_dense_network_matches_original_when_dropped_channels_are_dead():
    # x -> Dense(W1, b1) -> BN -> relu -> Dense(W2): zero channels 1 and 4, prune them, outputs must not change
    rng = np.random.default_rng(1)
    w1, b1, w2 = rng.standard_normal((8, 6)), rng.standard_normal(6), rng.standard_normal((6, 3))
    w1[:, [1, 4]] = 0.0
    bn = BatchNormParams(rng.standard_normal(6), rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6), np.zeros(6))
    b1[[1, 4]] = bn.moving_mean[[1, 4]]  # BN maps these channels to beta = 0, so relu gives 0 too

    def forward(w1, b1, bn, w2, x):
        h = x @ w1 + b1
        h = bn.gamma * (h - bn.moving_mean) / np.sqrt(bn.moving_variance + 1e-3) + bn.beta
        return np.maximum(h, 0.0) @ w2

    keep = prune_plan(w1, 2 / 6, "l1")
    assert keep.tolist() == [0, 2, 3, 5]
    p = prune_producer(w1, keep, bias=b1, bn=bn)
    assert p.kernel.shape == (8, 4) and p.bias.shape == (4,) and len(p.bn.weights()) == 4
    x = rng.standard_normal((5, 8))
    np.testing.assert_allclose(
        forward(p.kernel, p.bias, p.bn, prune_consumer(w2, keep), x), forward(w1, b1, bn, w2, x), atol=1e-12
    )
    assert pruned_rel_error(w1, keep) == 0.0


def test_conv_slicing_axes_and_error():
    k, _ = scaled_kernel(2, (3, 3, 5, 12))
    keep = prune_plan(k, 0.5)
    p = prune_producer(k, keep, bias=np.arange(12.0))
    assert p.kernel.shape == (3, 3, 5, 6) and p.bias.tolist() == keep.astype(float).tolist()
    np.testing.assert_array_equal(p.kernel, k[..., keep])
    consumer = np.random.default_rng(3).standard_normal((3, 3, 12, 7))
    sliced = prune_consumer(consumer, keep)
    assert sliced.shape == (3, 3, 6, 7)
    np.testing.assert_array_equal(sliced, consumer[:, :, keep, :])
    dropped = np.setdiff1d(np.arange(12), keep)
    expected = np.linalg.norm(k[..., dropped]) / np.linalg.norm(k)
    assert pruned_rel_error(k, keep) == pytest.approx(expected)
    assert 0 < pruned_rel_error(k, keep) < pruned_rel_error(k, prune_plan(k, 0.75))


def test_depthwise_follows_producer_with_multiplier():
    dw = np.arange(2 * 2 * 4 * 2, dtype=float).reshape(2, 2, 4, 2)
    bn = BatchNormParams(np.arange(8.0), np.ones(8))
    p = prune_depthwise(dw, np.array([3, 1]), bias=np.arange(8.0) * 10, bn=bn)
    assert p.kernel.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(p.kernel, dw[:, :, [1, 3], :])
    assert p.keep.tolist() == [2, 3, 6, 7]
    assert p.bias.tolist() == [20.0, 30.0, 60.0, 70.0]
    assert p.bn.moving_mean.tolist() == [2.0, 3.0, 6.0, 7.0] and p.bn.gamma is None
    assert len(p.bn.weights()) == 2


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
def test_ratio_validation_names_field(ratio):
    with pytest.raises(LetiError, match="^ratio:") as info:
        prune_plan(np.ones((3, 4)), ratio)
    assert info.value.field == "ratio"


def test_other_validation_names_field():
    k = np.ones((3, 3, 2, 4))
    cases = [
        (lambda: channel_scores(k, "l3"), "norm"),
        (lambda: channel_scores(np.ones((2, 2, 2)), "l1"), "kernel"),
        (lambda: prune_producer(k, np.array([0, 4])), "keep"),
        (lambda: prune_producer(k, np.array([1, 1])), "keep"),
        (lambda: prune_producer(k, np.array([], dtype=int)), "keep"),
        (lambda: prune_producer(k, np.array([0.5])), "keep"),
        (lambda: prune_producer(k, [0], bias=np.ones(3)), "bias"),
        (lambda: prune_producer(k, [0], bn=BatchNormParams(np.ones(4), np.ones(3))), "bn.moving_variance"),
        (lambda: prune_consumer(np.ones((3, 3, 2, 4)), [2]), "keep"),
        (lambda: pruned_rel_error(np.zeros((2, 2)), [0]), "kernel"),
        (lambda: n_kept(0, 0.5), "channels"),
    ]
    for call, name in cases:
        with pytest.raises(LetiError, match=f"^{name}:") as info:
            call()
        assert info.value.field == name

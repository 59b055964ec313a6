"""EVBMF rank recovery and the rank rules built on it (extreme, weakened, fixed-ratio ranks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leti.compression.evbmf import evb_threshold_constant, evbmf
from leti.compression.ranks import (
    MIN_RANK_TO_COMPRESS,
    cp_params,
    cp_rank_for_ratio,
    extreme_rank_dense,
    extreme_ranks,
    ranks_for_ratio,
    svd_params,
    svd_rank_for_ratio,
    tucker2_params,
    tucker2_ranks_for_ratio,
    weakened_rank,
    weakened_tucker2_ranks,
)
from leti.errors import LetiError


def low_rank_plus_noise(seed: int, snr: float, shape=(200, 100), rank=10, sigma=0.3):
    """Rank-``rank`` signal whose smallest singular value is ``snr`` x the largest noise singular value."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    u, _ = np.linalg.qr(rng.standard_normal((rows, rank)))
    v, _ = np.linalg.qr(rng.standard_normal((cols, rank)))
    edge = sigma * (math.sqrt(rows) + math.sqrt(cols))  # top singular value of the noise, asymptotically
    signal = (u * (snr * edge * np.linspace(1.0, 3.0, rank))) @ v.T
    return signal, signal + sigma * rng.standard_normal(shape)


def test_threshold_constant_matches_paper():
    tau_, x_bar = evb_threshold_constant(1.0)
    assert tau_ == pytest.approx(2.5129, abs=1e-4)
    assert x_bar == pytest.approx((1 + tau_) ** 2 / tau_)
    for alpha in (0.1, 0.5, 1.0):
        t, _ = evb_threshold_constant(alpha)
        # the threshold is where an active component's free energy equals a pruned one's
        assert math.log1p(t) + alpha * math.log1p(t / alpha) - t == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("snr", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("seed", range(5))
def test_recovers_true_rank_with_estimated_noise(seed, snr):
    signal, y = low_rank_plus_noise(seed, snr)
    res = evbmf(y)
    assert res.rank == 10
    assert res.sigma2 == pytest.approx(0.09, rel=0.05)
    assert res.u.shape == (200, 10) and res.v.shape == (100, 10) and res.s.shape == (10,)
    # EVB shrinks every kept singular value and denoises the matrix
    assert np.all(res.s < np.linalg.svd(y, compute_uv=False)[:10])
    assert np.linalg.norm(res.reconstruct() - signal) < np.linalg.norm(y - signal)


@pytest.mark.parametrize("seed", range(5))
def test_recovers_rank_of_gaussian_factors_both_orientations(seed):
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((200, 10)) @ rng.standard_normal((10, 100))
    y = x + rng.standard_normal((200, 100))
    assert evbmf(y).rank == 10
    res_t = evbmf(y.T)
    assert res_t.rank == 10 and res_t.u.shape == (100, 10) and res_t.v.shape == (200, 10)


def test_known_sigma2_path_and_pure_noise():
    _, y = low_rank_plus_noise(7, 1.5)
    res = evbmf(y, sigma2=0.09)
    assert res.rank == 10 and res.sigma2 == 0.09
    assert res.threshold == pytest.approx(math.sqrt(200 * 0.09 * evb_threshold_constant(0.5)[1]))
    for seed in range(5):
        noise = np.random.default_rng(seed).standard_normal((200, 100))
        assert evbmf(noise).rank == 0


def test_too_weak_signal_is_not_kept():
    # below the EVB threshold a component is indistinguishable from noise and must be dropped
    _, y = low_rank_plus_noise(3, 0.3)
    assert evbmf(y).rank < 10


def test_zero_matrix_and_bad_input():
    assert evbmf(np.zeros((5, 4))).rank == 0
    with pytest.raises(LetiError, match="^y:"):
        evbmf(np.ones(5))
    with pytest.raises(LetiError, match="^y:"):
        evbmf(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(LetiError, match="^sigma2:"):
        evbmf(np.eye(3), sigma2=-1.0)


# ---------------------------------------------------------------- extreme ranks


def test_extreme_ranks_find_tucker_ranks_of_noisy_kernel():
    rng = np.random.default_rng(0)
    core = rng.standard_normal((3, 3, 12, 8))
    u_in, _ = np.linalg.qr(rng.standard_normal((64, 12)))
    u_out, _ = np.linalg.qr(rng.standard_normal((48, 8)))
    kernel = np.einsum("ijrs,cr,os->ijco", core, u_in, u_out)
    kernel += 0.01 * rng.standard_normal(kernel.shape)
    assert extreme_ranks(kernel) == (12, 8)
    w = rng.standard_normal((80, 6)) @ rng.standard_normal((6, 50)) + 0.1 * rng.standard_normal((80, 50))
    assert extreme_rank_dense(w) == 6


def test_extreme_ranks_reject_wrong_layout():
    with pytest.raises(LetiError, match="^kernel:"):
        extreme_ranks(np.ones((3, 3, 4)))


# ---------------------------------------------------------------- weakened rank


def test_weakened_rank_formula():
    # R_init - w (R_init - R_extr), floored
    assert weakened_rank(64, 20, 0.5) == 42
    assert weakened_rank(100, 30, 0.6) == 58
    assert weakened_rank(64, 20, 0.3) == math.floor(64 - 0.3 * 44)
    # a stronger w never keeps more rank
    ranks = [weakened_rank(256, 40, w) for w in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert ranks == sorted(ranks, reverse=True) and all(40 <= r <= 256 for r in ranks)
    # nothing to cut when the extreme rank is not below the initial one
    assert weakened_rank(30, 30, 0.5) == 30 and weakened_rank(30, 40, 0.5) == 30


def test_small_layers_are_left_alone():
    assert MIN_RANK_TO_COMPRESS == 21
    assert weakened_rank(20, 5, 0.5) is None
    assert weakened_rank(21, 5, 0.5) == 13
    assert weakened_tucker2_ranks((16, 12), (4, 4), 0.5) is None
    # only the small mode keeps its rank
    assert weakened_tucker2_ranks((16, 64), (4, 20), 0.5) == (16, 42)
    assert weakened_tucker2_ranks((64, 48), (20, 10), 0.5) == (42, 29)


@pytest.mark.parametrize("w", [0.0, 1.0, -0.2, 1.5, "0.5", True])
def test_weakened_rank_validates_w(w):
    with pytest.raises(LetiError, match="^w:"):
        weakened_rank(64, 20, w)


def test_weakened_rank_validates_ranks():
    with pytest.raises(LetiError, match="^r_init:"):
        weakened_rank(0, 1, 0.5)
    with pytest.raises(LetiError, match="^r_extr:"):
        weakened_rank(64, 2.5, 0.5)
    with pytest.raises(LetiError, match="^r_init:"):
        weakened_tucker2_ranks((64,), (20, 20), 0.5)


# ---------------------------------------------------------------- fixed-ratio ranks


@pytest.mark.parametrize("shape", [(3, 3, 64, 64), (3, 3, 32, 128), (5, 5, 48, 24), (1, 1, 256, 64)])
@pytest.mark.parametrize("ratio", [1.5, 2.0, 4.0, 10.0])
def test_tucker2_ranks_meet_ratio_and_keep_proportion(shape, ratio):
    full = math.prod(shape)
    r_in, r_out = tucker2_ranks_for_ratio(shape, ratio)
    assert full / tucker2_params(shape, r_in, r_out) >= ratio
    assert 1 <= r_in <= shape[2] and 1 <= r_out <= shape[3]
    # proportional up to flooring
    assert abs(r_in / shape[2] - r_out / shape[3]) <= 1.0 / min(shape[2], shape[3]) + 1e-12
    # the ranks are the largest proportional ones: one more step overshoots the budget
    beta = max(r_in / shape[2], r_out / shape[3]) + 1.0 / min(shape[2], shape[3])
    bigger = (min(shape[2], math.ceil(beta * shape[2])), min(shape[3], math.ceil(beta * shape[3])))
    if bigger != (r_in, r_out):
        assert full / tucker2_params(shape, *bigger) < ratio


@pytest.mark.parametrize("ratio", [1.5, 3.0, 8.0])
def test_cp_and_svd_ranks_meet_ratio_maximally(ratio):
    shape = (3, 3, 64, 96)
    r = cp_rank_for_ratio(shape, ratio)
    assert math.prod(shape) / cp_params(shape, r) >= ratio > math.prod(shape) / cp_params(shape, r + 1)
    dense = (512, 128)
    s = svd_rank_for_ratio(dense, ratio)
    assert 512 * 128 / svd_params(dense, s) >= ratio > 512 * 128 / svd_params(dense, s + 1)
    assert ranks_for_ratio(shape, ratio, "cp") == (r,)
    assert ranks_for_ratio(dense, ratio, "svd") == (s,)
    assert ranks_for_ratio(shape, ratio, "tucker2") == tucker2_ranks_for_ratio(shape, ratio)


def test_ratio_validation_names_field():
    for bad in (1.0, 0.5, float("nan"), "2"):
        with pytest.raises(LetiError, match="^ratio:"):
            tucker2_ranks_for_ratio((3, 3, 8, 8), bad)
    with pytest.raises(LetiError, match="^ratio:.*cannot be reached"):
        cp_rank_for_ratio((3, 3, 4, 4), 1000.0)
    with pytest.raises(LetiError, match="^kernel_shape"):
        svd_rank_for_ratio((3, 3, 4, 4), 2.0)
    with pytest.raises(LetiError, match="^method:"):
        ranks_for_ratio((3, 3, 8, 8), 2.0, "tt")

"""Train/test splits by canonical arch hash: isomorphic archs never sit on both sides."""

from __future__ import annotations

import re

import numpy as np

from leti.errors import LetiError


def split_by_hash(hashes, train_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): hash groups in a seeded random order fill the training set up to ``train_size`` rows.

    When the last group taken would overshoot, only part of it goes to training and the rest of that group is left
    out of both sides, so the test set never shares a hash with the training set.
    """
    hashes = np.asarray(hashes, dtype=object)
    n = hashes.size
    if isinstance(train_size, bool) or not isinstance(train_size, int | np.integer) or train_size < 1:
        raise LetiError(f"must be a positive integer, got {train_size!r}", "train_size")
    if train_size >= n:
        raise LetiError(
            f"{train_size} is not smaller than the {n} measured archs; leave some for testing", "train_size"
        )
    uniq, inverse = np.unique(hashes, return_inverse=True)
    order = np.random.default_rng(seed).permutation(uniq.size)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    # rows sorted by (their group's random rank, row index): a stable, seed-determined walk over groups
    rows = np.lexsort((np.arange(n), rank[inverse]))
    train = np.sort(rows[:train_size])
    taken = np.zeros(uniq.size, dtype=bool)
    taken[inverse[train]] = True
    test = np.flatnonzero(~taken[inverse])
    if test.size == 0:
        raise LetiError("no archs are left for testing after the split", "train_size")
    return train, test


def model_family(name: str) -> str:
    """The family of a real model: its name with width, depth, size and version suffixes removed.

    ``resnet10`` … ``resnet18_wd4`` -> ``resnet``; ``regnetx002`` … ``regnetx016`` -> ``regnetx``;
    ``mobilenetv3_small_w7d20`` -> ``mobilenetv3``; ``diracnet18v2`` -> ``diracnet``; ``hardnet39ds`` -> ``hardnet``.
    Rules, in order, on the lower-cased name: keep the part before the first ``_`` (width multipliers ``_w1``,
    ``_wd4``, sizes ``_small``, versions ``_v1_1`` and variants ``_cpu`` follow it); drop a trailing size word
    (small, medium, large, mobile) and an EfficientNet ``b<N>``; drop a trailing depth number and what follows it
    (``18v2``, ``46c``, ``14b``), except a version right after a ``v`` (``mobilenetv2`` stays: v2 is another
    design, not a size). Letters that name a variant (``resnetbc``, ``mobilenetb``) stay.
    """
    t = str(name).strip().lower().replace("-", "_").split("_")[0]
    t = re.sub(r"(small|medium|large|mobile)$", "", t)
    t = re.sub(r"netb\d+$", "net", t)
    t = re.sub(r"(?<=[a-uw-z])\d+[a-z\d]*$", "", t)
    return t or str(name)
def one_per_hash(hashes, k: int, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` rows with distinct canonical hashes, the groups in a seeded random order (the first row of
    each): a few archs to measure must be ``k`` different networks, which a hash split of a few rows is not when
    one hash group is large (NB201 has groups of 341 isomorphic cells)."""
    hashes = np.asarray(hashes, dtype=object)
    uniq, first = np.unique(hashes, return_index=True)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise LetiError(f"must be a positive integer, got {k!r}", "train_size")
    if k > uniq.size:
        raise LetiError(f"{k} is more than the {uniq.size} distinct archs measured", "train_size")
    order = np.random.default_rng(seed).permutation(uniq.size)
    return np.sort(first[order[:k]])

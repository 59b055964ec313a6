"""Cross-validation folds over training archs, kept in one place for ``auto`` and the families that tune inside
``fit`` (``linear``'s penalty)."""

from __future__ import annotations

import numpy as np


def kfold_indices(n: int, folds: int, seed: int, groups=None) -> list[np.ndarray]:
    """Test indices of each fold; whole groups (e.g. canonical arch hashes) stay together when ``groups`` is given,
    so isomorphic archs never sit on both sides of a fold, as in the real train/test split."""
    rng = np.random.default_rng(seed)
    if groups is None:
        perm = rng.permutation(n)
        return [np.sort(perm[k::folds]) for k in range(folds)]
    uniq, inv = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    fold_of_group = np.empty(uniq.size, dtype=np.int64)
    fold_of_group[rng.permutation(uniq.size)] = np.arange(uniq.size) % folds
    return [np.flatnonzero(fold_of_group[inv] == k) for k in range(folds)]


__all__ = ["kfold_indices"]

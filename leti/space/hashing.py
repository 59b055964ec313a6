"""Canonical form of a small labelled DAG, invariant to node relabelling and exact for non-isomorphic graphs.

Colour refinement (iterated hashing of label, in-degree, out-degree and the neighbours' colours, as in
NAS-Bench-101's hash) separates almost all nodes; the remaining ties are broken by individualising each member of
the first tied class in turn and keeping the smallest encoding, so symmetric graphs get one canonical form too.
"""

from __future__ import annotations

import hashlib

_MAX_LEAVES = 20000  # tie-breaking budget; cells have at most a few dozen nodes, far below this


def _refine(colors: list[int], preds: list[list[int]], succs: list[list[int]]) -> list[int]:
    n = len(colors)
    n_classes = len(set(colors))
    while True:
        sigs = [
            (
                colors[v],
                tuple(sorted(colors[u] for u in preds[v])),
                tuple(sorted(colors[w] for w in succs[v])),
            )
            for v in range(n)
        ]
        rank = {s: i for i, s in enumerate(sorted(set(sigs)))}
        new = [rank[s] for s in sigs]
        k = len(rank)
        if k == n_classes:
            return new
        colors, n_classes = new, k


def _encode(colors: list[int], labels: list[str], edges: list[tuple[int, int]]) -> tuple:
    return (
        tuple(lab for _, lab in sorted(zip(colors, labels, strict=True))),
        tuple(sorted((colors[i], colors[j]) for i, j in edges)),
    )


def canonical_form(labels: list[str], edges: list[tuple[int, int]]) -> tuple:
    """A tuple equal for two graphs exactly when they are isomorphic (labels included)."""
    n = len(labels)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for i, j in edges:
        succs[i].append(j)
        preds[j].append(i)
    init_sigs = [(labels[v], len(preds[v]), len(succs[v])) for v in range(n)]
    rank = {s: i for i, s in enumerate(sorted(set(init_sigs)))}
    colors = _refine([rank[s] for s in init_sigs], preds, succs)

    best = None
    leaves = 0
    stack = [colors]
    while stack:
        cur = stack.pop()
        counts: dict[int, int] = {}
        for c in cur:
            counts[c] = counts.get(c, 0) + 1
        tied = [c for c, k in counts.items() if k > 1]
        if not tied:
            enc = _encode(cur, labels, edges)
            if best is None or enc < best:
                best = enc
            leaves += 1
            if leaves >= _MAX_LEAVES:
                break
            continue
        target = min(tied)
        for v in range(n):
            if cur[v] == target:
                split = [2 * c for c in cur]
                split[v] -= 1  # v alone goes just before the rest of its class
                stack.append(_refine(split, preds, succs))
    return best


def digest(*parts: str) -> str:
    """A short stable hex digest of text parts."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]

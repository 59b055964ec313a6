"""Compression candidates per layer: Tucker-2 / CP / SVD at chosen ranks and L1 / L2 channel pruning at ratios.

For every compressible unit of a Keras model (see :mod:`leti.compression.keras_surgery`) this lists candidates:

* ``tucker2``: MUSCO's weakened EVBMF ranks for each ``w`` in ``weakened``, and the ranks of each compression
  ratio in ``ratios`` (a Tucker-2 unit from an earlier step is re-decomposed through its core);
* ``cp``: the rank of each ratio in ``cp_ratios`` (kxk convs only; CP has no rank estimate as cheap as EVBMF, and
  each candidate runs ``cp_iters`` ALS sweeps, the slowest part of listing);
* ``svd``: the weakened EVBMF rank and the rank of each ratio (Dense layers; the classifier is left alone);
* ``prune``: each ratio in ``prune_ratios`` with each norm in ``norms``.

Only candidates that shrink the unit's weights are kept. Each carries its ``rel_error``, ``||W - W_hat|| / ||W||``
of the unit's kernel (for pruning: the share of the kernel's norm in the dropped channels). The Arch of a model
with a set of edits comes from :func:`edited_arch` without rebuilding the Keras model, which is what makes
scoring many combinations with a latency predictor cheap.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from leti.compression.keras_ir import KerasArch, check_arch, keras_to_arch
from leti.compression.keras_surgery import (
    METHODS,
    Edit,
    Unit,
    apply_edits,
    clamp_ranks,
    factorize,
    one_blas_thread,
    output_error,
    pruning_error,
    unit_methods,
    units,
)
from leti.compression.prune import n_kept
from leti.compression.ranks import (
    MIN_RANK_TO_COMPRESS,
    cp_rank_for_ratio,
    extreme_rank_dense,
    extreme_ranks,
    svd_rank_for_ratio,
    tucker2_ranks_for_ratio,
    weakened_rank,
    weakened_tucker2_ranks,
)
from leti.errors import LetiError
from leti.space.arch import Arch

__all__ = [
    "CandidateOptions",
    "Candidate",
    "Applied",
    "check_methods",
    "candidate",
    "layer_candidates",
    "list_candidates",
    "edited_spec",
    "edited_arch",
    "effective_edits",
    "apply_candidates",
]


def check_methods(methods) -> tuple[str, ...]:
    """Validate a method list (a tuple or a comma-separated string)."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = tuple(methods)
    if not methods:
        raise LetiError("name at least one method", "methods")
    for m in methods:
        if m not in METHODS:
            raise LetiError(f"unknown method {m!r} (known: {', '.join(METHODS)})", "methods")
    return methods


@dataclass(frozen=True)
class CandidateOptions:
    """Which candidates to list.

    ``ratios`` / ``cp_ratios``: original / factor weights (> 1) for Tucker-2 and SVD / for CP (fewer: each CP
    candidate runs ALS, work ~ rank x channels^2); ``prune_ratios``: share of output channels removed;
    ``weakened``: MUSCO's ``w``; ``min_rank``: units whose rank is below it get no weakened-rank candidate;
    ``cp_iters``: ALS sweeps per CP candidate; ``cp_max_work``: the largest CP candidate scored, as rank x ``cp_modes``
    (the ALS's Khatri-Rao product, in floats): a rank-1,140 CP of a 3x3x512x512 kernel needs ~3.6 GB per sweep
    (ResNet50 ran out of memory), and Tucker-2 covers such layers at a fraction of the cost.
    """

    methods: tuple[str, ...] = METHODS
    weakened: tuple[float, ...] = (0.3, 0.6)
    ratios: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    cp_ratios: tuple[float, ...] = (2.0, 4.0, 8.0)
    prune_ratios: tuple[float, ...] = (0.25, 0.5, 0.75)
    norms: tuple[str, ...] = ("l1",)
    min_rank: int = MIN_RANK_TO_COMPRESS
    cp_iters: int = 20
    cp_max_work: int = 50_000_000
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "methods", check_methods(self.methods))
        for n in self.norms:
            if n not in ("l1", "l2"):
                raise LetiError(f"must be 'l1' or 'l2', got {n!r}", "norms")
        for r in (*self.ratios, *self.cp_ratios):
            if not r > 1:
                raise LetiError(f"compression ratios must be > 1, got {r!r}", "ratios")
        for r in self.prune_ratios:
            if not 0 < r < 1:
                raise LetiError(f"prune ratios must be in (0, 1), got {r!r}", "prune_ratios")


@dataclass(frozen=True)
class Candidate:
    """One way to compress one unit: the edit, where its ranks came from, and its weight error and size."""

    edit: Edit
    source: str  # "evbmf w=0.3", "ratio 2", "prune 0.25", "explicit"
    rel_error: float
    params_before: int  # the unit's kernel weights
    params_after: int

    @property
    def unit(self) -> str:
        return self.edit.unit

    @property
    def method(self) -> str:
        return self.edit.method


def candidate(unit: Unit, edit: Edit, source: str = "explicit") -> Candidate:
    """Score one edit of a unit (runs the decomposition once)."""
    if edit.unit != unit.name:
        raise LetiError(f"edit is for {edit.unit!r}, not {unit.name!r}", "edit")
    if edit.method == "prune":
        err = pruning_error(unit, edit)
        kept = n_kept(unit.kernel.shape[-1], edit.ratio)
        after = int(unit.kernel.size // unit.kernel.shape[-1] * kept)
        return Candidate(edit, source, err, unit.params, after)
    f = factorize(unit, edit)
    return Candidate(edit, source, float(f.rel_error(unit.kernel)), unit.params, int(f.n_params))


def cp_modes(shape: tuple[int, ...]) -> int:
    """The rows of CP-ALS's largest Khatri-Rao product on a kernel: the product of all modes but the smallest."""
    return int(np.prod(shape) // min(shape))


def _rank_edits(unit: Unit, method: str, opts: CandidateOptions) -> list[tuple[Edit, str]]:
    """(edit, source) pairs for a decomposition method, before scoring."""
    out: list[tuple[Edit, str]] = []
    k = unit.kernel
    seed = opts.seed
    if method == "tucker2":
        core = unit.factors.core if unit.kind == "tucker2" else k
        r_init = core.shape[2], core.shape[3]
        r_extr = extreme_ranks(core)
        for w in opts.weakened:
            r = weakened_tucker2_ranks(r_init, r_extr, w, opts.min_rank)
            if r is not None:
                out.append((Edit(unit.name, method, r, seed=seed, cp_iters=opts.cp_iters), f"evbmf w={w:g}"))
        for ratio in opts.ratios:
            try:
                r = tucker2_ranks_for_ratio(core.shape, ratio)
            except LetiError:
                continue
            out.append((Edit(unit.name, method, r, seed=seed, cp_iters=opts.cp_iters), f"ratio {ratio:g}"))
    elif method == "cp":
        for ratio in opts.cp_ratios:
            try:
                r = cp_rank_for_ratio(k.shape, ratio)
            except LetiError:
                continue
            if r * cp_modes(k.shape) > opts.cp_max_work:
                continue
            out.append((Edit(unit.name, method, (r,), seed=seed, cp_iters=opts.cp_iters), f"ratio {ratio:g}"))
    elif method == "svd":
        mat = k
        r_init = unit.factors.rank if unit.kind == "svd" else min(mat.shape)
        r_extr = extreme_rank_dense(mat)
        for w in opts.weakened:
            r = weakened_rank(r_init, r_extr, w, opts.min_rank)
            if r is not None:
                out.append(
                    (Edit(unit.name, method, (r,), seed=seed, cp_iters=opts.cp_iters), f"evbmf w={w:g}")
                )
        for ratio in opts.ratios:
            try:
                r = svd_rank_for_ratio(mat.shape, ratio)
            except LetiError:
                continue
            out.append(
                (
                    Edit(unit.name, method, (min(r, r_init),), seed=seed, cp_iters=opts.cp_iters),
                    f"ratio {ratio:g}",
                )
            )
    return out


def layer_candidates(unit: Unit, options: CandidateOptions | None = None) -> list[Candidate]:
    """The candidates of one unit, deduplicated, that shrink its weights; ordered by method then size."""
    with one_blas_thread():
        return _layer_candidates(unit, options or CandidateOptions())


def _layer_candidates(unit: Unit, opts: CandidateOptions) -> list[Candidate]:
    found: dict[Edit, Candidate] = {}
    for method in unit_methods(unit):
        if method not in opts.methods:
            continue
        if method == "prune":
            for norm in opts.norms:
                for ratio in opts.prune_ratios:
                    e = Edit(unit.name, "prune", ratio=ratio, norm=norm)
                    if n_kept(unit.kernel.shape[-1], ratio) < unit.kernel.shape[-1] and e not in found:
                        found[e] = candidate(unit, e, f"prune {ratio:g}")
            continue
        for e, source in _rank_edits(unit, method, opts):
            if e in found:
                continue
            c = candidate(unit, e, source)
            if c.params_after < unit.params:
                found[e] = c
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(found.values(), key=lambda c: (order[c.method], -c.params_after, c.edit.norm))


def list_candidates(model, options: CandidateOptions | None = None) -> dict[str, list[Candidate]]:
    """Candidates of every compressible unit of ``model``, by unit name (units with none are left out)."""
    out = {}
    for name, unit in units(model).items():
        cands = layer_candidates(unit, options)
        if cands:
            out[name] = cands
    return out


# ---- the Arch of an edited model ---------------------------------------------------------------------------------
def edited_spec(spec: dict, edit: Edit) -> dict:
    """The IR layer spec of a unit after ``edit`` (``spec``: its current spec in the Arch)."""
    op = spec["op"]
    r = edit.ranks
    if edit.method == "prune":
        key = "units" if op in ("dense", "svd_dense") else "channels"
        return {**spec, key: n_kept(spec[key], edit.ratio)}
    if edit.method == "svd":
        return {
            "op": "svd_dense",
            "rank": r[0],
            "units": spec["units"],
            "act": spec["act"],
            "bias": spec["bias"],
        }
    common = {"k": spec["k"], "stride": spec["stride"], "channels": spec["channels"], "act": spec["act"],
              "bn": spec["bn"], "bias": spec["bias"]}  # fmt: skip
    if edit.method == "tucker2":
        return {"op": "tucker2", **common, "dilation": spec["dilation"], "rin": r[0], "rout": r[1]}
    return {"op": "cp", **common, "rank": r[0]}


def _input_channels(graph) -> dict[int, int]:
    """Input channels of each Arch node of a single-cell graph (its first primitive's input)."""
    out: dict[int, int] = {}
    names = graph.blocks
    for i in range(graph.n_nodes):
        m = _NODE_RE.search(names[graph.block[i]])
        if m and int(m[1]) not in out:
            out[int(m[1])] = int(graph.in_shape[i][2])
    return out


_NODE_RE = re.compile(r"\.n(\d+):")
_KIND = {"tucker2": "tucker2", "svd_dense": "svd", "cp": "cp", "conv": "conv", "dense": "dense"}


def _pruned_layers(ka: KerasArch, edits) -> list[dict]:
    layers = [dict(x) for x in ka.arch.layers]
    for e in edits:
        if e.unit not in ka.units:
            raise LetiError(f"no compressible unit {e.unit!r} in the model", "edits")
        if e.method == "prune":
            v = ka.units[e.unit]
            layers[v] = edited_spec(layers[v], e)
    return layers


def effective_edits(ka: KerasArch, edits) -> list:
    """``edits`` as ``apply_edits`` carries them out: a decomposed reader of a pruned layer gets its input rank
    capped by the channels left (see ``keras_surgery.clamp_ranks``)."""
    edits = list(edits)
    layers = _pruned_layers(ka, edits)
    if not any(e.method == "prune" for e in edits) or all(e.method == "prune" for e in edits):
        return edits
    c_in = _input_channels(Arch(ka.arch.adjacency, layers, ka.arch.config).to_graph())
    out = []
    for e in edits:
        if e.method != "prune":
            spec = layers[ka.units[e.unit]]
            c_out = spec["units" if spec["op"] in ("dense", "svd_dense") else "channels"]
            e = clamp_ranks(e, c_in[ka.units[e.unit]], c_out, _KIND[spec["op"]])
        out.append(e)
    return out


def edited_arch(ka: KerasArch, edits) -> Arch:
    """The Arch of the model that ``apply_edits(model, edits)`` builds, without building it."""
    edits = effective_edits(ka, edits)
    layers = _pruned_layers(ka, edits)
    for e in edits:
        if e.method != "prune":
            v = ka.units[e.unit]
            layers[v] = edited_spec(layers[v], e)
    return Arch(ka.arch.adjacency, layers, ka.arch.config)


# ---- applying candidates ------------------------------------------------------------------------------------------
@dataclass
class Applied:
    """A compressed model with its Arch and the errors it carries.

    ``layer_errors``: unit -> ``||W - W_hat|| / ||W||`` of the candidate applied to it; ``output_error``:
    ``||y - y_hat|| / ||y||`` of the model outputs on seeded random inputs; ``check``: Keras vs IR totals.
    """

    model: object
    keras_arch: KerasArch
    candidates: list[Candidate]
    layer_errors: dict[str, float]
    output_error: float
    check: object = field(default=None)

    @property
    def arch(self) -> Arch:
        return self.keras_arch.arch

    @property
    def graph(self):
        return self.keras_arch.graph()


def apply_candidates(model, candidates, n_inputs: int = 4, seed: int = 0) -> Applied:
    """Apply candidates (at most one per unit) for real and measure what they cost in accuracy."""
    candidates = list(candidates)
    compressed = apply_edits(model, [c.edit for c in candidates])
    ka = keras_to_arch(compressed)
    err = output_error(model, compressed, n_inputs, seed)
    return Applied(
        compressed,
        ka,
        candidates,
        {c.unit: c.rel_error for c in candidates},
        err,
        check_arch(compressed, ka),
    )


def weight_error(cands) -> float:
    """The planner's objective: the sum over units of squared relative kernel errors."""
    return float(math.fsum(c.rel_error**2 for c in cands))

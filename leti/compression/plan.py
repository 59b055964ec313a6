"""Budget planning: per-layer ranks and prune ratios that meet a latency budget at the least weight error.

``plan(model, target, "0.6x")`` lists the candidates of every compressible unit (:mod:`.candidates`), predicts the
latency of the model with each candidate alone (the Arch of an edited model comes from the IR, no Keras rebuild),
and picks at most one candidate per unit so that the predicted latency of the whole model meets the budget while
the total error ``sum over units of rel_error^2`` (the share of each kernel's energy lost) is smallest:

* ``solver="knapsack"``: a multiple-choice knapsack over the per-candidate savings (dynamic programming on a grid
  of 1/2000 of the saving needed, savings rounded down). Exact (up to that grid) when the predictor is additive,
  as a LUT is, and the chosen edits do not interact: pruning a layer also makes its readers cheaper, so a pruned
  producer next to a decomposed reader saves less than the sum of the two.
* ``solver="greedy"``: repeatedly take the upgrade with the smallest error increase per ms saved.

Either way the chosen combination is then predicted as a whole; when interactions or a non-additive predictor put
it over the budget, the saving asked for grows by the overshoot and the solver runs again.

``steps=K`` compresses in K rounds with intermediate budgets ``base * (budget / base) ** (k / K)``; from the second
round on, Tucker-2 units are re-decomposed through their cores (MUSCO's further compression) and ``on_step(k,
model)`` is called after each round, where a user fine-tunes (returning a model replaces it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from leti.compression.candidates import (
    Candidate,
    CandidateOptions,
    check_methods,
    edited_arch,
    effective_edits,
    list_candidates,
)
from leti.compression.keras_ir import KerasArch, keras_to_arch
from leti.compression.keras_surgery import apply_edits
from leti.errors import LetiError, PredictorError
from leti.graph.layergraph import LayerGraph
from leti.targets import is_host_target

__all__ = [
    "Budget",
    "parse_budget",
    "LayerChoice",
    "StepPlan",
    "Plan",
    "plan",
    "apply",
    "node_totals",
    "default_predictor",
    "is_additive",
    "calibration_archs",
]

GRID = 2000  # knapsack resolution: the saving needed is split into this many steps
SOLVERS = ("auto", "knapsack", "greedy")


# ---- budgets ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """``0.6x``: a fraction of the original model's predicted latency; ``12ms``: an absolute latency."""

    kind: str  # "x" | "ms"
    value: float

    @property
    def text(self) -> str:
        return f"{self.value:g}{self.kind}"

    def ms(self, base_ms: float) -> float:
        return self.value * base_ms if self.kind == "x" else self.value


_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(x|ms)\s*$", re.IGNORECASE)


def parse_budget(budget) -> Budget:
    """A Budget from ``"0.6x"`` / ``"12ms"`` (or a Budget)."""
    if isinstance(budget, Budget):
        return budget
    m = _BUDGET_RE.match(budget) if isinstance(budget, str) else None
    if m is None:
        raise LetiError(
            f"must look like 0.6x (fraction of the original) or 12ms, got {budget!r}", "latency_budget"
        )
    value, kind = float(m[1]), m[2].lower()
    if kind == "x" and not 0 < value < 1:
        raise LetiError(
            f"a fraction of the original latency must be in (0, 1), got {m[1]}x", "latency_budget"
        )
    if kind == "ms" and value <= 0:
        raise LetiError(f"must be a positive number of milliseconds, got {m[1]}ms", "latency_budget")
    return Budget(kind, value)


# ---- predictors -------------------------------------------------------------------------------------------------
def is_additive(predictor) -> bool:
    """Whether the predictor sums per-layer times (a LUT): then the knapsack is exact."""
    return bool(getattr(predictor, "additive", False)) or getattr(predictor, "family", "") == "lut"


def default_predictor(target: str):
    """The target's trained predictor from the registry, or a LetiError saying how to get one.

    A target with a ``kernel`` predictor gets that one: candidates are layers of real models, which kernel-level
    predictors carry over to (issue 13), while whole-model ones trained on search spaces do not.
    Compression never measures: a host target without a trained predictor gets a layer LUT measured on this
    machine only when the caller wires one in (``leti compress`` does: ``leti.workflows.lut_build.LayerLUT``)."""
    from leti.predictors import registry

    try:
        if any(r.family == "kernel" for r in registry.saved(target)):
            return registry.load(target, "kernel")
        return registry.load(target)
    except LetiError as e:
        reason = e.reason
    hint = "train one with leti train or pass predictor="
    if is_host_target(target):
        hint += f"LayerLUT({target!r}) (leti.workflows.lut_build), which measures the layers on this machine"
    raise LetiError(f"no predictor for {target} ({reason}); {hint}", "target") from None


def _predict(predictor, graphs: list[LayerGraph]) -> np.ndarray:
    if hasattr(predictor, "prepare"):
        predictor.prepare(graphs)  # a predictor that fills itself on demand, e.g. a host layer LUT
    ms = np.asarray(predictor.predict(graphs), dtype=float).ravel()
    if ms.size != len(graphs) or not np.all(np.isfinite(ms)):
        raise PredictorError(
            f"returned {ms.size} values (some not finite) for {len(graphs)} graphs", "predictor"
        )
    return ms


# ---- records ----------------------------------------------------------------------------------------------------
_NODE_RE = re.compile(r"\.n(\d+):")


def node_totals(graph: LayerGraph) -> dict[int, tuple[int, int]]:
    """(MACs, params) per Arch node of a single-cell graph (from the ``s0.c0.n<v>:<op>`` block names)."""
    names = graph.blocks
    out: dict[int, list[int]] = {}
    for i in range(graph.n_nodes):
        m = _NODE_RE.search(names[graph.block[i]])
        if m:
            acc = out.setdefault(int(m[1]), [0, 0])
            acc[0] += int(graph.macs[i])
            acc[1] += int(graph.params[i])
    return {k: (v[0], v[1]) for k, v in out.items()}


@dataclass(frozen=True)
class LayerChoice:
    """What the plan does to one unit. ``edit``: the candidate's edit as applied (a decomposed reader of a pruned
    layer keeps at most as much input rank as channels are left); ``params`` / ``macs``: the unit's Arch node
    before and after in the planned model (BN and bias included); ``saved_ms``: the predicted saving of the
    candidate alone; ``rel_error``: the candidate's, on the unpruned kernel."""

    unit: str
    candidate: Candidate
    edit: object
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    saved_ms: float

    @property
    def method(self) -> str:
        return self.candidate.method

    @property
    def setting(self) -> str:
        e = self.edit
        if e.method == "prune":
            return f"{e.norm} {e.ratio:g}"
        return "x".join(map(str, e.ranks))

    @property
    def rel_error(self) -> float:
        return self.candidate.rel_error


@dataclass
class StepPlan:
    """One round: the budget it aimed at, the predicted latency before and after, the choices."""

    step: int
    budget_ms: float
    base_ms: float
    predicted_ms: float
    choices: list[LayerChoice]
    n_candidates: int

    @property
    def edits(self):
        return [c.edit for c in self.choices]

    @property
    def weight_error(self) -> float:
        return float(math.fsum(c.rel_error**2 for c in self.choices))


@dataclass
class Plan:
    """A budgeted compression plan; ``apply(plan)`` builds the compressed Keras model.

    ``original_ms``: predicted latency of the input model; ``predicted_ms``: of the planned one; ``budget_ms``:
    what the budget means in ms; ``arch``: the planned model's Arch (its graph is what was predicted).
    """

    target: str
    budget: Budget
    budget_ms: float
    original_ms: float
    predicted_ms: float
    methods: tuple[str, ...]
    solver: str
    steps: list[StepPlan]
    arch: object
    model: object = field(repr=False, default=None)
    result: object = field(repr=False, default=None)  # the model after all rounds when steps > 1

    @property
    def choices(self) -> list[LayerChoice]:
        """The last choice per unit over all rounds."""
        last: dict[str, LayerChoice] = {}
        for s in self.steps:
            for c in s.choices:
                last[c.unit] = c
        return list(last.values())

    @property
    def meets_budget(self) -> bool:
        return self.predicted_ms <= self.budget_ms * (1 + 1e-9)

    def table(self) -> list[dict]:
        """One row per edited unit and round (for printing or JSON)."""
        rows = []
        for s in self.steps:
            for c in s.choices:
                rows.append({
                    "step": s.step, "layer": c.unit, "method": c.method, "setting": c.setting,
                    "source": c.candidate.source, "rel_error": c.rel_error, "params_before": c.params_before,
                    "params": c.params_after, "macs_before": c.macs_before, "macs": c.macs_after,
                    "saved_ms": c.saved_ms,
                })  # fmt: skip
        return rows


# ---- solvers ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Option:
    unit: int  # index into the unit list
    cand: int  # index into that unit's candidates
    save: float  # predicted ms saved alone
    err: float  # rel_error ** 2


def _efficient(options: list[_Option]) -> list[_Option]:
    """Options that save time and are not dominated (another saves at least as much with less error)."""
    opts = sorted((o for o in options if o.save > 0), key=lambda o: (-o.save, o.err))
    out, best = [], math.inf
    for o in opts:
        if o.err < best:
            out.append(o)
            best = o.err
    return out[::-1]  # increasing saving


def _greedy(per_unit: list[list[_Option]], need: float) -> list[_Option] | None:
    """Upgrade one unit at a time by the smallest error increase per ms saved until ``need`` ms are saved."""
    cur: dict[int, _Option] = {}
    saved = 0.0
    while saved < need:
        best, best_score = None, math.inf
        for u, opts in enumerate(per_unit):
            c = cur.get(u)
            c_save, c_err = (c.save, c.err) if c else (0.0, 0.0)
            for o in opts:
                if o.save > c_save:
                    score = (o.err - c_err) / (o.save - c_save)
                    if score < best_score - 1e-15:
                        best, best_score = o, score
        if best is None:
            return None
        saved += best.save - (cur[best.unit].save if best.unit in cur else 0.0)
        cur[best.unit] = best
    return list(cur.values())


def _knapsack(per_unit: list[list[_Option]], need: float) -> list[_Option] | None:
    """Least total error with total saving >= need (savings rounded down to a grid of need / GRID)."""
    if need <= 0:
        return []
    g, q = GRID, need / GRID
    dp = np.full(g + 1, math.inf)
    dp[0] = 0.0
    tables = []  # per unit: (chosen option index, predecessor state) for every state after it
    for opts in per_unit:
        new, arg, pred = dp.copy(), np.full(g + 1, -1), np.arange(g + 1)
        for k, o in enumerate(opts):
            s = int(math.floor(o.save / q + 1e-9))
            if s <= 0:
                continue
            val, frm = np.full(g + 1, math.inf), np.full(g + 1, -1)
            if s < g:
                val[s:g], frm[s:g] = dp[: g - s] + o.err, np.arange(g - s)
            # every state that reaches the goal lands on it: the budget is met either way
            lo = max(0, g - s)
            i = int(np.argmin(dp[lo:]))
            val[g], frm[g] = dp[lo + i] + o.err, lo + i
            better = val < new
            new[better], arg[better], pred[better] = val[better], k, frm[better]
        tables.append((arg, pred))
        dp = new
    if not np.isfinite(dp[g]):
        return None
    chosen, j = [], g
    for u in range(len(per_unit) - 1, -1, -1):
        arg, pred = tables[u]
        if arg[j] >= 0:
            chosen.append(per_unit[u][arg[j]])
        j = int(pred[j])
    return chosen[::-1]


# ---- planning -----------------------------------------------------------------------------------------------------
@dataclass
class _Scored:
    ka: KerasArch
    base_graph: LayerGraph
    base_ms: float
    cands: list[list[Candidate]]  # per unit
    per_unit: list[list[_Option]]  # per unit: the efficient options, increasing saving


def _score(model, predictor, options: CandidateOptions) -> _Scored:
    ka = keras_to_arch(model)
    found = list_candidates(model, options)
    names = [n for n in found if n in ka.units]
    if not names:
        raise LetiError(
            f"the model has no compressible layers for methods {', '.join(options.methods)} "
            "(non-grouped Conv2D, Dense other than the classifier; prunable outputs for prune)",
            "model",
        )
    cands = [found[n] for n in names]
    base_graph = ka.graph()
    graphs = [base_graph] + [edited_arch(ka, [c.edit]).to_graph() for cs in cands for c in cs]
    ms = _predict(predictor, graphs)
    base_ms = float(ms[0])
    per_unit, k = [], 1
    for u, cs in enumerate(cands):
        opts = [_Option(u, i, base_ms - float(ms[k + i]), c.rel_error**2) for i, c in enumerate(cs)]
        per_unit.append(_efficient(opts))
        k += len(cs)
    return _Scored(ka, base_graph, base_ms, cands, per_unit)


def _solve(sc: _Scored, predictor, budget_ms: float, solver: str) -> tuple[list[_Option], float]:
    """Choose options meeting ``budget_ms`` as predicted for the whole combination; (choice, predicted ms)."""
    if sc.base_ms <= budget_ms:
        return [], sc.base_ms
    solve = _knapsack if solver == "knapsack" else _greedy
    fastest = [opts[-1] for opts in sc.per_unit if opts]
    t_min = _predict_choice(sc, predictor, fastest)
    if t_min > budget_ms:
        raise LetiError(
            f"{budget_ms:.3f} ms cannot be met: compressing every layer as far as the candidates go gives "
            f"{t_min:.3f} ms (predicted; the original is {sc.base_ms:.3f} ms)",
            "latency_budget",
        )
    need = sc.base_ms - budget_ms
    for _ in range(12):
        chosen = solve(sc.per_unit, need)
        if chosen is None:
            break
        t = _predict_choice(sc, predictor, chosen)
        if t <= budget_ms:
            return chosen, t
        # interactions (or a non-additive predictor): ask for the overshoot on top and solve again
        need += (t - budget_ms) * 1.05 + 1e-9
    return fastest, t_min


def _predict_choice(sc: _Scored, predictor, chosen: Sequence[_Option]) -> float:
    arch = edited_arch(sc.ka, [sc.cands[o.unit][o.cand].edit for o in chosen])
    return float(_predict(predictor, [arch.to_graph()])[0])


def _choices(sc: _Scored, chosen: list[_Option]) -> list[LayerChoice]:
    chosen = sorted(chosen, key=lambda o: o.unit)
    cands = [sc.cands[o.unit][o.cand] for o in chosen]
    edits = effective_edits(sc.ka, [c.edit for c in cands])
    before = node_totals(sc.base_graph)
    after = node_totals(edited_arch(sc.ka, edits).to_graph())
    out = []
    for o, cand, edit in zip(chosen, cands, edits, strict=True):
        v = sc.ka.units[cand.unit]
        out.append(
            LayerChoice(cand.unit, cand, edit, before[v][1], after[v][1], before[v][0], after[v][0], o.save)
        )
    return out


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 10:
        raise LetiError(f"must be an integer in 1..10, got {steps!r}", "steps")
    return steps


def plan(
    model,
    target: str,
    budget,
    methods: Sequence[str] | str = ("tucker2", "cp", "svd", "prune"),
    predictor=None,
    steps: int = 1,
    on_step: Callable | None = None,
    solver: str = "auto",
    options: CandidateOptions | None = None,
    margin: float = 0.0,
) -> Plan:
    """Per-layer ranks / prune ratios that meet ``budget`` on ``target`` at the least total weight error.

    ``predictor``: anything with ``predict(graphs) -> ms``, and optionally ``prepare(graphs)`` to fill itself
    before predicting (default: the target's trained predictor from the registry). ``solver``: 'knapsack' (default for
    additive predictors), 'greedy' (default otherwise). ``margin``: plan for ``(1 - margin) x`` the budget, to
    absorb prediction error. See the module docstring for ``steps`` and ``on_step``.
    """
    if not isinstance(target, str) or not target:
        raise LetiError("must name a target such as host-litert-cpu-1t", "target")
    b = parse_budget(budget)
    methods = check_methods(methods)
    steps = _check_steps(steps)
    if solver not in SOLVERS:
        raise LetiError(f"must be one of {', '.join(SOLVERS)}, got {solver!r}", "solver")
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 0.5:
        raise LetiError(f"must be a number in [0, 0.5), got {margin!r}", "margin")
    if on_step is not None and not callable(on_step):
        raise LetiError("must be a callable on_step(step, model)", "on_step")
    predictor = default_predictor(target) if predictor is None else predictor
    if not hasattr(predictor, "predict"):
        raise LetiError(f"must have a predict(graphs) method, got {type(predictor).__name__}", "predictor")
    if solver == "auto":
        solver = "knapsack" if is_additive(predictor) else "greedy"
    opts = replace(options or CandidateOptions(), methods=methods)

    current, rounds, result = model, [], None
    original_ms = budget_ms = None
    for k in range(1, steps + 1):
        sc = _score(current, predictor, opts)
        if original_ms is None:
            original_ms = sc.base_ms
            budget_ms = b.ms(original_ms)
        goal = budget_ms * (1 - margin)
        step_budget = original_ms * (goal / original_ms) ** (k / steps)
        chosen, t = _solve(sc, predictor, step_budget, solver)
        rounds.append(StepPlan(k, step_budget, sc.base_ms, t, _choices(sc, chosen), sum(map(len, sc.cands))))
        if steps > 1:
            current = apply_edits(current, rounds[-1].edits)
            if on_step is not None:
                returned = on_step(k, current)
                current = returned if returned is not None else current
            result = current
    final_arch = keras_to_arch(result).arch if result is not None else edited_arch(sc.ka, rounds[-1].edits)
    return Plan(target, b, budget_ms, original_ms, rounds[-1].predicted_ms, methods, solver, rounds, final_arch,
                model, result)  # fmt: skip


def apply(p: Plan, on_step: Callable | None = None):
    """The compressed Keras model of a plan (the model built during planning when it ran in several rounds)."""
    if not isinstance(p, Plan):
        raise LetiError(f"must be a Plan, got {type(p).__name__}", "plan")
    if p.result is not None:
        return p.result
    out = apply_edits(p.model, p.steps[0].edits)
    if on_step is not None:
        returned = on_step(1, out)
        out = returned if returned is not None else out
    return out


# ---- calibration ---------------------------------------------------------------------------------------------------
def calibration_archs(ka: KerasArch, n: int = 3, seed: int = 0) -> list:
    """``n`` seeded random variants of a model's Arch for calibration: each conv / Tucker-2 / dense unit is, with
    probability 1/2, replaced by a Tucker-2 (SVD for dense) keeping 1/4 or 1/2 of its ranks."""
    import random

    from leti.compression.candidates import _input_channels
    from leti.compression.keras_surgery import Edit

    rng = random.Random(seed)
    c_in = _input_channels(ka.graph())
    out = []
    for _ in range(n):
        edits = []
        for unit, v in ka.units.items():
            spec = ka.arch.layers[v]
            if rng.random() < 0.5:
                continue
            frac = rng.choice((0.25, 0.5))
            if spec["op"] == "conv" and spec["groups"] == 1:
                ranks = (c_in[v], spec["channels"])
            elif spec["op"] == "tucker2":
                ranks = (spec["rin"], spec["rout"])
            elif spec["op"] in ("dense", "svd_dense"):
                ranks = (spec.get("rank") or min(c_in[v], spec["units"]),)
            else:
                continue
            method = "svd" if len(ranks) == 1 else "tucker2"
            edits.append(Edit(unit, method, tuple(max(1, int(r * frac)) for r in ranks)))
        out.append(edited_arch(ka, edits))
    return out

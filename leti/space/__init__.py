"""Architecture spaces: the Arch spec, importers from NAS-Bench-101/201 and FBNet, and samplers.

``parse_arch(space, text)`` reads a named space's native text; guessing the space of free-form user input (and
the ``{"space", "arch"}`` wrapper) is ``leti.importers.inputs``'s job."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from leti.errors import ArchError, LetiError
from leti.space import fbnet, leti_space, nb101, nb201
from leti.space.arch import Arch


class Space(Protocol):
    """What each space module exports (``nb101``, ``nb201``, ``fbnet``, ``leti_space``)."""

    NAME: str  # the canonical name, as in the CSV ``space`` column
    ALIASES: tuple[str, ...]  # other names accepted everywhere (CLI, API, CSV)

    def parse(self, text) -> Arch:
        """An Arch of the space's native text (the CSV ``arch`` column)."""
        ...

    def sample(self, rng: np.random.Generator, input_size=None) -> tuple[Arch, str]:
        """One random arch and its native text; ``input_size`` changes the macro network's input."""
        ...

    def to_string(self, arch: Arch) -> str:
        """The native text of ``arch``; ArchError when the arch is not of this space's form."""
        ...


# One record per space, in this order; nothing else in leti lists the spaces.
SPACE_MODULES: dict[str, Space] = {m.NAME: m for m in (nb101, nb201, fbnet, leti_space)}
SPACES = tuple(SPACE_MODULES)
# ``model``: imported real models (mobile-ml-benchmark, model files) in the store. Not a space of Archs one samples
# from: the arch text is the LayerGraph JSON itself, read by ``leti.datasets.archs.graph_of``.
MODEL_SPACE = "model"
STORE_SPACES = (*SPACES, MODEL_SPACE)  # every value the store's ``space`` column takes
ALIASES = {alias: m.NAME for m in SPACE_MODULES.values() for alias in (m.NAME, *m.ALIASES)} | {
    MODEL_SPACE: MODEL_SPACE
}
_ALIAS_NAMES = tuple(a for m in SPACE_MODULES.values() for a in m.ALIASES)

# Sampling the wide space without a cap would produce multi-GMAC models that take long to measure
DEFAULT_CONSTRAINTS = {"leti": {"max_macs": 600_000_000}}
CONSTRAINT_KEYS = ("max_macs", "min_macs", "max_params", "min_params", "input_size", "max_tries")


def canonical_space(name: str, field: str = "space") -> str:
    if not isinstance(name, str) or name.strip().lower() not in ALIASES:
        raise LetiError(
            f"{name!r} is not a known space (known: {', '.join(STORE_SPACES)}; aliases {', '.join(_ALIAS_NAMES)})",
            field,
        )
    return ALIASES[name.strip().lower()]


def parse_arch(space: str, text) -> Arch:
    """An Arch from a space's native text (the CSV ``arch`` column)."""
    space = canonical_space(space)
    if space == MODEL_SPACE:
        raise LetiError(
            "a model's text is its LayerGraph JSON, not an architecture spec; read it as a graph", "space"
        )
    return SPACE_MODULES[space].parse(text)


def native_text(arch: Arch) -> str:
    """The text of ``arch`` in its own space's format (Arch JSON for the leti space and for archs that left their
    space's form, such as a pruned NB201 cell)."""
    space = SPACE_MODULES.get(arch.space)
    if space is not None:
        try:
            return space.to_string(arch)
        except ArchError:
            pass
    return arch.to_json()


def sample(space: str, n: int, seed: int = 0, constraints: dict | None = None) -> list[tuple[Arch, str]]:
    """``n`` archs of ``space``, unique by canonical hash, deterministic for ``seed``.

    Returns (arch, native text) pairs. ``constraints``: max_macs, min_macs, max_params, min_params, input_size,
    max_tries.
    """
    space = canonical_space(space)
    if space == MODEL_SPACE:
        raise LetiError("imported real models cannot be sampled; import them (leti import)", "space")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LetiError(f"must be a positive integer, got {n!r}", "n")
    cons = {**DEFAULT_CONSTRAINTS.get(space, {}), **(constraints or {})}
    for key in cons:
        if key not in CONSTRAINT_KEYS:
            raise LetiError(f"unknown constraint (known: {', '.join(CONSTRAINT_KEYS)})", f"constraints.{key}")
    rng = np.random.default_rng(seed)
    max_tries = int(cons.get("max_tries", 50 * n + 1000))
    seen: set[str] = set()
    out: list[tuple[Arch, str]] = []
    for _ in range(max_tries):
        arch, text = SPACE_MODULES[space].sample(rng, cons.get("input_size"))
        h = arch.hash
        if h in seen:
            continue
        if any(k in cons for k in ("max_macs", "min_macs", "max_params", "min_params")):
            g = arch.to_graph()
            macs, params = g.total_macs, g.total_params
            if macs > cons.get("max_macs", np.inf) or macs < cons.get("min_macs", 0):
                continue
            if params > cons.get("max_params", np.inf) or params < cons.get("min_params", 0):
                continue
        seen.add(h)
        out.append((arch, text))
        if len(out) == n:
            return out
    raise LetiError(
        f"found only {len(out)} unique archs meeting the constraints after {max_tries} tries; "
        "relax the constraints or ask for fewer",
        "n",
    )


__all__ = [
    "ALIASES",
    "MODEL_SPACE",
    "SPACES",
    "STORE_SPACES",
    "SPACE_MODULES",
    "Arch",
    "Space",
    "canonical_space",
    "native_text",
    "parse_arch",
    "sample",
]

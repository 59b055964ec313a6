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

# Sampling the wide space without a cap would produce models far beyond real CNNs that take long to measure; the cap
# is ResNet-50 size (issue 13: real-model ranges). Pass a lower max_macs to stay small.
DEFAULT_CONSTRAINTS = {"leti": {"max_macs": 4_000_000_000}}
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
    size = getattr(SPACE_MODULES[space], "SIZE", None)
    if size is not None and n > size:  # asking for more than there is would search for minutes
        raise LetiError(f"asks for {n:,} archs; the {space} space holds {size:,} (fewer distinct by canonical hash)",
                        "n")  # fmt: skip
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise LetiError(f"must be an integer in [0, 2**32), got {seed!r}", "seed")
    if constraints is not None and not isinstance(constraints, dict):
        raise LetiError(f"must be a JSON object, got {type(constraints).__name__}", "constraints")
    cons = {**DEFAULT_CONSTRAINTS.get(space, {}), **(constraints or {})}
    for key, value in cons.items():
        _check_constraint(key, value)
    rng = np.random.default_rng(seed)
    max_tries = cons.get("max_tries", 50 * n + 1000)
    # without an explicit max_tries, stop once no new arch turned up in a long while: the space (or what the
    # constraints leave of it) is used up, and searching on would take minutes to say so
    stall_limit = None if "max_tries" in cons else STALL_TRIES
    seen: set[str] = set()
    out: list[tuple[Arch, str]] = []
    stalled = tries = 0
    while tries < max_tries and (stall_limit is None or stalled < stall_limit):
        tries += 1
        stalled += 1
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
        stalled = 0
        if len(out) == n:
            return out
    raise LetiError(
        f"found only {len(out)} unique archs meeting the constraints after {tries:,} tries; "
        "relax the constraints or ask for fewer",
        "n",
    )


STALL_TRIES = 20_000
_NUMBER_KEYS = ("max_macs", "min_macs", "max_params", "min_params")


def _check_constraint(key: str, value) -> None:
    """One sampler constraint: a known key with a value of the right kind, within reason."""
    field = f"constraints.{key}"
    if key not in CONSTRAINT_KEYS:
        raise LetiError(f"unknown constraint (known: {', '.join(CONSTRAINT_KEYS)})", field)
    if key in _NUMBER_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e18:
            raise LetiError(f"must be a number in [0, 1e18), got {value!r}", field)
    elif key == "max_tries":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**8:
            raise LetiError(f"must be an integer in [1, 100000000], got {value!r}", field)
    elif key == "input_size" and value is not None:
        sides = value if isinstance(value, list | tuple) else [value]
        if not (1 <= len(sides) <= 2 and all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096
                                             for v in sides)):  # fmt: skip
            raise LetiError(f"must be a side in [1, 4096] or [height, width], got {value!r}", field)


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

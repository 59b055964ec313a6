"""Architecture spaces: the Arch spec, importers from NAS-Bench-101/201 and FBNet, and samplers."""

from __future__ import annotations

import json

import numpy as np

from leti.errors import ArchError, LetiError
from leti.space import fbnet, leti_space, nb101, nb201
from leti.space.arch import Arch

# ``model``: imported real models (mobile-ml-benchmark, model files). Not a space one samples from: the arch text
# is the LayerGraph JSON itself (``LayerGraph.to_dict``), read by ``leti.datasets.archs.graph_of``.
MODEL_SPACE = "model"
SAMPLED_SPACES = ("nasbench101", "nasbench201", "fbnet", "leti")
SPACES = (*SAMPLED_SPACES, MODEL_SPACE)
ALIASES = {"nb101": "nasbench101", "nb201": "nasbench201", "nasbench101": "nasbench101",
           "nasbench201": "nasbench201", "fbnet": "fbnet", "leti": "leti", "model": MODEL_SPACE}  # fmt: skip

# Sampling the wide space without a cap would produce multi-GMAC models that take long to measure
DEFAULT_CONSTRAINTS = {"leti": {"max_macs": 600_000_000}}
CONSTRAINT_KEYS = ("max_macs", "min_macs", "max_params", "min_params", "input_size", "max_tries")


def canonical_space(name: str, field: str = "space") -> str:
    if not isinstance(name, str) or name.strip().lower() not in ALIASES:
        raise LetiError(
            f"{name!r} is not a known space (known: {', '.join(SPACES)}; aliases nb101, nb201)", field
        )
    return ALIASES[name.strip().lower()]


def parse_arch(space: str, text) -> Arch:
    """An Arch from a space's native text (the CSV ``arch`` column)."""
    space = canonical_space(space)
    _not_model(space)
    if space == "nasbench201":
        return nb201.from_string(text)
    if space == "nasbench101":
        return nb101.from_text(text)
    if space == "fbnet":
        return fbnet.from_text(text)
    if isinstance(text, dict):
        return Arch.from_dict(text)
    return Arch.from_json(text)


def _not_model(space: str) -> None:
    if space == MODEL_SPACE:
        raise LetiError(
            "a model's text is its LayerGraph JSON, not an architecture spec; read it as a graph", "space"
        )


def native_text(arch: Arch) -> str:
    """The text of ``arch`` in its own space's format (Arch JSON for the leti space)."""
    try:
        if arch.space == "nasbench201":
            return nb201.to_string(arch)
        if arch.space == "nasbench101":
            return nb101.to_text(arch)
        if arch.space == "fbnet":
            return fbnet.to_text(arch)
    except ArchError:
        pass  # e.g. a pruned NB201 arch: fall back to its JSON
    return arch.to_json()


def to_arch(obj, space: str | None = None) -> Arch:
    """Accept every form the Python API takes: Arch, Arch JSON (str or dict), NB201 string, NB101 (matrix, ops),
    FBNet block list."""
    if isinstance(obj, Arch):
        return obj
    if space is not None:
        return parse_arch(space, obj)
    if isinstance(obj, dict):
        if "matrix" in obj and "ops" in obj:
            return nb101.from_spec(obj["matrix"], obj["ops"])
        if "space" in obj and "arch" in obj and "adjacency" not in obj:
            return parse_arch(obj["space"], obj["arch"])
        return Arch.from_dict(obj)
    if isinstance(obj, str):
        s = obj.strip()
        if s.startswith("|"):
            return nb201.from_string(s)
        if s.startswith("{"):
            try:
                d = json.loads(s)
            except ValueError as e:
                raise ArchError(f"invalid JSON ({e})", "arch") from None
            return to_arch(d)
        if "," in s or s in fbnet.BLOCKS:
            return fbnet.from_text(s)
        raise ArchError("cannot tell which space this string belongs to; pass space=", "arch")
    if isinstance(obj, list | tuple):
        if len(obj) == 2 and isinstance(obj[1], list | tuple) and all(isinstance(o, str) for o in obj[1]):
            return nb101.from_spec(obj[0], obj[1])
        if all(isinstance(o, str) for o in obj):
            return fbnet.from_blocks(list(obj))
    raise ArchError(f"cannot read an architecture from {type(obj).__name__}", "arch")


def _candidate(space: str, rng: np.random.Generator, input_size) -> tuple[Arch, str]:
    if space == "nasbench201":
        text = nb201.random_string(rng)
        arch = nb201.from_string(text)
        if input_size:
            arch = arch.with_config(input_size=input_size)
            return arch, text
        return arch, text
    if space == "nasbench101":
        while True:
            m, ops = nb101.random_spec(rng)
            try:
                arch = nb101.from_spec(m, ops)
            except ArchError:
                continue  # NB101 rejects disconnected or too dense cells; sample again like NB101 does
            if input_size:
                arch = arch.with_config(input_size=input_size)
            return arch, nb101.to_text(arch)
    if space == "fbnet":
        blocks = fbnet.random_blocks(rng)
        arch = fbnet.from_blocks(blocks, input_size=input_size)
        return arch, ",".join(blocks)
    arch = leti_space.random_arch(rng)
    if input_size:
        arch = arch.with_config(input_size=input_size)
    return arch, arch.to_json()


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
        arch, text = _candidate(space, rng, cons.get("input_size"))
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
    "SAMPLED_SPACES",
    "SPACES",
    "Arch",
    "canonical_space",
    "native_text",
    "parse_arch",
    "sample",
    "to_arch",
]

"""NAS-Bench-101 cells: ``(matrix, ops)`` <-> Archs, with NB101's macro network and pruning.

The native text (the CSV ``arch`` column) is JSON: ``{"matrix": [[0,1,…],…], "ops": ["input", …, "output"]}``.
The space protocol (``leti.space.Space``): ``NAME``, ``ALIASES``, ``parse``, ``sample``, ``to_string``.
"""

from __future__ import annotations

import copy
import json

import numpy as np

from leti.errors import ArchError
from leti.space.arch import Arch, live_nodes
from leti.space.config import DEFAULTS
from leti.space.layers import normalize_layer

NAME = "nasbench101"
ALIASES: tuple[str, ...] = ("nb101",)
OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
MAX_VERTICES = 7
MAX_EDGES = 9
SIZE = 423_624  # unique cells of NAS-Bench-101: what ``leti.space.sample`` can draw at most

# leti's default macro network is NAS-Bench-101's: 128-channel 3x3 stem, 3 stacks of 3 cells, max-pool between
CONFIG = copy.deepcopy(DEFAULTS)


def from_spec(matrix, ops, config: dict | None = None, strict: bool = True) -> Arch:
    """Arch of an NB101 ``(matrix, ops)``; pruned like NB101's ModelSpec. ``strict`` enforces NB101's limits."""
    if hasattr(matrix, "tolist"):
        matrix = matrix.tolist()
    if not isinstance(matrix, list | tuple) or not all(isinstance(r, list | tuple) for r in matrix):
        raise ArchError("must be a square 0/1 matrix", "matrix")
    if not isinstance(ops, list | tuple):
        raise ArchError("must be a list of op names", "ops")
    n = len(matrix)
    if n < 2:
        raise ArchError(f"needs at least 2 vertices (input and output), got {n}", "matrix")
    if len(ops) != n:
        raise ArchError(f"has {len(ops)} entries but the matrix has {n} rows", "ops")
    if strict:
        if n > MAX_VERTICES:
            raise ArchError(f"has {n} vertices; NAS-Bench-101 allows at most {MAX_VERTICES}", "matrix")
        for i, op in enumerate(ops[1:-1], start=1):
            if op not in OPS:
                raise ArchError(f"unknown op {op!r} (NAS-Bench-101 ops: {', '.join(OPS)})", f"ops[{i}]")
    for i, row in enumerate(matrix):
        if len(row) != n:
            raise ArchError(f"must have {n} entries to be square, got {len(row)}", f"matrix[{i}]")
    # NB101 prunes vertices that are on no input->output path before anything else
    m = [[int(v) if j > i else v for j, v in enumerate(row)] for i, row in enumerate(matrix)]
    for i in range(n):
        for j in range(i + 1):
            if m[i][j]:
                raise ArchError("must be upper-triangular (a DAG in topological order)", f"matrix[{i}][{j}]")
    keep = live_nodes(m, [False] * n)
    if not keep:
        raise ArchError("the input is not connected to the output", "matrix")
    pm = [[m[i][j] for j in keep] for i in keep]
    n_edges = sum(map(sum, pm))
    if strict and n_edges > MAX_EDGES:
        raise ArchError(
            f"has {n_edges} edges after pruning; NAS-Bench-101 allows at most {MAX_EDGES}", "matrix"
        )
    return Arch(pm, [ops[i] for i in keep], {**CONFIG, **(config or {})}, "nasbench101")


def parse(text: str) -> Arch:
    """An Arch of native text: JSON ``{"matrix", "ops"}`` or ``[matrix, ops]`` (or that object itself)."""
    try:
        d = json.loads(text) if isinstance(text, str) else text
    except ValueError as e:
        raise ArchError(f'must be JSON {{"matrix": …, "ops": …}} ({e})', "arch") from None
    if isinstance(d, list | tuple) and len(d) == 2:
        return from_spec(d[0], d[1])
    if not isinstance(d, dict) or "matrix" not in d or "ops" not in d:
        raise ArchError('must be {"matrix": [[…]], "ops": [...]} or [matrix, ops]', "arch")
    return from_spec(d["matrix"], d["ops"])


def to_string(arch: Arch) -> str:
    ops = []
    for i, L in enumerate(arch.layers):
        if L["op"] in ("input", "output"):
            ops.append(L["op"])
        elif L["op"] == "conv" and L["k"] in (1, 3) and _conv(L["k"]) == L:
            ops.append(f"conv{L['k']}x{L['k']}-bn-relu")
        elif L["op"] == "maxpool" and L["k"] == 3 and L["stride"] == 1:
            ops.append("maxpool3x3")
        else:
            raise ArchError(f"holds {L['op']}, not a NAS-Bench-101 op", f"layers[{i}]")
    return json.dumps({"matrix": [list(r) for r in arch.adjacency], "ops": ops}, separators=(",", ":"))


def _conv(k: int) -> dict:
    return normalize_layer(f"conv{k}x{k}-bn-relu")


def random_spec(rng: np.random.Generator, n_vertices: int = MAX_VERTICES) -> tuple[list, list]:
    """One random (matrix, ops) the way NAS-Bench-101 samples: each upper edge with p=0.5, ops uniform."""
    m = np.triu(rng.integers(0, 2, size=(n_vertices, n_vertices)), 1)
    ops = ["input"] + [OPS[i] for i in rng.integers(0, len(OPS), size=n_vertices - 2)] + ["output"]
    return m.tolist(), ops


def sample(rng: np.random.Generator, input_size=None) -> tuple[Arch, str]:
    """One random cell as NB101 samples it, and its native text; ``input_size`` changes the macro network."""
    while True:
        m, ops = random_spec(rng)
        try:
            arch = from_spec(m, ops)
        except ArchError:
            continue  # NB101 rejects disconnected or too dense cells; sample again like NB101 does
        if input_size:
            arch = arch.with_config(input_size=input_size)
        return arch, to_string(arch)

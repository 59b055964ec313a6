"""NAS-Bench-201 cells: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` strings <-> Archs in node-op form.

NB201 puts ops on the 6 edges of a 4-node DAG; node j sums its incoming edges. In node-op form every edge becomes a
vertex carrying its op and nodes 1 and 2 become ``add`` vertices, in a fixed order::

    0 input, 1 e01, 2 node1, 3 e02, 4 e12, 5 node2, 6 e03, 7 e13, 8 e23, 9 output

``none`` edges become ``zero`` vertices (a multiply by zero, as in NB201's PyTorch code) so that the arch says what
an exported model really runs; ``Arch.prune()`` removes them and whatever they leave dead.
The space protocol (``leti.space.Space``): ``NAME``, ``ALIASES``, ``parse``, ``sample``, ``to_string``.

``from_index(i)`` / ``index_of(arch)`` use NAS-Bench-201's own arch index (0..15624: the order of the benchmark's
``meta_archs``, in which its API and HW-NAS-Bench list the cells; index 0 is
``|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|``).
``nb201_index.bin`` holds that order as 15,625 little-endian uint16 codes, a code being the cell's position in
``all_strings()``; it was written from the arch column of HW-NAS-Bench's NB201 file (HayeonLee/HELP @45f70eb, MIT),
whose rows follow the benchmark's index, and it holds no measurement.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from leti.errors import ArchError
from leti.space.arch import Arch
from leti.space.layers import normalize_layer

NAME = "nasbench201"
ALIASES: tuple[str, ...] = ("nb201",)
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
SIZE = len(OPS) ** 6  # 15,625 cells (fewer distinct by canonical hash): what ``leti.space.sample`` can draw
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # the order edges appear in the string

CONFIG = {
    "input_size": [32, 32],
    "input_channels": 3,
    "channels": 16,
    "stem": [{"op": "conv", "k": 3, "act": "none"}],
    "stacks": 3,
    "cells_per_stack": 5,
    "channel_multiplier": 2,
    "downsample": "resblock",
    "merge": "sum",
    "head": [{"op": "bn"}, {"op": "act", "fn": "relu"}],
    "classes": 10,
}

_VERTEX_OF_EDGE = {(0, 1): 1, (0, 2): 3, (1, 2): 4, (0, 3): 6, (1, 3): 7, (2, 3): 8}
_VERTEX_OF_NODE = {0: 0, 1: 2, 2: 5, 3: 9}
_ADJ = np.zeros((10, 10), dtype=int)
for (_i, _j), _v in _VERTEX_OF_EDGE.items():
    _ADJ[_VERTEX_OF_NODE[_i], _v] = 1
    _ADJ[_v, _VERTEX_OF_NODE[_j]] = 1
ADJACENCY = tuple(tuple(int(x) for x in row) for row in _ADJ)


def parse_ops(text: str) -> tuple[str, ...]:
    """The 6 edge ops of a cell string, in EDGES order; ArchError names what is wrong."""
    if not isinstance(text, str):
        raise ArchError(f"must be a NAS-Bench-201 cell string, got {type(text).__name__}", "arch")
    s = text.strip()
    if not (s.startswith("|") and s.endswith("|")):
        raise ArchError(f"{text!r} must look like |op~0|+|op~0|op~1|+|op~0|op~1|op~2|", "arch")
    nodes = s[1:-1].split("|+|")
    if len(nodes) != 3:
        raise ArchError(f"needs 3 nodes separated by '+', got {len(nodes)}", "arch")
    ops: dict[tuple[int, int], str] = {}
    for j, node in enumerate(nodes, start=1):
        toks = node.split("|")
        if len(toks) != j:
            raise ArchError(f"node {j} needs {j} incoming edges, got {len(toks)}", f"arch node {j}")
        for tok in toks:
            op, sep, src = tok.partition("~")
            if not sep or not src.isdigit():
                raise ArchError(f"{tok!r} must be op~input", f"arch node {j}")
            i = int(src)
            if i >= j or (i, j) in ops:
                raise ArchError(f"edge from node {i} is invalid or repeated", f"arch node {j}")
            if op not in OPS:
                raise ArchError(f"unknown op {op!r} (known: {', '.join(OPS)})", f"arch node {j}")
            ops[(i, j)] = op
    return tuple(ops[e] for e in EDGES)


def _layers(ops) -> list:
    layers = ["input", *([None] * 8), "output"]
    for e, op in zip(EDGES, ops, strict=True):
        layers[_VERTEX_OF_EDGE[e]] = op
    layers[2] = layers[5] = "add"
    return layers


def from_ops(ops, config: dict | None = None) -> Arch:
    return Arch(ADJACENCY, tuple(_layers(ops)), {**CONFIG, **(config or {})}, "nasbench201")


@lru_cache(maxsize=1)
def _default_config() -> tuple[dict, str]:
    cfg = from_ops(("none",) * 6).config
    return cfg, json.dumps(cfg, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=32768)
def _from_string(text: str) -> Arch:
    # every string that parses is a valid arch in the fixed node-op layout: skip re-validating it
    layers = tuple(normalize_layer(x) for x in _layers(parse_ops(text)))
    cfg, key = _default_config()
    return Arch._trusted(ADJACENCY, layers, cfg, "nasbench201", key)


def parse(text: str) -> Arch:
    """The space protocol's reader of native text: the cell string, under NB201's macro network."""
    return from_string(text)


def from_string(text: str, config: dict | None = None) -> Arch:
    """Arch of a NAS-Bench-201 cell string (memoised for the default macro config)."""
    if not isinstance(text, str):
        raise ArchError(f"must be a NAS-Bench-201 cell string, got {type(text).__name__}", "arch")
    if config:
        return from_ops(parse_ops(text), config)
    return _from_string(text)


def to_string(arch: Arch) -> str:
    """The cell string of an Arch in NB201 node-op form (as made by ``from_ops``, before pruning)."""
    if arch.adjacency != ADJACENCY:
        raise ArchError("is not in NAS-Bench-201 node-op form", "arch")
    names = {
        ("zero",): "none",
        ("identity",): "skip_connect",
        ("avgpool",): "avg_pool_3x3",
    }
    ops = {}
    for e, v in _VERTEX_OF_EDGE.items():
        L = arch.layers[v]
        if L["op"] == "conv" and L["pre_act"] == "relu" and L["k"] in (1, 3):
            ops[e] = f"nor_conv_{L['k']}x{L['k']}"
        elif (L["op"],) in names:
            ops[e] = names[(L["op"],)]
        else:
            raise ArchError(f"vertex {v} holds {L['op']}, not a NAS-Bench-201 op", f"layers[{v}]")
    nodes = ["|".join(f"{ops[(i, j)]}~{i}" for i in range(j)) for j in (1, 2, 3)]
    return "|" + "|+|".join(nodes) + "|"


def all_strings() -> list[str]:
    """All 15,625 cell strings, in a fixed order."""
    out = []
    for idx in range(len(OPS) ** 6):
        ops, k = [], idx
        for _ in range(6):
            ops.append(OPS[k % len(OPS)])
            k //= len(OPS)
        nodes = [[f"{ops[EDGES.index((i, j))]}~{i}" for i in range(j)] for j in (1, 2, 3)]
        out.append("|" + "|+|".join("|".join(n) for n in nodes) + "|")
    return out


def random_string(rng: np.random.Generator) -> str:
    ops = [OPS[i] for i in rng.integers(0, len(OPS), size=6)]
    nodes = [[f"{ops[EDGES.index((i, j))]}~{i}" for i in range(j)] for j in (1, 2, 3)]
    return "|" + "|+|".join("|".join(n) for n in nodes) + "|"


def sample(rng: np.random.Generator, input_size=None) -> tuple[Arch, str]:
    """One random cell (ops uniform on the 6 edges) and its string; ``input_size`` changes the macro network."""
    text = random_string(rng)
    arch = from_string(text)
    return (arch.with_config(input_size=input_size) if input_size else arch), text


# ---- NAS-Bench-201's arch index ----------------------------------------------------------------------------------
N_ARCHS = len(OPS) ** 6
INDEX_FILE = Path(__file__).with_name("nb201_index.bin")


@lru_cache(maxsize=1)
def _index_tables() -> tuple[np.ndarray, np.ndarray]:
    """(code of each NB201 index, NB201 index of each code)."""
    codes = np.fromfile(INDEX_FILE, dtype="<u2").astype(np.int64)
    if codes.size != N_ARCHS or np.unique(codes).size != N_ARCHS or codes.max() >= N_ARCHS:
        raise ArchError(f"{INDEX_FILE.name} is damaged: reinstall leti", "index")
    inverse = np.empty(N_ARCHS, dtype=np.int64)
    inverse[codes] = np.arange(N_ARCHS)
    return codes, inverse


def _code(ops) -> int:
    return sum(OPS.index(op) * len(OPS) ** k for k, op in enumerate(ops))


def string_of_index(index) -> str:
    """The cell string of NAS-Bench-201 arch ``index`` (0..15624)."""
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < N_ARCHS:
        raise ArchError(
            f"must be a NAS-Bench-201 index, an integer in 0..{N_ARCHS - 1}, got {index!r}", "index"
        )
    code = int(_index_tables()[0][int(index)])
    ops = [OPS[(code // len(OPS) ** k) % len(OPS)] for k in range(6)]
    nodes = ["|".join(f"{ops[EDGES.index((i, j))]}~{i}" for i in range(j)) for j in (1, 2, 3)]
    return "|" + "|+|".join(nodes) + "|"


def from_index(index, config: dict | None = None) -> Arch:
    """The Arch of NAS-Bench-201 arch ``index``, as ``api.arch(index)`` of the benchmark names it."""
    return from_string(string_of_index(index), config)


def index_of(arch) -> int:
    """The NAS-Bench-201 index of a cell string or of an Arch in NB201 node-op form."""
    text = arch if isinstance(arch, str) else to_string(arch)
    return int(_index_tables()[1][_code(parse_ops(text))])

"""Arch: a cell DAG (adjacency + one layer per node) plus the macro config that stacks it into a network.

Like NAS-Bench-101's ModelSpec, an Arch is plain data: it validates on construction, ``prune()`` drops the nodes
that lie on no input->output path, and ``hash`` is invariant to relabelling the nodes.

Two identities:
* ``hash`` — canonical hash of the *pruned* arch: archs that compute the same function share it. Train/test splits
  group by it, so an arch and its relabelled or dead-branch twin never land on both sides.
* ``full_hash`` — canonical hash of the arch *as given*, dead branches and zero ops included. On some runtimes dead
  branches still execute and cost time (NAS-Bench-201's ``none`` edge is a multiply by zero), so the store keeps
  such twins as separate archs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

from leti.errors import ArchError
from leti.graph.memo import memo
from leti.space.config import normalize_config
from leti.space.expand import expand
from leti.space.hashing import canonical_form, digest
from leti.space.layers import compact_layer, layer_key, normalize_layer

MAX_NODES = 256  # a whole compressed model (ResNet-, MobileNetV2-like) can be one cell


def _matrix(adjacency) -> tuple[tuple[int, ...], ...]:
    if hasattr(adjacency, "tolist"):
        adjacency = adjacency.tolist()
    if not isinstance(adjacency, list | tuple) or not adjacency:
        raise ArchError("must be a non-empty square matrix (list of rows)", "adjacency")
    n = len(adjacency)
    if n > MAX_NODES:
        raise ArchError(f"has {n} nodes; at most {MAX_NODES} are allowed", "adjacency")
    if n < 2:
        raise ArchError("needs at least 2 nodes (input and output)", "adjacency")
    rows = []
    for i, row in enumerate(adjacency):
        if hasattr(row, "tolist"):
            row = row.tolist()
        if not isinstance(row, list | tuple) or len(row) != n:
            got = len(row) if isinstance(row, list | tuple) else type(row).__name__
            raise ArchError(f"must have {n} entries to be square, got {got}", f"adjacency[{i}]")
        out = []
        for j, v in enumerate(row):
            if v not in (0, 1) or (isinstance(v, float) and not v.is_integer()):
                raise ArchError(f"must be 0 or 1, got {v!r}", f"adjacency[{i}][{j}]")
            out.append(int(v))
        rows.append(tuple(out))
    return tuple(rows)


def _find_cycle(m) -> list[int] | None:
    n = len(m)
    state = [0] * n  # 0 new, 1 on stack, 2 done
    path: list[int] = []

    def dfs(v):
        state[v] = 1
        path.append(v)
        for w in range(n):
            if m[v][w]:
                if state[w] == 1:
                    return path[path.index(w) :] + [w]
                if state[w] == 0:
                    found = dfs(w)
                    if found:
                        return found
        path.pop()
        state[v] = 2
        return None

    for v in range(n):
        if state[v] == 0:
            found = dfs(v)
            if found:
                return found
    return None


def _check_structure(m) -> None:
    n = len(m)
    for i in range(n):
        if m[i][i]:
            raise ArchError("self-loop: a node cannot feed itself", f"adjacency[{i}][{i}]")
    for i in range(n):
        for j in range(i):
            if m[i][j]:
                cycle = _find_cycle(m)
                if cycle:
                    raise ArchError(f"contains a cycle {' -> '.join(map(str, cycle))}", "adjacency")
                raise ArchError(
                    "entry below the diagonal: number the nodes in topological order (upper-triangular matrix)",
                    f"adjacency[{i}][{j}]",
                )
    fwd = _reach(m, 0, forward=True)
    bwd = _reach(m, n - 1, forward=False)
    for v in range(n):
        if v not in fwd:
            raise ArchError(f"node {v} is cut off from the input (no path from node 0)", f"adjacency[*][{v}]")
        if v not in bwd:
            raise ArchError(
                f"node {v} is cut off from the output (no path to node {n - 1})", f"adjacency[{v}]"
            )


def _reach(m, start: int, forward: bool, skip: frozenset = frozenset()) -> set[int]:
    n = len(m)
    if forward:
        nbrs = [[w for w in range(n) if m[v][w]] for v in range(n)]
    else:
        nbrs = [[w for w in range(n) if m[w][v]] for v in range(n)]
    seen = {start}
    todo = [start]
    while todo:
        for w in nbrs[todo.pop()]:
            if w not in seen and w not in skip:
                seen.add(w)
                todo.append(w)
    return seen


def live_nodes(adjacency, is_zero: list[bool]) -> list[int]:
    """Nodes on an input->output path that avoids zero ops; [] when the output only receives zeros."""
    n = len(adjacency)
    zeros = frozenset(i for i in range(n) if is_zero[i])
    fwd = _reach(adjacency, 0, True, zeros)
    if n - 1 not in fwd:
        return []
    bwd = _reach(adjacency, n - 1, False, zeros)
    return [v for v in range(n) if v in fwd and v in bwd]


# Spaces reuse a handful of cell shapes (NB201: one adjacency, 64 zero patterns): memoise the structure queries,
# within a budget of matrix cells (a 256-node cell's key alone is ~0.5 MB)
@memo(1_000_000, weigh=lambda preds: len(preds) ** 2)  # the key holds the n x n matrix
def _preds(adjacency: tuple) -> tuple[tuple[int, ...], ...]:
    n = len(adjacency)
    return tuple(tuple(u for u in range(v) if adjacency[u][v]) for v in range(n))


@memo(1_000_000, weigh=lambda mask: len(mask) ** 2)
def _live_mask(adjacency: tuple, is_zero: tuple) -> tuple[bool, ...]:
    keep = set(live_nodes(adjacency, is_zero))
    return tuple(i in keep for i in range(len(adjacency)))


@dataclass(frozen=True, eq=False)
class Arch:
    """A cell DAG plus its macro config. Node 0 is the input, the last node the output."""

    adjacency: tuple[tuple[int, ...], ...]
    layers: tuple[dict, ...]
    config: dict = field(default_factory=dict)
    space: str = "leti"

    def __post_init__(self):
        m = _matrix(self.adjacency)
        if not isinstance(self.layers, list | tuple):
            raise ArchError(f"must be a list of layer specs, got {type(self.layers).__name__}", "layers")
        if len(self.layers) != len(m):
            raise ArchError(f"has {len(self.layers)} entries but the adjacency has {len(m)} nodes", "layers")
        layers = tuple(normalize_layer(spec, f"layers[{i}]") for i, spec in enumerate(self.layers))
        last = len(layers) - 1
        for i, layer in enumerate(layers):
            if (i == 0) != (layer["op"] == "input"):
                raise ArchError("node 0 must be 'input' and no other node may be", f"layers[{i}].op")
            if (i == last) != (layer["op"] == "output"):
                raise ArchError(f"node {last} must be 'output' and no other node may be", f"layers[{i}].op")
        _check_structure(m)
        object.__setattr__(self, "adjacency", m)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "config", normalize_config(self.config))
        if not isinstance(self.space, str):
            raise ArchError("must be a string", "space")

    # ---- identity ----------------------------------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.layers)

    @cached_property
    def config_key(self) -> str:
        return json.dumps(self.config, sort_keys=True, separators=(",", ":"))

    @cached_property
    def _key(self) -> tuple:
        """Exact (not relabelling-invariant) identity: equality and the memo key for expansion."""
        return (self.adjacency, self.layers, self.config_key)

    @classmethod
    def _trusted(cls, adjacency, layers, config: dict, space: str, config_key: str | None = None) -> Arch:
        """Build without validation, for importers whose output is valid by construction (hot paths)."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "adjacency", adjacency)
        object.__setattr__(obj, "layers", layers)
        object.__setattr__(obj, "config", config)
        object.__setattr__(obj, "space", space)
        if config_key is not None:
            obj.__dict__["config_key"] = config_key
        return obj

    def _canonical(self) -> str:
        edges = [(i, j) for i, row in enumerate(self.adjacency) for j, v in enumerate(row) if v]
        form = canonical_form([layer_key(x) for x in self.layers], edges)
        return digest(json.dumps(form, separators=(",", ":")), self.config_key)

    @cached_property
    def full_hash(self) -> str:
        return self._canonical()

    @cached_property
    def hash(self) -> str:
        pruned = self.prune()
        return pruned.full_hash if pruned is not self else self.full_hash

    @property
    def edges(self) -> list[tuple[int, int]]:
        return [(i, j) for i, row in enumerate(self.adjacency) for j, v in enumerate(row) if v]

    # ---- transformations ---------------------------------------------------------------------------------------
    @cached_property
    def _live(self) -> tuple[bool, ...]:
        return _live_mask(self.adjacency, tuple(x["op"] == "zero" for x in self.layers))

    @cached_property
    def preds(self) -> tuple[tuple[int, ...], ...]:
        """Inputs of each node, in increasing order."""
        return _preds(self.adjacency)

    @cached_property
    def vertex_names(self) -> tuple[str, ...]:
        """Block names of the cell's nodes in a LayerGraph, e.g. ``n3:conv``."""
        return tuple(f"n{v}:{x['op']}" for v, x in enumerate(self.layers))

    def live_mask(self) -> list[bool]:
        """Which nodes survive ``prune()``: the rest only compute zeros or dead values."""
        return list(self._live)

    def prune(self) -> Arch:
        """Drop zero ops and every node on no input->output path.

        When only zeros reach the output, the cell becomes input -> zero -> output (it outputs zeros).
        """
        keep = live_nodes(self.adjacency, [x["op"] == "zero" for x in self.layers])
        if not keep:
            return Arch(
                ((0, 1, 0), (0, 0, 1), (0, 0, 0)), ("input", "zero", "output"), self.config, self.space
            )
        if len(keep) == self.n_nodes:
            return self
        adj = tuple(tuple(self.adjacency[i][j] for j in keep) for i in keep)
        return Arch(adj, tuple(self.layers[i] for i in keep), self.config, self.space)

    def with_config(self, **changes) -> Arch:
        return Arch(self.adjacency, self.layers, {**self.config, **changes}, self.space)

    def to_graph(self):
        """The full network as a LayerGraph (cells x stacks x config, shapes inferred)."""
        return expand(self)

    # ---- serialisation -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        cfg = dict(self.config)
        cfg["stem"] = [compact_layer(x) for x in cfg["stem"]]
        cfg["head"] = [compact_layer(x) for x in cfg["head"]]
        return {
            "adjacency": [list(r) for r in self.adjacency],
            "layers": [compact_layer(x) for x in self.layers],
            "config": cfg,
            "space": self.space,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> Arch:
        if not isinstance(d, dict):
            raise ArchError(f"must be a JSON object, got {type(d).__name__}", "arch")
        missing = [k for k in ("adjacency", "layers") if k not in d]
        if missing:
            raise ArchError("missing key", missing[0])
        unknown = set(d) - {"adjacency", "layers", "config", "space"}
        if unknown:
            raise ArchError("unknown key (known: adjacency, layers, config, space)", sorted(unknown)[0])
        return cls(d["adjacency"], d["layers"], d.get("config") or {}, d.get("space", "leti"))

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            d = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ArchError(f"invalid JSON ({e})", "arch") from None
        return cls.from_dict(d)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Arch):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return self._key_hash

    @cached_property
    def _key_hash(self) -> int:  # archs key several memo tables: hash the nested key once
        return hash(self._key)

    def __repr__(self) -> str:
        ops = [x["op"] for x in self.layers]
        return f"Arch(space={self.space!r}, nodes={self.n_nodes}, ops={ops}, hash={self.hash[:10]})"

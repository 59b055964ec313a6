"""One door for user input: whatever a user hands leti as an architecture becomes an ``Arch`` or a ``LayerGraph``
here, for the Python API, the HTTP service, the CLI and the store's training sets alike.

Accepted forms:

* an ``Arch``, or Arch JSON (a dict or a string); Arch JSON carries its own space, so a ``space`` given beside it
  is ignored;
* a space's native text: an NB201 cell string, FBNet block names (comma-joined or a list), NB101 ``(matrix, ops)``
  or ``{"matrix", "ops"}``; ``space`` says how to read it where the form alone does not;
* the wrapper ``{"space": …, "arch": …}`` (CSV rows, HTTP request items, JSON lines, ``leti space sample`` output):
  its own ``space`` wins over the caller's default (see ``unwrap``);
* ``{"space": "nb201", "index": 1234}``: a NAS-Bench-201 arch by the benchmark's own index (``nb201.from_index``);
* on the command line also a file: JSON, JSON lines, or a model file (``leti.importers.models``: .tflite, .onnx,
  .keras, .h5; ``input_shape`` fixes a dynamic input). Only the CLI helpers here read files; ``graph_of``, which the
  service calls, never touches the file system;
* in the Python API also an in-memory model: a ``torch.nn.Module`` (exported through ONNX; needs ``input_shape``)
  or a Keras model;
* with space ``model`` (imported real models in the store): the LayerGraph JSON itself (``LayerGraph.to_dict``).

Parsed graphs are cached by their input text (``graph_of``), because NAS loops and training re-read the same archs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from leti.errors import ArchError, LetiError, TooLargeError, excerpt
from leti.graph.layergraph import LayerGraph
from leti.graph.memo import SizedLRU, graph_weight
from leti.importers import bounded_json
from leti.importers.keras_file import read_keras_model
from leti.importers.models import is_model_file, read_model
from leti.importers.torch_module import read_torch
from leti.paths import is_file
from leti.space import MODEL_SPACE, Arch, canonical_space, fbnet, nb101, nb201, parse_arch
from leti.space.expand import expanded_size


# ---- one arch or many ----------------------------------------------------------------------------------------------
def _is_matrix(m) -> bool:
    if isinstance(m, np.ndarray):
        return m.ndim == 2
    return (
        isinstance(m, list | tuple) and bool(m) and all(isinstance(r, list | tuple | np.ndarray) for r in m)
    )


def is_single(obj) -> bool:
    """Whether ``obj`` is one arch rather than a list of them.

    Lists are ambiguous: an FBNet block list and an NB101 ``(matrix, ops)`` pair are single archs, while a list of
    NB201 strings is a batch. Block names and matrices never appear as whole archs, so they decide.
    """
    if isinstance(obj, list | tuple):
        if not obj:
            return False
        if len(obj) == 2 and _is_matrix(obj[0]) and isinstance(obj[1], list | tuple):
            return all(isinstance(o, str) for o in obj[1])
        return all(isinstance(o, str) and o.strip() in fbnet.BLOCKS for o in obj)
    if isinstance(obj, np.ndarray):
        return obj.ndim == 0
    if isinstance(obj, Arch | LayerGraph | str | bytes | dict) or framework_model(obj) is not None:
        return True
    return not isinstance(obj, Iterable)  # generators and other iterables are batches


def as_list(archs) -> list:
    return [archs] if is_single(archs) else list(archs)


def framework_model(obj) -> str | None:
    """ "torch" or "keras" when ``obj`` is a model of that framework (checked without importing either), else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(obj, keras.Model):
        return "keras"
    return None


def model_graph(obj, input_shape=None) -> LayerGraph:
    """The LayerGraph of an in-memory torch module or Keras model; ``input_shape`` = (H, W, C)."""
    kind = framework_model(obj)
    if kind == "torch":
        return read_torch(obj, input_shape)
    if kind == "keras":
        return read_keras_model(obj, input_shape)
    raise LetiError(f"expected a torch.nn.Module or a Keras model, got {type(obj).__name__}", "model")


# ---- one arch --------------------------------------------------------------------------------------------------------
def unwrap(obj, space: str | None = None, space_field: str = "space") -> tuple[Any, str | None]:
    """``(arch, space)`` of a ``{"space", "arch"}`` wrapper; anything else is returned as is with ``space``.

    The wrapper's own ``space`` wins over the caller's default; an Arch JSON inside says its own space (None).
    A dict holding ``adjacency`` is Arch JSON, not a wrapper, even if it has an ``arch`` key.
    """
    if isinstance(obj, dict) and "index" in obj and "arch" not in obj and "adjacency" not in obj:
        return _indexed(obj, space, space_field), None
    if not (isinstance(obj, dict) and "arch" in obj and "adjacency" not in obj):
        return obj, space
    s = obj.get("space", space)
    if s is not None and not isinstance(s, str):
        raise LetiError("must be a string", space_field)
    arch = obj["arch"]
    if isinstance(arch, dict) and "adjacency" in arch:
        return arch, None  # e.g. `leti space sample` output: the Arch JSON says its own space
    return arch, s


def _indexed(obj: dict, space: str | None, space_field: str) -> Arch:
    """``{"space": "nb201", "index": 1234}``: a NAS-Bench-201 arch by the benchmark's own index."""
    s = obj.get("space", space)
    if s is None:
        raise LetiError("an arch given by index needs its space (nb201)", space_field)
    if not isinstance(s, str):
        raise LetiError("must be a string", space_field)
    if canonical_space(s, space_field) != nb201.NAME:
        raise LetiError(f"archs by index exist for {nb201.NAME} only, not {s!r}", space_field)
    return nb201.from_index(obj["index"])


def to_arch(obj, space: str | None = None) -> Arch:
    """An Arch from any accepted form (see the module docstring); ``space`` reads native text."""
    obj, space = unwrap(obj, space)
    if isinstance(obj, Arch):
        return obj
    if isinstance(obj, dict) and "adjacency" in obj:
        return Arch.from_dict(
            obj
        )  # Arch JSON carries its own space; a ``space`` beside it cannot contradict it
    if space is not None:
        return parse_arch(space, obj)
    if isinstance(obj, dict):
        if "matrix" in obj and "ops" in obj:
            return nb101.from_spec(obj["matrix"], obj["ops"])
        return Arch.from_dict(obj)
    if isinstance(obj, str):
        s = obj.strip()
        if s.startswith("|"):
            return nb201.from_string(s)
        if s.startswith("{"):
            try:
                d = bounded_json.loads(s, "arch")
            except LetiError as e:
                raise ArchError(e.reason, "arch") from None
            return to_arch(d)
        if "," in s or s in fbnet.BLOCKS:
            return fbnet.parse(s)
        raise ArchError("cannot tell which space this string belongs to; pass space=", "arch")
    if isinstance(obj, list | tuple):
        if len(obj) == 2 and isinstance(obj[1], list | tuple) and all(isinstance(o, str) for o in obj[1]):
            return nb101.from_spec(obj[0], obj[1])
        if all(isinstance(o, str) for o in obj):
            return fbnet.from_blocks(list(obj))
    raise ArchError(f"cannot read an architecture from {type(obj).__name__}", "arch")


def rebase(e: LetiError, prefix: str) -> LetiError:
    """The same error with its field placed under ``prefix``: ``arch node 2`` -> ``archs[3].arch node 2`` for the
    prefix ``archs[3].arch``, ``layers[1]`` -> ``archs[3].arch.layers[1]``."""
    f = e.field
    if f is None or f == "arch":
        name = prefix
    elif f.startswith(("arch ", "arch.", "arch[")):
        name = prefix + f[4:]
    elif f.startswith("["):
        name = prefix + f
    else:
        name = f"{prefix}.{f}"
    try:
        return type(e)(e.reason, name)
    except TypeError:  # a subclass with another signature
        return LetiError(e.reason, name)


# ---- archs to graphs, cached ---------------------------------------------------------------------------------------
# NAS loops re-query the same archs (mutations of a population); parsing + expanding costs ~1 ms an arch, so the
# graphs of recently seen archs are kept (their feature rows are memoised on the graph objects too), within a budget
# of nodes + edges (200k: ~560 NB201 networks, ~30 MB) so that large or many archs cannot pin memory.
GRAPHS = SizedLRU(200_000, graph_weight)
# Training and evaluation read a target's whole measured set back from the store, once per family and fold: keep
# all of it (the public sets hold up to ~15,000 archs a space).
STORED_GRAPHS = SizedLRU(65536)


def _cache_key(obj, space: str | None):
    if isinstance(obj, str):
        return (space, obj)
    if isinstance(obj, dict | list):  # JSON from the wire
        try:
            return (space, json.dumps(obj, sort_keys=True, separators=(",", ":")))
        except (TypeError, ValueError, RecursionError):
            return None
    return None


def layergraph_json(obj) -> LayerGraph:
    """A LayerGraph from its JSON (a dict or a string): the arch form of space ``model``."""
    if isinstance(obj, str):
        try:
            obj = bounded_json.loads(obj, "arch")
        except LetiError as e:
            raise ArchError(f"a model's arch must be LayerGraph JSON ({e.reason})", "arch") from None
    if not isinstance(obj, dict):
        raise ArchError("a model's arch must be a LayerGraph JSON object", "arch")
    return LayerGraph.from_dict(obj)


def _too_large(size: int, max_size: int) -> TooLargeError:
    return TooLargeError(
        f"expands to {size:,} layers and edges, over the limit of {max_size:,} per arch", "arch"
    )


def _make_graph(obj, space: str | None, max_size: int | None = None) -> LayerGraph:
    if space == MODEL_SPACE:
        g = layergraph_json(obj)  # as large as its JSON, which the caller has bounded
        if max_size is not None and graph_weight(g) > max_size:
            raise _too_large(graph_weight(g), max_size)
        return g
    arch = to_arch(obj, space)
    if max_size is not None and expanded_size(arch) > max_size:  # known before the whole network is built
        raise _too_large(expanded_size(arch), max_size)
    return arch.to_graph()


def graph_of(obj, space: str | None = None, field: str = "arch", space_field: str = "space",
             cache: SizedLRU = GRAPHS, input_shape=None, max_size: int | None = None) -> LayerGraph:  # fmt: skip
    """The LayerGraph of one arch in any accepted form; errors name ``field`` (or ``space_field``).
    ``input_shape`` (H, W, C) is for in-memory torch / Keras models only. An arch that would expand past
    ``max_size`` nodes + edges raises ``TooLargeError`` before it is built."""
    if isinstance(obj, LayerGraph):
        return obj
    if framework_model(obj) is not None:
        try:
            return model_graph(obj, input_shape)
        except LetiError as e:
            raise e if e.field == "input_shape" else rebase(e, field) from None
    try:
        obj, space = unwrap(obj, space, space_field)
    except LetiError as e:  # a bad index is this arch's; a bad space names its own field
        raise (rebase(e, field) if e.field == "index" else e) from None
    if space is not None:
        space = canonical_space(space, space_field)
    try:
        key = None if isinstance(obj, Arch) else _cache_key(obj, space)
        if key is None:
            return _make_graph(obj, space, max_size)
        hit = cache.get(key)
        if hit is not None and (max_size is None or graph_weight(hit) <= max_size):
            return hit
        g = _make_graph(obj, space, max_size)
        cache.put(key, g)
        return g
    except LetiError as e:
        raise rebase(e, field) from None
    except (RecursionError, MemoryError) as e:
        raise ArchError(f"too large or too deeply nested ({type(e).__name__})", field) from None
    except Exception as e:  # parsing user input: any failure is the input's fault, reported on its field
        raise ArchError(
            f"cannot read this arch ({excerpt(f'{type(e).__name__}: {e}', 200)})", field
        ) from None


def graphs_of(
    archs: list, space: str | None = None, field: str = "archs", input_shape=None
) -> list[LayerGraph]:
    if space is not None:
        space = canonical_space(space, "space")
    return [graph_of(obj, space, f"{field}[{i}]", input_shape=input_shape) for i, obj in enumerate(archs)]


def stored_graph(space: str, text: str) -> LayerGraph:
    """The graph of an arch as the store holds it (its space and native text), kept for the next training run."""
    return graph_of(text, space, cache=STORED_GRAPHS)


def clear_graphs() -> None:
    GRAPHS.clear()
    STORED_GRAPHS.clear()


# ---- the command line: arguments and files -------------------------------------------------------------------------
def _existing_file(text: str) -> Path | None:
    """``text`` as a path when it names a file; a string that cannot be a path (too long, a NUL) is not one."""
    return Path(text) if is_file(text) else None


MAX_FILE_BYTES = 256 << 20  # an archs.jsonl of ~500k archs


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LetiError(f"is not UTF-8 text (byte {e.start})", name) from None


def _read_text(p: Path) -> str:
    return _text(bounded_json.read_bytes(p, str(p), MAX_FILE_BYTES), str(p))


def read_arch_arg(text: str, space: str | None = None, input_shape=None) -> tuple[Arch | None, LayerGraph]:
    """``(arch, graph)`` from one command-line argument: a native string, Arch JSON, a JSON/JSONL file (its first
    line) or a model file; a model file gives no Arch (None). ``input_shape`` (H, W, C) fixes a model file's
    dynamic input."""
    p = _existing_file(text)
    if p is None:
        if is_model_file(text):
            raise LetiError("no such file", text)  # a model file's name: not an arch string
        arch = to_arch(text, space)
        return arch, arch.to_graph()
    if is_model_file(p):
        return None, read_model(p, input_shape)
    content = _read_text(p).strip()
    first = content.splitlines()[0] if content else ""
    if not first:
        raise LetiError("file is empty", str(p))
    doc = first if p.suffix == ".jsonl" else content
    try:
        obj = bounded_json.loads(doc, str(p))
    except LetiError as e:
        if doc.lstrip()[:1] in ("{", "["):  # meant as JSON: say why it is not
            raise e from None
        obj = first  # a native string such as an NB201 cell
    arch = to_arch(obj, space)
    return arch, arch.to_graph()


def read_jsonl(path: str, space: str | None = None) -> tuple[list, list[str | None], list[str]]:
    """Archs, their spaces and where each came from (``archs.jsonl line 7``) from a JSON-lines file ('-': stdin);
    a line that is not JSON is read as a native string such as an NB201 cell."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise LetiError(f"is larger than {MAX_FILE_BYTES:,} bytes", "stdin")
        lines, name = _text(data, "stdin").splitlines(), "stdin"
    else:
        p = _existing_file(path)
        if p is None:
            raise LetiError("no such file", path)
        lines, name = _read_text(p).splitlines(), path
    archs, spaces, where = [], [], []
    for n, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        here = f"{name} line {n}"
        try:
            obj = bounded_json.loads(line, here)
        except LetiError as e:
            if line[:1] in ("{", "["):  # meant as JSON: say why it is not
                raise e from None
            obj = line  # a native string such as an NB201 cell
        arch, s = unwrap(obj, space, f"{here}: space")
        if arch is obj and not isinstance(obj, dict | str | list):
            raise LetiError(f"must be an arch, not {type(obj).__name__}", here)
        archs.append(arch)
        spaces.append(s)
        where.append(here)
    if not archs:
        raise LetiError("holds no archs", name)
    return archs, spaces, where

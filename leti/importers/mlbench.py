"""mobile-ml-benchmark (qed-usc/mobile-ml-benchmark) -> op-list LayerGraphs, whole-model and per-op GPU latencies.

The source has two files:

* ``tflite_cnn_ops_gpu.csv``: one row per TFLite op of each model in execution order (``model, operation,
  feature``, the feature a dict of shapes), then per device the op's GPU time (µs) and the name of the GPU kernel
  that ran it, e.g. ``convolution_2d_5_linked_:_add_6_linked_:_relu_7``. The numbers in a kernel name are the GPU
  delegate's node ids: the listed op and the elementwise ops *linked* (fused) into it.
* ``tflite_cnn_e2e.csv``: per model, ``<device>|<setting>|<float|quant>|mean`` and ``|std`` in µs.

Each model becomes an op-list graph (``leti.graph.oplist``): its listed ops in order, each with its shapes, plus the
elementwise ops named by its kernel's links, and the ops the per-op file leaves out. Left-out ops show as gaps in
the kernel-name node ids; their kinds are inferred from where they sit (``_unlisted``):

* after a squeeze-excite gate (a 1x1 layer on a 1x1 input ending in sigmoid / hard-sigmoid): the ``mul`` that scales
  the feature map;
* right before a conv / depthwise conv / pool whose input is larger than a SAME-padded one would be: the explicit
  ``PAD`` of a PyTorch export. It is not a node: the consumer keeps its padded input shape with VALID padding, and
  the fusion rules (``leti.predictors.fusion``) see the pad from the shapes;
* anything else: BatchNorm + ReLU (``bn``, ``act``) in threes, residual ``add`` (+ ``act``) for the rest.

Each device x setting x precision becomes a target: ``<device>-tflite-cpu-<setting>`` (e.g.
``pixel4-tflite-cpu-1large``) and ``<device>-tflite-gpu``, with ``-int8`` for the quantised models. Latency is stored
in ms; the raw unit is µs.
"""

from __future__ import annotations

import ast
import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from leti.errors import LetiError
from leti.graph import shapes as S
from leti.graph.layergraph import LayerGraph
from leti.graph.oplist import OpSpec, oplist_graph

OPS_FILE = "tflite_cnn_ops_gpu.csv"
E2E_FILE = "tflite_cnn_e2e.csv"
SOURCE = "mobile-ml-benchmark"
DEVICES = ("pixel4", "s10", "mi8se", "a03s", "iphone7", "iphonexs")
PRECISIONS = {"float": "", "quant": "-int8"}  # file's precision -> target suffix
MAX_FILE_BYTES = 64 << 20
MAX_FEATURE_CHARS = 2000
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
_LINK = "_linked_:_"


def target_name(device: str, setting: str, precision: str = "float") -> str:
    """``pixel4, 1large, float`` -> ``pixel4-tflite-cpu-1large``; ``gpu`` -> ``pixel4-tflite-gpu``."""
    if precision not in PRECISIONS:
        raise LetiError(f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})", "precision")
    unit = "gpu" if setting == "gpu" else f"cpu-{setting}"
    return f"{device}-tflite-{unit}{PRECISIONS[precision]}"


@dataclass(frozen=True)
class KernelName:
    """A GPU kernel name split into its base (``convolution_2d``), node ids and linked ops (``add``, ``relu``...)."""

    base: str
    ids: tuple[int, ...]
    links: tuple[str, ...]

    @classmethod
    def parse(cls, name: str) -> KernelName:
        parts = name.split(_LINK)
        head = re.fullmatch(r"(.*?)((?:_\d+)+)", parts[0])
        if head is None:
            raise LetiError(f"kernel name {name!r} has no node id", "kernel")
        ids = [int(v) for v in head.group(2).strip("_").split("_")]
        links = []
        for p in parts[1:]:
            m = re.fullmatch(r"([a-z_]+?)_(\d+)", p)
            if m is None:
                raise LetiError(f"kernel name {name!r}: cannot read the link {p!r}", "kernel")
            links.append(m.group(1))
            ids.append(int(m.group(2)))
        return cls(head.group(1), tuple(ids), tuple(links))


@dataclass
class OpRow:
    """One row of the per-op file."""

    model: str
    operation: str
    feature: dict
    gpu_us: dict[str, float]  # device -> µs
    kernel: dict[str, str]  # device -> GPU kernel name
    line: int

    def structure(self) -> KernelName:
        """The kernel name that shows the most structure: the most links, never a merged or winograd kernel."""
        best = None
        for d in DEVICES:
            name = self.kernel.get(d)
            if not name or "plus" in name or "winograd" in name:
                continue
            k = KernelName.parse(name)
            if best is None or len(k.links) > len(best.links):
                best = k
        if best is None:  # every device ran a special kernel: keep the ids, lose the links
            best = KernelName.parse(next(iter(self.kernel.values())))
        return best


@dataclass
class MLBenchModel:
    """One model: its op-list graph, whole-model latencies (ms) per target and per-op GPU times.

    ``op_nodes[i]`` is the graph node of listed op ``i`` (the conv, not its linked ops); ``gpu_ms[target][i]`` its
    GPU time and ``gpu_kernel[target][i]`` the kernel that ran it."""

    name: str
    graph: LayerGraph
    latency_ms: dict[str, float] = field(default_factory=dict)
    std_ms: dict[str, float] = field(default_factory=dict)
    op_nodes: list[int] = field(default_factory=list)
    gpu_ms: dict[str, list[float]] = field(default_factory=dict)
    gpu_kernel: dict[str, list[str]] = field(default_factory=dict)


# ---- reading the files -----------------------------------------------------------------------------------------
def _open_csv(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise LetiError("no such file", str(path))
    if path.stat().st_size > MAX_FILE_BYTES:
        raise LetiError(f"larger than {MAX_FILE_BYTES >> 20} MB", str(path))
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LetiError(f"cannot read ({e})", str(path)) from None


def _feature(text: str, where: str) -> dict:
    if len(text) > MAX_FEATURE_CHARS:
        raise LetiError("feature is too long", where)
    try:
        d = ast.literal_eval(
            text
        )  # a dict literal of strings and numbers: literal_eval evaluates nothing else
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise LetiError("feature is not a dict literal", where) from None
    if not isinstance(d, dict):
        raise LetiError("feature is not a dict", where)
    return d


def _number(text: str, where: str) -> float:
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise LetiError(f"{text!r} is not a number", where) from None
    if not math.isfinite(x) or x < 0:
        raise LetiError(f"{text!r} is not a non-negative number", where)
    return x


def _model_name(text: str, where: str) -> str:
    if not _NAME_RE.match(text or ""):
        raise LetiError(f"{text!r} is not a model name (letters, digits, _ . -; at most 100)", where)
    return text


def _data_rows(path: Path, rows: list[list[str]], width: int):
    """(line number, fields, where) of the non-empty data rows; a row of the wrong width is an error."""
    for ln, r in enumerate(rows[1:], start=2):
        if not r:
            continue
        where = f"{path.name} line {ln}"
        if len(r) != width:
            raise LetiError(f"{len(r)} fields, the header has {width}", where)
        yield ln, r, where


def read_op_rows(path: str | Path) -> list[OpRow]:
    path = Path(path)
    rows = _open_csv(path)
    if not rows:
        raise LetiError("empty file", str(path))
    head = [h.strip() for h in rows[0]]
    for col in ("model", "operation", "feature"):
        if col not in head:
            raise LetiError(f"no {col!r} column", str(path))
    ix = {h: i for i, h in enumerate(head)}
    devices = [d for d in DEVICES if f"{d}|gpu|float" in ix and f"{d}|gpu|kernel" in ix]
    out = []
    for ln, r, where in _data_rows(path, rows, len(head)):
        out.append(
            OpRow(
                model=_model_name(r[ix["model"]], f"{where}, column model"),
                operation=r[ix["operation"]].strip(),
                feature=_feature(r[ix["feature"]], f"{where}, column feature"),
                gpu_us={
                    d: _number(r[ix[f"{d}|gpu|float"]], f"{where}, column {d}|gpu|float") for d in devices
                },
                kernel={d: r[ix[f"{d}|gpu|kernel"]].strip() for d in devices},
                line=ln,
            )
        )
    return out


def read_e2e(path: str | Path, precisions=("float",)) -> tuple[dict[str, dict], dict[str, dict]]:
    """(model -> target -> mean ms, model -> target -> std ms) for the chosen precisions."""
    path = Path(path)
    rows = _open_csv(path)
    if not rows or "model" not in rows[0]:
        raise LetiError("no 'model' column", str(path))
    head = [h.strip() for h in rows[0]]
    cols = []
    for i, h in enumerate(head):
        parts = h.split("|")
        if len(parts) == 4 and parts[3] == "mean" and parts[2] in precisions:
            std = head.index("|".join(parts[:3] + ["std"])) if "|".join(parts[:3] + ["std"]) in head else None
            cols.append((i, std, target_name(parts[0], parts[1], parts[2])))
    mean: dict[str, dict] = {}
    std: dict[str, dict] = {}
    mi = head.index("model")
    for _, r, where in _data_rows(path, rows, len(head)):
        name = _model_name(r[mi], f"{where}, column model")
        for i, j, target in cols:
            if not r[i].strip():
                continue
            us = _number(r[i], f"{where}, column {head[i]}")
            if us <= 0:
                raise LetiError("latency must be positive", f"{where}, column {head[i]}")
            mean.setdefault(name, {})[target] = us / 1000.0
            if j is not None and r[j].strip():
                std.setdefault(name, {})[target] = _number(r[j], f"{where}, column {head[j]}") / 1000.0
    return mean, std


# ---- rows -> op specs ------------------------------------------------------------------------------------------
def _int(feature: dict, key: str, where: str) -> int:
    v = feature.get(key)
    try:
        x = int(v)
    except (TypeError, ValueError):
        raise LetiError(f"{key}={v!r} is not an integer", where) from None
    if x < 0 or x > 1_000_000:
        raise LetiError(f"{key}={x} is out of range", where)
    return x


def _window_pad(h_in: int, h_out: int, k: int, s: int, where: str) -> int:
    if S.out_size(h_in, k, s, 1, S.PAD_SAME) == h_out:
        return S.PAD_SAME
    if S.out_size(h_in, k, s, 1, S.PAD_VALID) == h_out:
        return S.PAD_VALID
    raise LetiError(f"input {h_in}, kernel {k}, stride {s} cannot give output {h_out}", where)


# linked-op sequences that are one activation function of the op they follow
_ACT_LINKS = {
    ("relu",): "relu",
    ("hard_swish",): "hswish",
    ("sigmoid",): "sigmoid",
    ("relu", "mul"): "hsigmoid",  # relu6(x + 3) * 1/6, the +3 folded into the bias
    ("minimum", "relu"): "relu6",
}
_SINGLE_ACT = {"relu": "relu", "hard_swish": "hswish", "sigmoid": "sigmoid"}


def _main_spec(row: OpRow, where: str) -> tuple[OpSpec, bool]:
    """The listed op itself, and whether it can carry a fused activation."""
    f, op = row.feature, row.operation
    cin = _int(f, "Input_channel", where)
    if op == "FULLY_CONNECTED":
        units = _int(f, "Filter", where)
        return OpSpec("dense", (1, 1, cin), (1, 1, units), {"bias": True}, block=where), True
    h = _int(f, "Input_shape", where)
    if op == "MEAN":
        keep = _int(f, "Kernel", where) == 1
        return OpSpec("gap", (h, h, cin), (1, 1, cin), {"extra": int(keep)}, block=where), False
    if op == "CONCATENATION":
        n, cout = _int(f, "Kernel", where), _int(f, "Filter", where)
        if n < 2 or cout < cin:
            raise LetiError(f"a concat of {n} inputs from {cin} to {cout} channels", where)
        return OpSpec("concat", (h, h, cin), (h, h, cout), {}, n_inputs=n, block=where), False
    k, s, ho = _int(f, "Kernel", where), _int(f, "Stride", where), _int(f, "Output_shape", where)
    if k < 1 or s < 1:
        raise LetiError(f"kernel {k} and stride {s} must be positive", where)
    pad = _window_pad(h, ho, k, s, where)
    win = {"kh": k, "kw": k, "sh": s, "sw": s, "pad": pad}
    if op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        kind = "maxpool" if op == "MAX_POOL_2D" else "avgpool"
        return OpSpec(kind, (h, h, cin), (ho, ho, cin), win, block=where), False
    if op == "DEPTHWISE_CONV_2D":
        mult = max(_int(f, "Filter", where), 1)
        attrs = {**win, "dil": 1, "bias": True, "extra": mult}
        return OpSpec("dwconv", (h, h, cin), (ho, ho, cin * mult), attrs, block=where), True
    if op in ("CONV_2D", "CONV_2D_GROUP"):
        cout = _int(f, "Filter", where)
        groups = _int(f, "Group", where) if op == "CONV_2D_GROUP" else 1
        if groups < 1 or cin % groups or cout % groups:
            raise LetiError(f"groups {groups} must divide {cin} and {cout} channels", where)
        attrs = {**win, "dil": 1, "groups": groups, "bias": True}
        return OpSpec("conv", (h, h, cin), (ho, ho, cout), attrs, block=where), True
    raise LetiError(f"unsupported op {op!r}", where)


def _elementwise(links: tuple[str, ...], shape: tuple, where: str) -> list[OpSpec]:
    """IR nodes for linked or unlisted elementwise ops on a tensor of ``shape``."""
    out, i = [], 0
    while i < len(links):
        ln = links[i]
        if ln == "mul" and links[i + 1 : i + 2] == ("add",):  # a standalone BatchNorm: scale then shift
            out.append(OpSpec("bn", shape, shape, {"bn": True}, block=f"{where}:bn"))
            i += 2
            continue
        if ln == "add":
            out.append(OpSpec("add", shape, shape, {}, n_inputs=2, block=f"{where}:add"))
        elif ln == "mul":
            out.append(OpSpec("mul", shape, shape, {}, n_inputs=2, block=f"{where}:mul"))
        elif ln in _SINGLE_ACT:
            fn = _SINGLE_ACT[ln]
            out.append(OpSpec("act", shape, shape, {"act": fn}, block=f"{where}:{fn}"))
        elif ln == "minimum" and links[i + 1 : i + 2] == ("relu",):
            out.append(OpSpec("act", shape, shape, {"act": "relu6"}, block=f"{where}:relu6"))
            i += 1
        else:
            raise LetiError(f"unsupported linked op {ln!r}", where)
        i += 1
    return out


def _is_gate(spec: OpSpec) -> bool:
    """A squeeze-excite gate: a 1x1 layer on a pooled vector ending in a sigmoid-like function."""
    return spec.in_shape[:2] == (1, 1) and spec.attrs.get("act") in ("sigmoid", "hsigmoid", "relu6")


def _implied_pad(spec: OpSpec) -> bool:
    """The op reads an explicitly zero-padded input (VALID over a larger tensor than SAME would need)."""
    k = spec.attrs.get("kh", 1)
    return (
        spec.op in ("conv", "dwconv", "maxpool", "avgpool") and spec.attrs.get("pad") == S.PAD_VALID and k > 1
    )


def _unpadded(spec: OpSpec) -> tuple:
    k = spec.attrs.get("kh", 1)
    h = max(spec.in_shape[0] - 2 * (k // 2), 1)
    return (h, h, spec.in_shape[2])


def _unlisted(gap: int, prev: OpSpec | None, nxt: OpSpec, where: str) -> list[OpSpec]:
    """Best-guess IR nodes for ``gap`` ops the per-op file leaves out between ``prev`` and ``nxt``."""
    out: list[OpSpec] = []
    shape = _unpadded(nxt) if _implied_pad(nxt) else nxt.in_shape
    if prev is not None and gap > 0 and _is_gate(prev):
        out.append(OpSpec("mul", shape, shape, {}, n_inputs=2, block=f"{where}:se_mul"))
        gap -= 1
    if gap > 0 and _implied_pad(nxt):
        gap -= 1  # the pad itself: folded into nxt's padded input
    if gap <= 0:
        return out
    links: list[str] = []
    if gap % 3 == 1:
        links.append("add")
    elif gap % 3 == 2:
        links += ["add", "relu"]
    links += ["mul", "add", "relu"] * (gap // 3)
    return out + _elementwise(tuple(links), shape, f"{where}:unlisted")


def model_specs(rows: list[OpRow]) -> tuple[list[OpSpec], list[int]]:
    """The op specs of one model's rows, and the index in the specs of each row's main op."""
    specs: list[OpSpec] = []
    main_idx: list[int] = []
    prev_main: OpSpec | None = None
    last_id = -1
    for row in rows:
        where = f"{row.model}#{len(main_idx)}:{row.operation.lower()}"
        spec, can_act = _main_spec(row, where)
        k = row.structure()
        links = k.links
        if can_act:
            for n in (2, 1):
                fn = _ACT_LINKS.get(links[:n])
                if fn is not None:
                    spec = OpSpec(spec.op, spec.in_shape, spec.out_shape, {**spec.attrs, "act": fn},
                                  spec.n_inputs, spec.block)  # fmt: skip
                    links = links[n:]
                    break
        gap = k.ids[0] - last_id - 1
        specs += _unlisted(gap, prev_main, spec, where)
        main_idx.append(len(specs))
        specs.append(spec)
        specs += _elementwise(links, spec.out_shape, where)
        prev_main = spec
        last_id = max(k.ids)
    return specs, main_idx


# ---- the whole source ------------------------------------------------------------------------------------------
def read_mlbench(directory: str | Path, precisions=("float",)) -> list[MLBenchModel]:
    """Every model of a mobile-ml-benchmark directory with its graph and latencies, in the per-op file's order."""
    d = Path(directory)
    if not d.is_dir():
        raise LetiError("not a directory", str(d))
    for p in precisions:
        if p not in PRECISIONS:
            raise LetiError(f"unknown precision {p!r} (known: {', '.join(PRECISIONS)})", "precision")
    rows = read_op_rows(d / OPS_FILE)
    mean, std = read_e2e(d / E2E_FILE, tuple(precisions))
    by_model: dict[str, list[OpRow]] = {}
    for r in rows:
        by_model.setdefault(r.model, []).append(r)
    missing = sorted(set(mean) - set(by_model))
    if missing:
        raise LetiError(f"model {missing[0]!r} has latencies but no ops", str(d / OPS_FILE))
    models = []
    for name, mrows in by_model.items():
        specs, main_idx = model_specs(mrows)
        first = specs[main_idx[0]]
        graph = oplist_graph(specs, _unpadded(first) if _implied_pad(first) else first.in_shape,
                             {"model": name, "source": SOURCE})  # fmt: skip
        m = MLBenchModel(name, graph, mean.get(name, {}), std.get(name, {}), [i + 1 for i in main_idx])
        if "float" in precisions:
            for dev in mrows[0].gpu_us:
                t = target_name(dev, "gpu", "float")
                m.gpu_ms[t] = [r.gpu_us[dev] / 1000.0 for r in mrows]
                m.gpu_kernel[t] = [r.kernel[dev] for r in mrows]
        models.append(m)
    return models


__all__ = [
    "DEVICES",
    "E2E_FILE",
    "OPS_FILE",
    "SOURCE",
    "KernelName",
    "MLBenchModel",
    "OpRow",
    "model_specs",
    "read_e2e",
    "read_mlbench",
    "read_op_rows",
    "target_name",
]

"""ONNX model -> LayerGraph, built on the ``onnx`` package: its parser, checker and shape inference.

Tensors are NCHW (an NHWC input read through ``Transpose(0, 3, 1, 2)`` is accepted); the IR's (H, W, C) shapes
are checked against the shapes ONNX infers. Mapping rules (ONNX op -> IR):

* Conv -> conv (``group`` kept) or dwconv (``group`` = input channels); a BatchNormalization that only the conv reads
  folds into it (``bn=True``, so params count the BN's four vectors, like Keras' and torch's running statistics), then
  an activation that only it reads. Explicit pads that give SAME's output size read as SAME; pads of zero as VALID;
  other pads become a pad node in front of a VALID window. Pool pads and ``ceil_mode`` are handled the same way.
* Gemm, and MatMul by a constant 2-D weight (with a following constant Add as its bias) -> dense.
* Activations: Relu, Clip (0..6 -> relu6; 0.. -> relu; other bounds -> relu6, the same clamp), Sigmoid, HardSigmoid,
  HardSwish, Tanh, LeakyRelu, Gelu, Softmax / LogSoftmax over channels, and the decompositions exporters write:
  ``x * Sigmoid(x)`` -> swish, ``x * HardSigmoid(x)`` -> hswish, ``x * 0.5 * (1 + Erf(x / sqrt 2))`` -> gelu.
* Add / Sum / Sub of tensors -> add; Mul of tensors -> mul (squeeze-excite); Mul / Add / Sub / Div by a constant ->
  bn (a per-channel affine op; params = the constant's elements when it is a vector, 0 for a scalar); Mul by 0 ->
  zero. Concat over channels -> concat; Split / Slice over channels -> slice; Slice over H, W -> a crop (pad < 0).
* MaxPool / AveragePool -> pools; GlobalAveragePool and ReduceMean over H, W -> gap; GlobalMaxPool and ReduceMax
  over H, W -> a max pool over the whole map. Pad -> pad (folded into the conv / pool it feeds when that is SAME).
* Reshape / Flatten / Squeeze / Unsqueeze -> nothing when the (H, W, C) shape stays, else reshape; the Reshape ->
  Transpose -> Reshape of a channel shuffle -> shuffle. Resize / Upsample (nearest, linear) -> resize.
* Dropout, Identity, Cast, QuantizeLinear / DequantizeLinear of activations -> dropped. Shape arithmetic on constants
  (Shape of a tensor of known shape; any node whose inputs are all constants) is evaluated with ``onnx.reference``.
* Anything else raises an UnsupportedOpError naming the op and the node.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from leti.errors import GraphError, LetiError, ModelFileError
from leti.graph import shapes as S
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph
from leti.importers.common import check_input_shape, dynamic_input_error, finish_graph, unsupported

MAX_ONNX_BYTES = 2**31  # a protobuf cannot hold more; larger models keep their weights in external files
_ALIASES = {"Dropout", "Identity", "Cast", "QuantizeLinear", "DequantizeLinear", "CastLike"}
_SOURCES = {"Constant", "RandomNormal", "RandomUniform", "EyeLike"}  # ops with no input that make a constant
_SIMPLE_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "HardSigmoid": "hsigmoid", "HardSwish": "hswish",
                "Tanh": "tanh", "LeakyRelu": "leaky_relu", "Gelu": "gelu", "Softmax": "softmax",
                "LogSoftmax": "softmax"}  # fmt: skip
_WINDOWS = ("Conv", "MaxPool", "AveragePool")


def _load(data) -> object:
    """A ModelProto from bytes, a path or a ModelProto; ModelFileError for anything that is not ONNX."""
    import onnx

    if isinstance(data, onnx.ModelProto):
        return data
    if isinstance(data, str | os.PathLike):
        try:
            raw = Path(data).read_bytes()
        except OSError as e:
            raise ModelFileError(f"cannot read {data} ({e.strerror or e})", "model") from None
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise ModelFileError(f"expected ONNX bytes or a path, got {type(data).__name__}", "model")
    if not raw:
        raise ModelFileError("the model file is empty", "model")
    if len(raw) >= MAX_ONNX_BYTES:
        raise ModelFileError("the file is larger than a protobuf can hold", "model")
    try:
        model = onnx.load_model_from_string(raw)
    except Exception as e:  # noqa: BLE001 - any decoding failure of untrusted bytes is a corrupt file
        raise ModelFileError(f"not a readable ONNX model ({type(e).__name__})", "model") from None
    if not model.graph.node or not model.opset_import or model.ir_version <= 0:
        raise ModelFileError("not an ONNX model (no graph, opset or IR version)", "model")
    return model


def _dims(vi) -> list:
    """The dims of a ValueInfoProto: ints, or None where unknown / symbolic."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]


def _hwc(dims, nhwc: bool = False) -> tuple[int, int, int] | None:
    """IR (H, W, C) of a batch-1 ONNX shape: NCHW (or NHWC) rank 4, or (1, C) / (C,) vectors."""
    if dims is None or any(d is None for d in dims):
        return None
    if len(dims) == 4 and dims[0] == 1:
        return (dims[1], dims[2], dims[3]) if nhwc else (dims[2], dims[3], dims[1])
    if len(dims) == 2 and dims[0] == 1:
        return (1, 1, dims[1])
    if len(dims) == 1:
        return (1, 1, dims[0])
    return None


def _prepare(model, input_shape) -> tuple[object, str, bool]:
    """Fix the input's shape (batch 1, H / W / C from ``input_shape``), check the model and infer every shape.

    Returns (model with inferred shapes, input name, input is NHWC)."""
    import onnx

    inits = {t.name for t in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in inits]
    if len(inputs) != 1:
        raise ModelFileError(f"has {len(inputs)} inputs; a LayerGraph has one", "model")
    if len(model.graph.output) != 1:
        raise ModelFileError(f"has {len(model.graph.output)} outputs; a LayerGraph has one", "model")
    inp = inputs[0]
    dims = _dims(inp)
    if len(dims) != 4:
        raise ModelFileError(
            f"input {inp.name!r} has rank {len(dims)}; expected (N, C, H, W) images", "model"
        )
    readers = [n for n in model.graph.node if inp.name in n.input]
    nhwc = len(readers) == 1 and readers[0].op_type == "Transpose" and _perm(readers[0]) == [0, 3, 1, 2]
    want = check_input_shape(input_shape)
    if want is not None:
        h, w, c = want
        new = [1, h, w, c] if nhwc else [1, c, h, w]
        for k in (1, 2, 3):
            if dims[k] is not None and dims[k] != new[k]:
                layout = "NHWC" if nhwc else "NCHW"
                raise LetiError(
                    f"(H, W, C) = {want} does not fit the model's {layout} input {dims}", "input_shape"
                )
    elif any(d is None for d in dims[1:]):
        shown = [d.dim_value or d.dim_param or "?" for d in inp.type.tensor_type.shape.dim]
        raise dynamic_input_error(shown)
    else:
        new = [1, *dims[1:]]
    model = onnx.ModelProto.FromString(
        model.SerializeToString()
    )  # a copy: the caller's model stays as it was
    for vi in model.graph.input:
        if vi.name == inp.name:
            for d, v in zip(vi.type.tensor_type.shape.dim, new, strict=True):
                d.Clear()
                d.dim_value = v
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    try:
        if not external:  # the checker wants the weights of external-data models, which are not read
            onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - the checker's own error types vary by version
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"invalid ONNX model ({first[:200]})", "model") from None
    return _infer(model), inp.name, nhwc


def _infer(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # noqa: BLE001 - the inference's error types vary by version
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"ONNX shape inference failed ({first[:200]})", "model") from None


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _initializers(model) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    out = {}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:  # weights in another file: only the shape matters
            dt = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
            out[t.name] = np.broadcast_to(np.zeros((), dt), tuple(t.dims))
        else:
            out[t.name] = numpy_helper.to_array(t)
    return out


def _try_fold(n, consts: dict, shapes: dict, opset: int) -> dict[str, np.ndarray] | None:
    """The outputs of ``n`` when they are constants (all its inputs are, or it is the Shape of a tensor whose shape
    is known), evaluated with ``onnx.reference``; None otherwise."""
    from onnx import helper as h
    from onnx.reference import ReferenceEvaluator

    if any(a.type in (a.GRAPH, a.GRAPHS) for a in n.attribute):
        return None  # control flow
    if n.op_type in ("Shape", "Size"):
        dims = shapes.get(n.input[0]) or []
        if not dims or None in dims:
            return None
        if n.op_type == "Size":
            return {n.output[0]: np.array(int(np.prod(dims)), dtype=np.int64)}
        a = _attrs(n)
        return {n.output[0]: np.array(dims, dtype=np.int64)[a.get("start", 0) : a.get("end", None)]}
    ins = [t for t in n.input if t]
    if any(t not in consts for t in ins) or (not ins and n.op_type not in _SOURCES):
        return None
    feeds = {t: np.asarray(consts[t]) for t in ins}
    graph = h.make_graph(
        [n],
        "fold",
        [h.make_tensor_value_info(t, h.np_dtype_to_tensor_dtype(v.dtype), v.shape) for t, v in feeds.items()],
        [h.make_empty_tensor_value_info(o) for o in n.output if o],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    try:
        outs = ReferenceEvaluator(model).run(None, feeds)
    except Exception as e:  # noqa: BLE001 - the reference ops raise many types
        reason = f"cannot be evaluated on its constant inputs ({type(e).__name__})"
        raise unsupported(n.op_type, n.name or n.output[0], reason) from None
    return {o: np.asarray(v) for o, v in zip([o for o in n.output if o], outs, strict=False)}


def _fold_constants(model, rounds: int = 8) -> tuple[object, dict]:
    """Evaluate constant subgraphs (the shape arithmetic of dynamic reshapes and pads) and hand the results to
    shape inference again, until nothing changes; returns (model, constants by tensor name)."""
    from onnx import numpy_helper

    consts, opset = _initializers(model), _opset(model)
    for _ in range(rounds):
        g = model.graph
        shapes = {vi.name: _dims(vi) for vi in (*g.input, *g.value_info, *g.output)}
        keep, folded = [], {}
        for n in g.node:
            outs = _try_fold(n, consts, shapes, opset)
            if outs is None:
                keep.append(n)
            else:
                consts.update(outs)
                folded.update(outs)
        if not folded:
            break
        read = {t for n in keep for t in n.input}
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in folded.items() if k in read)
        model = _infer(model)
    return model, consts


def _perm(node) -> list[int]:
    for a in node.attribute:
        if a.name == "perm":
            return list(a.ints)
    return []


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Reader:
    def __init__(self, model, input_name: str, nhwc: bool, consts: dict):
        self.model = model
        g = model.graph
        self.opset = _opset(model)
        self.b = GraphBuilder(cse=True)  # the TFLite converter merges duplicated weightless ops
        self.node: dict[str, int] = {}  # tensor -> IR node
        self.const: dict[str, np.ndarray] = consts
        self.shapes: dict[str, list] = {}
        for vi in (*g.input, *g.value_info, *g.output):
            self.shapes[vi.name] = _dims(vi)
        self.input_name, self.input_nhwc = input_name, nhwc  # every other tensor is NCHW
        self.output = g.output[0].name
        self.nodes = self._live_nodes(list(g.node))
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.readers: dict[str, list] = {}
        for n in self.nodes:
            for t in n.input:
                if t:
                    self.readers.setdefault(t, []).append(n)
        self.readers.setdefault(self.output, []).append(None)
        self.done: set[int] = set()  # id() of nodes consumed by a pattern that started earlier
        self.pad_of: dict[int, tuple] = {}  # id(window node) -> (input tensor, (top, left, bottom, right))

    def _live_nodes(self, nodes: list) -> list:
        """The nodes the output depends on, in file order (ONNX lists them topologically)."""
        need, keep = {self.output}, []
        for n in reversed(nodes):
            if any(o in need for o in n.output):
                keep.append(n)
                need.update(t for t in n.input if t)
        return keep[::-1]

    # ---- helpers -----------------------------------------------------------------------------------------------
    def where(self, n) -> str:
        return n.name or (n.output[0] if n.output else "?")

    def err(self, n, reason: str) -> ModelFileError:
        return unsupported(n.op_type, self.where(n), reason)

    def x(self, n, k: int = 0) -> int:
        t = n.input[k]
        if t not in self.node:
            if t in self.const:
                raise self.err(n, f"input {k} is a constant where the IR expects a computed tensor")
            raise self.err(n, f"input {k} ({t!r}) is not computed from the network input")
        return self.node[t]

    def ir_shape(self, t: str) -> tuple[int, int, int] | None:
        return _hwc(self.shapes.get(t), self.input_nhwc and t == self.input_name)

    def bind(self, n, node: int, t: str | None = None) -> None:
        t = n.output[0] if t is None else t
        want = self.ir_shape(t)
        if want is not None and tuple(self.b.shape(node)) != want:
            raise ModelFileError(
                f"computes {self.b.shape(node)} but ONNX infers {self.shapes.get(t)}",
                f"node {self.where(n)!r}",
            )
        self.node[t] = node

    def single_reader(self, t: str):
        r = self.readers.get(t, [])
        return r[0] if len(r) == 1 and r[0] is not None else None

    def cval(self, n, k: int):
        """Input ``k`` as a constant, or None (missing or computed)."""
        if k >= len(n.input) or not n.input[k]:
            return None
        return self.const.get(n.input[k])

    def scalar(self, n, k: int) -> float | None:
        v = self.cval(n, k)
        return float(v.reshape(-1)[0]) if v is not None and v.size == 1 else None

    def attr_or_input(self, n, name: str, k: int):
        a = _attrs(n)
        if name in a:
            return np.asarray(a[name])
        return self.cval(n, k)

    def guard(self, n, fn, *args, **kw) -> int:
        try:
            return fn(*args, **kw)
        except GraphError as e:
            raise ModelFileError(e.reason, f"node {self.where(n)!r} ({n.op_type})") from None

    # ---- constants -----------------------------------------------------------------------------------------------
    def fold(self, n) -> bool:
        """Evaluate a node on constants (shape arithmetic left after ``_fold_constants``)."""
        outs = _try_fold(n, self.const, self.shapes, self.opset)
        if outs is None:
            return False
        self.const.update(outs)
        return True

    # ---- activations -------------------------------------------------------------------------------------------
    def act_of(self, n) -> tuple[str, list] | None:
        """(IR activation, nodes it spans) when ``n`` starts an activation reading its first input, else None."""
        op = n.op_type
        if op in _SIMPLE_ACTS:
            if op in ("Softmax", "LogSoftmax") and not self.channel_axis(n, _attrs(n).get("axis", -1)):
                return None
            if op == "Sigmoid" or op == "HardSigmoid":  # x * sigmoid(x), x * hard_sigmoid(x)
                mul = self.single_reader(n.output[0])
                if (
                    mul is not None
                    and mul.op_type == "Mul"
                    and sorted(mul.input) == sorted((n.input[0], n.output[0]))
                ):
                    return ("swish" if op == "Sigmoid" else "hswish"), [n, mul]
            return _SIMPLE_ACTS[op], [n]
        if op == "Clip":
            lo, hi = self.clip_bounds(n)
            if lo == 0 and hi is None:
                return "relu", [n]
            return "relu6", [n]
        if op == "Div":
            return self.erf_gelu(n)
        return None

    def clip_bounds(self, n) -> tuple[float | None, float | None]:
        a = _attrs(n)
        if self.opset < 11:
            return a.get("min"), a.get("max")
        return self.scalar(n, 1), self.scalar(n, 2)

    def channel_axis(self, n, axis: int) -> bool:
        """Whether ``axis`` is the channel axis of ``n``'s first input: 1 of (N, C, H, W) or of (N, C)."""
        rank = len(self.shapes.get(n.input[0]) or [])
        return rank in (2, 4) and int(axis) % rank == 1

    def erf_gelu(self, div) -> tuple[str, list] | None:
        """x / sqrt(2) -> Erf -> + 1 -> * x -> * 0.5 (in either order of the two Muls), as torch exports GELU."""
        x = div.input[0]
        chain, t = [div], div.output[0]
        for want in ("Erf", "Add", "Mul", "Mul"):
            nxt = self.single_reader(t)
            if nxt is None or nxt.op_type != want:
                return None
            chain.append(nxt)
            t = nxt.output[0]
        if x not in chain[3].input and x not in chain[4].input:
            return None
        return "gelu", chain

    def follow_act(self, t: str) -> tuple[str, list]:
        """An activation that only ``t`` feeds, to fold into the conv / dense producing ``t``."""
        readers = self.readers.get(t, [])
        if not readers or None in readers or any(r.input[0] != t for r in readers):
            return "none", []
        found = [self.act_of(r) for r in readers]
        if len(readers) == 1 and found[0] is not None:
            return found[0]
        # the same activation read twice: the converter merges the copies, then fuses the one left
        if all(f is not None and len(f[1]) == 1 for f in found) and len({f[0] for f in found}) == 1:
            return found[0][0], [f[1][0] for f in found]
        return "none", []

    def swish_of(self, t: str) -> tuple[str, list]:
        """x * Sigmoid(x) or x * HardSigmoid(x) where ``t`` (= x) feeds only those two nodes."""
        r = self.readers.get(t, [])
        if len(r) != 2 or None in r:
            return "none", []
        gate = next((n for n in r if n.op_type in ("Sigmoid", "HardSigmoid")), None)
        if gate is None:
            return "none", []
        found = self.act_of(gate)
        if found is None or len(found[1]) != 2 or found[1][1] not in r:
            return "none", []
        return found

    def finish(self, n, node: int, extra: list) -> None:
        """Bind ``n``'s output, and the outputs of the nodes folded into it, to ``node``."""
        self.bind(n, node)
        for e in extra:
            self.done.add(id(e))
            self.node[e.output[0]] = node
            self.bind(e, node)

    # ---- windows -----------------------------------------------------------------------------------------------
    def window_input(self, n, kh: int, kw: int, sh: int, sw: int, dil: int) -> tuple[int, int]:
        """(input node, IR padding) of a conv / pool, inserting a pad node where its pads are not SAME or VALID."""
        a = _attrs(n)
        top = left = bottom = right = 0
        folded = self.pad_of.get(id(n))
        if folded is not None:  # a Pad in front: its amounts add to the window's own
            src, (top, left, bottom, right) = folded
            x = self.node[src]
        else:
            x = self.x(n)
        h, w, _ = self.b.shape(x)
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            if folded is not None:
                return self.guard(n, self.b.pad, x, top, left, bottom, right), S.PAD_SAME
            return x, S.PAD_SAME
        pads = list(a.get("pads", [0, 0, 0, 0])) if auto != "VALID" else [0, 0, 0, 0]
        if len(pads) != 4:
            raise self.err(n, f"has pads {pads}; only 2-D windows map to the IR")
        top, left, bottom, right = top + pads[0], left + pads[1], bottom + pads[2], right + pads[3]
        out = self.ir_shape(n.output[0])
        if out is None:
            raise self.err(n, "has an output shape ONNX could not infer")
        oh, ow = out[:2]
        same = (S.out_size(h, kh, sh, dil, S.PAD_SAME), S.out_size(w, kw, sw, dil, S.PAD_SAME))
        if same == (oh, ow):
            return x, S.PAD_SAME
        # VALID on the padded map; ceil_mode adds what the last window reads past the pads
        eff_h, eff_w = (kh - 1) * dil + 1, (kw - 1) * dil + 1
        bottom = max(bottom, (oh - 1) * sh + eff_h - h - top)
        right = max(right, (ow - 1) * sw + eff_w - w - left)
        if top or left or bottom or right:
            x = self.guard(n, self.b.pad, x, top, left, bottom, right)
        return x, S.PAD_VALID

    def conv(self, n) -> None:
        a = _attrs(n)
        w = self.cval(n, 1)
        if w is None:
            raise self.err(n, "has computed weights")
        if w.ndim != 4:
            raise self.err(n, f"has {w.ndim - 2}-D kernels; only 2-D convs map to the IR")
        cout, cin_g, kh, kw = (int(v) for v in w.shape)
        sh, sw = (int(v) for v in a.get("strides", [1, 1]))
        dh, dw = (int(v) for v in a.get("dilations", [1, 1]))
        if dh != dw:
            raise self.err(n, f"has dilation {dh}x{dw}; the IR has one dilation")
        groups = int(a.get("group", 1))
        x, pad = self.window_input(n, kh, kw, sh, sw, dh)
        cin = self.b.shape(x)[2]
        bias = self.cval(n, 2) is not None
        t, extra, bn = n.output[0], [], False
        nxt = self.single_reader(t)
        if (
            nxt is not None
            and nxt.op_type == "BatchNormalization"
            and nxt.input[0] == t
            and len(nxt.output) == 1
        ):
            extra, bn, t = [nxt], True, nxt.output[0]
        act, more = self.follow_act(t)
        if act == "none":
            act, more = self.swish_of(t)
        extra += more
        if groups == cin and cin_g == 1 and groups > 1:
            y = self.guard(n, self.b.dwconv, x, kh, kw, sh, sw, mult=cout // cin, dil=dh, act=act, bn=bn,
                           bias=bias, pad=pad)  # fmt: skip
        else:
            if cin_g * groups != cin:
                raise ModelFileError(
                    f"weights for {cin_g * groups} input channels read {cin}",
                    f"node {self.where(n)!r} (Conv)",
                )
            y = self.guard(n, self.b.conv, x, cout, kh, kw, sh, sw, groups=groups, dil=dh, act=act, bn=bn,
                           bias=bias, pad=pad)  # fmt: skip
        self.finish(n, y, extra)

    def pool(self, n, kind: str) -> None:
        a = _attrs(n)
        ks = [int(v) for v in a.get("kernel_shape", [])]
        if len(ks) != 2:
            raise self.err(n, f"has kernel {ks}; only 2-D pools map to the IR")
        if any(int(v) != 1 for v in a.get("dilations", [1, 1])):
            raise self.err(n, "has a dilation; the IR's pools have none")
        sh, sw = (int(v) for v in a.get("strides", [1, 1]))
        x, pad = self.window_input(n, ks[0], ks[1], sh, sw, 1)
        y = self.guard(n, self.b.pool, kind, x, ks[0], sh, kw=ks[1], pad=pad, sw=sw)
        self.bind(n, y)

    def global_pool(self, n, kind: str, keepdims: bool = True) -> None:
        x = self.x(n)
        h, w, _ = self.b.shape(x)
        if kind == "gap":
            y = self.b.gap(x, keepdims=keepdims)
        else:
            y = self.b.pool("maxpool", x, h, 1, kw=w, pad=S.PAD_VALID)
        self.bind(n, y)

    def reduce(self, n) -> None:
        a = _attrs(n)
        axes = self.attr_or_input(n, "axes", 1)
        rank = len(self.shapes.get(n.input[0]) or [])
        if axes is None or rank != 4 or sorted(int(v) % 4 for v in axes.reshape(-1)) != [2, 3]:
            raise self.err(n, "reduces over axes other than H and W")
        self.global_pool(n, "gap" if n.op_type == "ReduceMean" else "max", bool(a.get("keepdims", 1)))

    def pad(self, n) -> None:
        a = _attrs(n)
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        pads = self.attr_or_input(n, "pads", 1) if self.opset < 11 else self.cval(n, 1)
        if pads is None:
            raise self.err(n, "pads by computed amounts")
        pads = [int(v) for v in pads.reshape(-1)]
        if len(pads) != 8 or (len(n.input) > 3 and n.input[3]):
            raise self.err(n, "pads a tensor that is not 4-D (or only some axes)")
        if pads[0] or pads[1] or pads[4] or pads[5]:
            raise self.err(n, "pads the batch or channel axis; the IR pads H and W only")
        top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
        if mode not in ("constant", "reflect", "edge"):
            raise self.err(n, f"pads in mode {mode!r}")
        x = self.x(n)
        nxt = self.single_reader(n.output[0])
        if mode == "constant" and nxt is not None and nxt.op_type in _WINDOWS and nxt.input[0] == n.output[0]:
            self.pad_of[id(nxt)] = (n.input[0], (top, left, bottom, right))  # the window decides SAME or not
            return
        self.bind(n, self.guard(n, self.b.pad, x, top, left, bottom, right, mode))

    # ---- dense ---------------------------------------------------------------------------------------------------
    def dense(self, n) -> None:
        a = _attrs(n)
        w = self.cval(n, 1)
        if w is None or w.ndim != 2:
            raise self.err(n, "multiplies by a computed or non-2-D matrix; only dense layers map to the IR")
        rank = len(self.shapes.get(n.input[0]) or [])
        if rank != 2:
            raise self.err(n, f"multiplies a rank-{rank} tensor; the IR's dense layers read (N, C) vectors")
        if n.op_type == "Gemm" and a.get("transA", 0):
            raise self.err(n, "has transA=1")
        k, units = (w.shape[1], w.shape[0]) if n.op_type == "Gemm" and a.get("transB", 0) else w.shape
        x = self.x(n)
        if self.b.shape(x)[2] != k:
            raise self.err(n, f"has {k}-input weights for a {self.b.shape(x)} input")
        extra, bias = [], n.op_type == "Gemm" and self.cval(n, 2) is not None
        t = n.output[0]
        if n.op_type == "MatMul":  # a constant Add after it is its bias
            nxt = self.single_reader(t)
            if nxt is not None and nxt.op_type == "Add":
                other = [s for s in nxt.input if s != t]
                if len(other) == 1 and other[0] in self.const and self.const[other[0]].size == units:
                    extra, bias, t = [nxt], True, nxt.output[0]
        act, more = self.follow_act(t)
        y = self.guard(n, self.b.dense, x, int(units), act=act, bias=bias)
        self.finish(n, y, extra + more)

    # ---- elementwise ---------------------------------------------------------------------------------------------
    def binary(self, n) -> None:
        ins = [t for t in n.input if t]
        consts = [t for t in ins if t in self.const]
        tens = [t for t in ins if t not in self.const]
        if not tens:
            raise self.err(n, "has only constant inputs")
        if consts:
            self.const_binary(n, tens[0], self.const[consts[0]])
            return
        if n.op_type in ("Add", "Sub", "Sum"):
            y = self.guard(n, self.b.add, [self.x(n, list(n.input).index(t)) for t in tens])
        elif n.op_type == "Mul" and len(tens) == 2:
            a, c = (self.node.get(t) for t in tens)
            if a is None or c is None:
                raise self.err(n, "reads a tensor that is not computed from the network input")
            if self.b.shape(a)[:2] == (1, 1) and self.b.shape(c)[:2] != (1, 1):
                a, c = c, a  # the broadcast (squeeze-excite) scale goes second
            y = self.guard(n, self.b.mul, a, c)
        else:
            raise self.err(n, "of two tensors has no IR equivalent")
        self.bind(n, y)

    def const_binary(self, n, t: str, k: np.ndarray) -> None:
        x = self.node.get(t)
        if x is None:
            raise self.err(n, "reads a tensor that is not computed from the network input")
        if n.op_type == "Mul" and not np.any(k):
            self.bind(n, self.b.zero(x))
            return
        params, extra = (int(k.size) if k.size > 1 else 0), []
        nxt = self.single_reader(n.output[0])  # a Mul then an Add by constants is one affine node
        if n.op_type in ("Mul", "Div") and nxt is not None and nxt.op_type in ("Add", "Sub"):
            other = [s for s in nxt.input if s != n.output[0]]
            if len(other) == 1 and other[0] in self.const:
                kk = self.const[other[0]]
                params += int(kk.size) if kk.size > 1 else 0
                extra = [nxt]
        y = self.b.bn(x, params=params)
        self.finish(n, y, extra)

    def concat(self, n) -> None:
        rank = len(self.shapes.get(n.output[0]) or [])
        axis = int(_attrs(n).get("axis", 1))
        if not self.channel_axis(n, axis) or rank not in (2, 4):
            raise self.err(n, "concatenates along an axis other than channels")
        self.bind(n, self.guard(n, self.b.concat, [self.x(n, k) for k in range(len(n.input))]))

    def split(self, n) -> None:
        rank = len(self.shapes.get(n.input[0]) or [])
        axis = int(_attrs(n).get("axis", 0))
        if rank != 4 or not self.channel_axis(n, axis):
            raise self.err(n, "splits along an axis other than channels")
        x, start = self.x(n), 0
        for o in n.output:
            shp = self.ir_shape(o)
            if shp is None:
                raise self.err(n, "has an output shape ONNX could not infer")
            self.bind(n, self.guard(n, self.b.slice, x, shp[2], start), o)
            start += shp[2]

    def slice(self, n) -> None:
        """Slice over channels -> slice; over H and W -> a crop (pad by negative amounts)."""
        src, dst = self.shapes.get(n.input[0]) or [], self.shapes.get(n.output[0]) or []
        if len(src) != 4 or len(dst) != 4 or None in src or None in dst:
            raise self.err(n, "slices a tensor that is not 4-D with known shape")
        if self.opset < 10:
            a = _attrs(n)
            starts, axes = a.get("starts"), a.get("axes", list(range(len(a.get("starts", [])))))
            steps = [1] * len(axes)
        else:
            starts, axes, steps = self.cval(n, 1), self.cval(n, 3), self.cval(n, 4)
            if starts is None or (len(n.input) > 3 and n.input[3] and axes is None):
                raise self.err(n, "slices by computed indices")
            axes = list(range(len(starts))) if axes is None else axes
            steps = [1] * len(axes) if steps is None else steps
        begin = [0, 0, 0, 0]
        for ax, st, step in zip(axes, starts, steps, strict=True):
            if int(step) != 1:
                raise self.err(n, "slices with a step; the IR slices contiguous ranges")
            ax = int(ax) % 4
            begin[ax] = min(max(int(st) + (src[ax] if int(st) < 0 else 0), 0), src[ax])
        c_ax, h_ax, w_ax = 1, 2, 3
        x = self.x(n)
        if src[h_ax] == dst[h_ax] and src[w_ax] == dst[w_ax]:
            y = self.guard(n, self.b.slice, x, dst[c_ax], begin[c_ax])
        elif src[c_ax] == dst[c_ax]:
            t, lf = begin[h_ax], begin[w_ax]
            y = self.guard(n, self.b.pad, x, -t, -lf, t + dst[h_ax] - src[h_ax], lf + dst[w_ax] - src[w_ax])
        else:
            raise self.err(n, "slices channels and crops at once; the IR does one or the other")
        self.bind(n, y)

    # ---- shapes ----------------------------------------------------------------------------------------------------
    def reshape(self, n) -> None:
        src, dst = self.shapes.get(n.input[0]) or [], self.shapes.get(n.output[0]) or []
        if n.op_type == "Reshape" and (not dst or None in dst):
            dst = self.reshape_target(n, src)
        if not dst or None in dst:
            raise self.err(n, "has an output shape ONNX could not infer")
        if len(src) == 4 and len(dst) == 5 and self.shuffle(n, src, dst):
            return
        x = self.x(n)
        want = _hwc(dst)
        if want is None:
            raise self.err(
                n, f"reshapes {src} to {dst}; only 2-D and 4-D shapes and channel shuffles map to the IR"
            )
        flat = len(dst) == 2 and tuple(self.b.shape(x)[:2]) != (1, 1)
        self.bind(n, self.guard(n, self.b.reshape, x, want, flat=flat))

    def reshape_target(self, n, src: list) -> list:
        shape = self.cval(n, 1)
        if shape is None or None in src:
            return []
        dst = [int(v) for v in shape.reshape(-1)]
        dst = [src[k] if v == 0 and k < len(src) else v for k, v in enumerate(dst)]
        if dst.count(-1) == 1:
            known = int(np.prod([v for v in dst if v != -1]))
            dst[dst.index(-1)] = int(np.prod(src)) // max(known, 1)
        return dst

    def shuffle(self, n, src: list, dst: list) -> bool:
        """(N, C, H, W) -> (N, g, C/g, H, W) -> Transpose(0, 2, 1, 3, 4) -> (N, C, H, W): a channel shuffle."""
        if dst[0] != 1 or dst[1] * dst[2] != src[1] or dst[3:] != src[2:]:
            return False
        tr = self.single_reader(n.output[0])
        if tr is None or tr.op_type != "Transpose" or _perm(tr) != [0, 2, 1, 3, 4]:
            return False
        back = self.single_reader(tr.output[0])
        if (
            back is None
            or back.op_type not in ("Reshape", "Flatten")
            or self.shapes.get(back.output[0]) != src
        ):
            return False
        y = self.guard(n, self.b.shuffle, self.x(n), dst[1])
        self.node[n.output[0]] = self.node[tr.output[0]] = y
        self.done.update((id(tr), id(back)))
        self.bind(back, y)
        return True

    def transpose(self, n) -> None:
        if n.input[0] == self.input_name and self.input_nhwc:
            self.node[n.output[0]] = self.x(n)  # NHWC -> NCHW of the input: the IR has no layout
            return
        raise self.err(
            n, f"transposes axes {_perm(n)}; only channel shuffles and an NHWC input map to the IR"
        )

    def resize(self, n) -> None:
        a = _attrs(n)
        mode = a.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode not in ("nearest", "linear", "bilinear"):
            raise self.err(n, f"resizes in mode {mode!r}; the IR has nearest and bilinear")
        out = self.ir_shape(n.output[0])
        if out is None:
            raise self.err(n, "has an output shape ONNX could not infer")
        x = self.x(n)
        if out[2] != self.b.shape(x)[2]:
            raise self.err(n, "resizes the channel axis")
        self.bind(
            n, self.guard(n, self.b.resize, x, out[0], out[1], "nearest" if mode == "nearest" else "bilinear")
        )

    def batchnorm(self, n) -> None:
        self.bind(n, self.b.bn(self.x(n)))  # scale, shift, mean, variance: four vectors

    def activation(self, n) -> None:
        found = self.act_of(n)
        if found is None:
            raise self.err(n, "applies an activation the IR cannot represent")
        act, nodes = found
        self.finish(nodes[0], self.b.act(self.x(n), act), nodes[1:])

    # ---- driver ----------------------------------------------------------------------------------------------------
    def run(self) -> LayerGraph:
        shp = self.ir_shape(self.input_name)
        self.b.block = "input"
        self.node[self.input_name] = self.b.input(shp)
        for n in self.nodes:
            if id(n) in self.done:
                continue
            self.b.block = f"{self.where(n)}:{n.op_type}"
            self.dispatch(n)
        meta = {"source": "onnx", "opset": self.opset, "ops": len(self.nodes)}
        return finish_graph(self.b, self.node.get(self.output), meta)

    def elementwise(self, n) -> None:
        if n.op_type == "Div" and self.act_of(n) is not None:  # the Erf form of GELU starts with a Div
            self.activation(n)
        elif n.op_type == "Div" and n.input[1] not in self.const:
            raise self.err(n, "divides by a tensor; the IR has no such op")
        else:
            self.binary(n)

    def window_pool(self, n) -> None:
        self.pool(n, "maxpool" if n.op_type == "MaxPool" else "avgpool")

    def whole_map_pool(self, n) -> None:
        self.global_pool(n, "gap" if n.op_type == "GlobalAveragePool" else "max")

    def alias(self, n) -> None:
        if n.input[0] in self.const:
            self.const[n.output[0]] = self.const[n.input[0]]
        else:
            self.node[n.output[0]] = self.x(n)

    def dispatch(self, n) -> None:
        if n.domain not in ("", "ai.onnx"):
            raise self.err(n, f"is from the custom domain {n.domain!r}")
        if self.fold(n):
            return
        handler = _HANDLERS.get(n.op_type)
        if handler is None:
            raise self.err(n, "has no LayerGraph equivalent")
        getattr(self, handler)(n)


# ONNX op -> _Reader method
_HANDLERS = {
    "Conv": "conv",
    **dict.fromkeys(("MaxPool", "AveragePool"), "window_pool"),
    **dict.fromkeys(("GlobalAveragePool", "GlobalMaxPool"), "whole_map_pool"),
    **dict.fromkeys(("ReduceMean", "ReduceMax"), "reduce"),
    **dict.fromkeys(("Gemm", "MatMul"), "dense"),
    "BatchNormalization": "batchnorm",
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Sum"), "elementwise"),
    **dict.fromkeys((*_SIMPLE_ACTS, "Clip"), "activation"),
    "Concat": "concat",
    "Split": "split",
    "Slice": "slice",
    **dict.fromkeys(("Reshape", "Flatten", "Squeeze", "Unsqueeze"), "reshape"),
    "Transpose": "transpose",
    "Pad": "pad",
    **dict.fromkeys(("Resize", "Upsample"), "resize"),
    **dict.fromkeys(_ALIASES, "alias"),
}


def read_onnx(data, input_shape=None) -> LayerGraph:
    """A LayerGraph from ONNX bytes, a path or a ``onnx.ModelProto``; ``input_shape`` = (H, W, C) fixes a dynamic
    input. ModelFileError for files that are not ONNX, UnsupportedOpError for ops the IR cannot hold."""
    model = _load(data)
    model, name, nhwc = _prepare(model, input_shape)
    model, consts = _fold_constants(model)
    try:
        return _Reader(model, name, nhwc, consts).run()
    except LetiError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"unexpected structure ({type(e).__name__}: {e})", "model") from None


__all__ = ["read_onnx"]

"""Any .tflite file -> LayerGraph, read with the FlatBuffer schema that ships with LiteRT.

``parse_tflite`` gives the raw op list (op names, versions, options, tensors); ``read_tflite`` maps it onto the IR
with ``GraphBuilder``, so shapes, MACs and params come from the same arithmetic as every other graph.

Mapping rules (TFLite op -> IR):

* CONV_2D -> conv (groups = input channels / filter input channels); DEPTHWISE_CONV_2D -> dwconv (multiplier =
  output / input channels); FULLY_CONNECTED -> dense over the last axis; MAX_POOL_2D / AVERAGE_POOL_2D -> pools;
  MEAN over H and W -> gap. Convs are recorded with BN folded (``bn=False``) and ``bias`` as stored (the converter
  always stores one), so params differ from a Keras graph with BN while MACs match exactly.
* A fused activation becomes the conv's / dense's ``act``; on other ops it becomes an ``act`` node. A standalone
  activation right after a conv / dense with no activation and no other reader folds into it, as the IR models a
  conv. The converter's ``hard_sigmoid`` (a conv with RELU6 then a MUL by 1/6, or ADD 3 + RELU6, MUL 1/6) reads
  as ``hsigmoid``; LOGISTIC(x) followed by MUL(x, .) reads as ``swish``.
* ADD / ADD_N / SUB of tensors -> add (a chain of single-use binary ADDs becomes one n-ary add); MUL of tensors ->
  mul; MUL by a constant zero -> zero; MUL / ADD / SUB / DIV by another constant -> bn (a per-channel affine
  op, one node for a MUL followed by an ADD); CONCATENATION / SPLIT / SPLIT_V / STRIDED_SLICE / SLICE on the
  channel axis -> concat / slice; RESHAPE, TRANSPOSE, RESHAPE of a channel shuffle -> shuffle.
* PAD folds into the conv / pool that reads it when the padded VALID window gives the SAME output shape (how
  PyTorch exports and TF's asymmetric stride-2 padding appear); otherwise the file is refused.
* QUANTIZE / DEQUANTIZE / CAST are skipped (a dequantized constant stays a constant); RESHAPE / SQUEEZE /
  EXPAND_DIMS that only add or drop unit axes are skipped.
* Other elementwise activations map to the closest IR function of the same cost class: piecewise-linear ones
  (LEAKY_RELU, PRELU, RELU_N1_TO_1, RELU_0_TO_1, ...) -> relu; transcendental ones (GELU, ELU, SOFTMAX, EXP,
  ...) -> sigmoid.
* Anything else (recurrent ops, control flow, a flatten of a spatial tensor, reductions over other axes) raises a
  ModelFileError naming the op: the IR has no generic op, and guessing its cost would corrupt the predictors.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as fb

from leti.errors import GraphError, ModelFileError
from leti.graph import shapes as S
from leti.graph.builder import GraphBuilder
from leti.graph.layergraph import LayerGraph
from leti.graph.shapes import PAD_SAME, PAD_VALID, out_size

OP_NAMES: dict[int, str] = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
DTYPES: dict[int, str] = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int8": np.int8, "uint8": np.uint8,
       "int64": np.int64, "int16": np.int16, "bool": np.bool_, "float64": np.float64}  # fmt: skip
FUSED = {0: "none", 1: "relu", 2: "relu", 3: "relu6", 4: "tanh", 5: "relu"}  # RELU_N1_TO_1, SIGN_BIT -> relu
MAX_BYTES = 2**31  # a FlatBuffer cannot address more


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = None  # constants only, typed and shaped
    scale: tuple[float, ...] = ()  # quantisation, when present
    zero_point: tuple[int, ...] = ()
    signature: tuple[int, ...] = ()  # the shape with -1 for dimensions fixed only at run time (when stored)

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class OpInfo:
    index: int
    name: str  # builtin name (CONV_2D) or the custom code
    version: int
    options: dict
    inputs: tuple[int, ...]  # -1 = optional input left out
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TFLiteModel:
    """The main subgraph of a .tflite file as plain records."""

    tensors: tuple[TensorInfo, ...]
    ops: tuple[OpInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""
    n_subgraphs: int = 1
    size: int = 0
    versions: dict = field(default_factory=dict)  # op name -> version in the operator-code table

    def op_names(self) -> list[str]:
        return [op.name for op in self.ops]


def _load_bytes(data) -> bytes:
    if isinstance(data, str | os.PathLike):
        p = Path(data)
        try:
            return p.read_bytes()
        except OSError as e:
            raise ModelFileError(f"cannot read {p} ({e.strerror or e})", "model") from None
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise ModelFileError(f"expected .tflite bytes or a path, got {type(data).__name__}", "model")


def check_tflite_bytes(data: bytes) -> None:
    """Cheap checks before anything parses the bytes: size and the TFL3 file identifier."""
    if len(data) == 0:
        raise ModelFileError("the model file is empty", "model")
    if len(data) < 16 or not fb.Model.ModelBufferHasIdentifier(data, 0):
        raise ModelFileError("not a .tflite file (no TFL3 FlatBuffer identifier)", "model")


def _vector_ok(n: int, data: bytes) -> None:
    # a corrupt length field would otherwise make the pure-Python reader loop for ages
    if n < 0 or n * 4 > len(data):
        raise ModelFileError("corrupt .tflite file (a vector is longer than the file)", "model")


def _options_dict(opt) -> dict:
    if opt is None:
        return {}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(opt).items()}


def parse_tflite(data) -> TFLiteModel:
    """The main subgraph's ops and tensors; ModelFileError on anything that is not a readable .tflite."""
    raw = _load_bytes(data)
    check_tflite_bytes(raw)
    try:
        root = fb.Model.GetRootAs(raw, 0)
        for n in (root.SubgraphsLength(), root.BuffersLength(), root.OperatorCodesLength()):
            _vector_ok(n, raw)
        if root.SubgraphsLength() < 1:
            raise ModelFileError("the model has no subgraph", "model")
        sg_fb = root.Subgraphs(0)
        for n in (sg_fb.TensorsLength(), sg_fb.OperatorsLength()):
            _vector_ok(n, raw)
        codes = []
        for i in range(root.OperatorCodesLength()):
            oc = fb.OperatorCodeT.InitFromObj(root.OperatorCodes(i))
            code = max(oc.builtinCode, oc.deprecatedBuiltinCode)  # old files only fill the deprecated field
            name = OP_NAMES.get(code, f"BUILTIN_{code}")
            if code == fb.BuiltinOperator.CUSTOM:
                name = (oc.customCode or b"CUSTOM").decode(errors="replace")
            codes.append((name, oc.version))
        sg = fb.SubGraphT.InitFromObj(sg_fb)
        buffers = root.BuffersLength()
        tensors = []
        for i, t in enumerate(sg.tensors or []):
            shape = tuple(int(s) for s in (t.shape if t.shape is not None else ()))
            dtype = DTYPES.get(t.type, f"type{t.type}")
            arr = None
            if 0 < t.buffer < buffers:
                buf = root.Buffers(t.buffer)
                if not buf.DataIsNone() and buf.DataLength() > 0:
                    arr = buf.DataAsNumpy()
                elif buf.Offset() > 1 and buf.Size() > 0:  # large models keep data after the FlatBuffer
                    arr = np.frombuffer(raw, np.uint8, int(buf.Size()), int(buf.Offset()))
            if arr is not None and dtype in _NP:
                arr = np.frombuffer(arr.tobytes(), dtype=_NP[dtype])
                if arr.size == int(np.prod(shape)):
                    arr = arr.reshape(shape)
            q = t.quantization
            scale = tuple(float(v) for v in q.scale) if q is not None and q.scale is not None else ()
            zp = tuple(int(v) for v in q.zeroPoint) if q is not None and q.zeroPoint is not None else ()
            name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name or "")
            sig = tuple(int(s) for s in t.shapeSignature) if t.shapeSignature is not None else ()
            tensors.append(TensorInfo(i, name, shape, dtype, arr, scale, zp, sig))
        ops = []
        for i, o in enumerate(sg.operators or []):
            if not 0 <= o.opcodeIndex < len(codes):
                raise ModelFileError(f"operator {i} refers to a missing operator code", "model")
            name, version = codes[o.opcodeIndex]
            ins = tuple(int(v) for v in (o.inputs if o.inputs is not None else ()))
            outs = tuple(int(v) for v in (o.outputs if o.outputs is not None else ()))
            for t in ins + outs:
                if t >= len(tensors) or t < -1:
                    raise ModelFileError(f"operator {i} ({name}) refers to a missing tensor {t}", "model")
            ops.append(OpInfo(i, name, version, _options_dict(o.builtinOptions), ins, outs))
        desc = root.Description()
        return TFLiteModel(
            tensors=tuple(tensors),
            ops=tuple(ops),
            inputs=tuple(int(v) for v in (sg.inputs if sg.inputs is not None else ())),
            outputs=tuple(int(v) for v in (sg.outputs if sg.outputs is not None else ())),
            description=desc.decode(errors="replace") if desc else "",
            n_subgraphs=root.SubgraphsLength(),
            size=len(raw),
            versions={name: v for name, v in codes},
        )
    except ModelFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure of untrusted bytes is a corrupt file
        raise ModelFileError(f"corrupt .tflite file ({type(e).__name__})", "model") from None


# ---- comparing op graphs ----------------------------------------------------------------------------------------
def op_signatures(model: TFLiteModel) -> list[str]:
    """One signature per op that encodes the op (name, version, options, output shapes) and, recursively, where
    each of its inputs comes from (the network input, a constant of some dtype and shape, or output k of an op
    with its own signature). Two models have equal sorted signature lists exactly when their op graphs are the
    same up to the order in which independent ops are listed."""
    producer = {t: (op, k) for op in model.ops for k, t in enumerate(op.outputs)}
    memo: dict[int, str] = {}

    def source(t: int) -> tuple:
        if t < 0:
            return ("none",)
        info = model.tensors[t]
        if t in model.inputs:
            return ("input", info.dtype, info.shape)
        if info.is_const or t not in producer:
            return ("const", info.dtype, info.shape)
        op, k = producer[t]
        return (sig(op), k)

    def sig(op: OpInfo) -> str:
        if op.index not in memo:
            opts = tuple(sorted((k, repr(v)) for k, v in op.options.items()))
            outs = tuple((model.tensors[t].dtype, model.tensors[t].shape) for t in op.outputs)
            text = repr((op.name, op.version, opts, outs, tuple(source(t) for t in op.inputs)))
            memo[op.index] = hashlib.sha1(text.encode()).hexdigest()
        return memo[op.index]

    return sorted(sig(op) for op in model.ops)


def diff_op_graphs(a, b) -> list[str]:
    """Differences between two .tflite op graphs (bytes, paths or parsed models); empty when they are the same
    graph up to the order of independent ops. Checks op names and versions, options, every tensor's shape and
    dtype, and which op output (or constant / network input) feeds each input slot."""
    ma = a if isinstance(a, TFLiteModel) else parse_tflite(a)
    mb = b if isinstance(b, TFLiteModel) else parse_tflite(b)
    out = []
    ca, cb = Counter(op.name for op in ma.ops), Counter(op.name for op in mb.ops)
    if ca != cb:
        out.append(f"op counts differ: only in the first {dict(ca - cb)}, only in the second {dict(cb - ca)}")
    for side, m in (("first", ma), ("second", mb)):
        if len(m.inputs) != 1 or len(m.outputs) != 1:
            out.append(f"the {side} model has {len(m.inputs)} inputs and {len(m.outputs)} outputs")
    if not out:
        ia, ib = ma.tensors[ma.inputs[0]], mb.tensors[mb.inputs[0]]
        oa, ob = ma.tensors[ma.outputs[0]], mb.tensors[mb.outputs[0]]
        if (ia.shape, ia.dtype, oa.shape, oa.dtype) != (ib.shape, ib.dtype, ob.shape, ob.dtype):
            out.append(f"input/output {ia.shape}/{oa.shape} vs {ib.shape}/{ob.shape}")
    sa, sb = Counter(op_signatures(ma)), Counter(op_signatures(mb))
    if sa != sb:
        first = {op.index for op in ma.ops}
        n = sum((sa - sb).values())
        out.append(f"{n} of {len(first)} ops differ in options, shapes or inputs")
    if ma.ops and mb.ops and (ma.ops[-1].name != mb.ops[-1].name):
        out.append(f"last op {ma.ops[-1].name} vs {mb.ops[-1].name}")
    return out


# ---- TFLite -> LayerGraph -------------------------------------------------------------------------------------
_PIECEWISE_LINEAR = {"RELU_N1_TO_1", "RELU_0_TO_1", "PRELU", "ABS", "NEG"}
_TRANSCENDENTAL = {
    "ELU",
    "LOG_SOFTMAX",
    "EXP",
    "LOG",
    "SQRT",
    "RSQRT",
    "SQUARE",
    "SIN",
    "COS",
}
_ACT_OF = {"RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hswish", "LOGISTIC": "sigmoid", "TANH": "tanh",
           "GELU": "gelu", "LEAKY_RELU": "leaky_relu", "SOFTMAX": "softmax"}  # fmt: skip
_SKIPPED = {"QUANTIZE", "DEQUANTIZE", "CAST"}


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """IR (H, W, C) of a batch-1 tensor: rank 4 NHWC, or rank 2 (1, C) as (1, 1, C)."""
    if len(shape) == 4 and shape[0] == 1:
        return (shape[1], shape[2], shape[3])
    if len(shape) == 2 and shape[0] == 1:
        return (1, 1, shape[1])
    if len(shape) == 1:
        return (1, 1, shape[0])
    return None


_FOLDABLE = {"SHAPE", "STRIDED_SLICE", "SLICE", "PACK", "CONCATENATION", "GATHER", "CAST", "RESHAPE", "SQUEEZE",
             "EXPAND_DIMS", "ADD", "SUB", "MUL", "DIV", "FLOOR_DIV"}  # fmt: skip


def _strided_index(begin, end, strides, o: dict) -> tuple:
    """The numpy index of a STRIDED_SLICE (begin / end / shrink masks; no ellipsis or new axes)."""
    if o.get("ellipsisMask", 0) or o.get("newAxisMask", 0):
        raise ValueError("ellipsis and new axes are not evaluated")
    idx = []
    for k in range(len(begin)):
        if o.get("shrinkAxisMask", 0) >> k & 1:
            idx.append(int(begin[k]))
            continue
        b = None if o.get("beginMask", 0) >> k & 1 else int(begin[k])
        e = None if o.get("endMask", 0) >> k & 1 else int(end[k]) + (int(begin[k]) if o.get("offset") else 0)
        idx.append(slice(b, e, int(strides[k])))
    return tuple(idx)


def _fold(op: OpInfo, v: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
    name, o = op.name, op.options
    if name == "STRIDED_SLICE":
        return v[0][_strided_index(*(a.reshape(-1) for a in v[1:4]), o)]
    if name == "SLICE":
        return v[0][
            tuple(slice(int(b), None if z < 0 else int(b) + int(z)) for b, z in zip(v[1], v[2], strict=True))
        ]
    if name == "PACK":
        return np.stack(v, axis=o.get("axis", 0))
    if name == "CONCATENATION":
        return np.concatenate([np.atleast_1d(a) for a in v], axis=o.get("axis", 0))
    if name == "GATHER":
        return np.take(v[0], v[1], axis=o.get("axis", 0))
    if name in ("CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
        return v[0].reshape(out_shape)
    fn = {
        "ADD": np.add,
        "SUB": np.subtract,
        "MUL": np.multiply,
        "DIV": np.divide,
        "FLOOR_DIV": np.floor_divide,
    }
    return fn[name](v[0], v[1])


class _Reader:
    def __init__(self, model: TFLiteModel):
        self.m = model
        self.b = GraphBuilder()
        self.node: dict[int, int] = {}  # tensor -> IR node
        self.const: dict[int, np.ndarray] = {t.index: t.data for t in model.tensors if t.data is not None}
        self.uses: dict[int, list[int]] = {}
        self.producer = {t: op for op in model.ops for t in op.outputs}
        for op in model.ops:
            for t in op.inputs:
                if t >= 0:
                    self.uses.setdefault(t, []).append(op.index)
        for t in model.outputs:
            self.uses.setdefault(t, []).append(-1)
        self.done: set[int] = set()  # ops consumed by a pattern that started earlier
        self.real: dict[int, tuple[int, ...]] = {}  # tensor -> shape, where the file's is wrong
        self.pad_of: dict[int, tuple] = {}  # conv op -> (input tensor, paddings) of a folded PAD
        self.nary: dict[int, list[int]] = {}  # ADD op -> tensors it sums when a chain was merged into it

    # -- helpers -----------------------------------------------------------------------------------------------
    def err(self, op: OpInfo, msg: str) -> ModelFileError:
        return ModelFileError(msg, f"operator {op.index} ({op.name})")

    def shape(self, t: int) -> tuple[int, ...]:
        """A tensor's shape: the file's, or what leti worked out where the file records it wrongly (a dynamic
        batch leaves 1 for every dimension computed at run time, see ``reshaped``)."""
        return self.real.get(t, self.m.tensors[t].shape)

    def reshaped(self, op: OpInfo) -> tuple[int, ...] | None:
        """The output shape of RESHAPE / EXPAND_DIMS / SQUEEZE / TILE worked out from its (folded) arguments."""
        src = self.shape(op.inputs[0])
        try:
            if op.name == "RESHAPE":
                arg = self.const.get(op.inputs[1]) if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
                dims = [
                    int(v) for v in (arg.reshape(-1) if arg is not None else op.options.get("newShape") or [])
                ]
                if not dims and arg is None:
                    return None
                if dims.count(-1) == 1:
                    known = int(np.prod([d for d in dims if d != -1]))
                    dims[dims.index(-1)] = int(np.prod(src)) // max(known, 1)
                return tuple(dims) if int(np.prod(dims)) == int(np.prod(src)) else None
            if op.name == "EXPAND_DIMS":
                axis = int(self.const[op.inputs[1]].reshape(()))
                dims = list(src)
                dims.insert(axis % (len(src) + 1), 1)
                return tuple(dims)
            if op.name == "TILE":
                return tuple(
                    int(a) * int(b) for a, b in zip(src, self.const[op.inputs[1]].reshape(-1), strict=True)
                )
            if op.name == "SQUEEZE":
                axes = [a % len(src) for a in op.options.get("squeezeDims") or []]
                return tuple(d for k, d in enumerate(src) if (k not in axes if axes else d != 1))
        except (KeyError, ValueError, TypeError):
            return None
        return None

    def single_use(self, t: int) -> int | None:
        u = self.uses.get(t, [])
        return u[0] if len(u) == 1 and u[0] >= 0 else None

    def x(self, op: OpInfo, k: int = 0) -> int:
        t = op.inputs[k]
        if t not in self.node:
            raise self.err(op, f"input {k} is neither the network input nor computed by an earlier op")
        return self.node[t]

    def check_shape(self, op: OpInfo, node: int, t: int) -> None:
        if t not in self.real and any(d < 0 for d in self.m.tensors[t].signature[1:]):
            # the file does not know this shape (see ``shape``): take the IR's
            h, w, c = self.b.shape(node)
            self.real[t] = (1, h, w, c) if len(self.m.tensors[t].shape) == 4 else (1, c)
            return
        want = _hwc(self.shape(t))
        if want is not None and tuple(self.b.shape(node)) != want:
            raise self.err(op, f"computes {self.b.shape(node)} but the file says {list(self.shape(t))}")

    def bind(self, op: OpInfo, node: int, t: int | None = None) -> None:
        t = op.outputs[0] if t is None else t
        self.check_shape(op, node, t)
        self.node[t] = node

    def act_after(self, node: int, fused: int) -> int:
        return self.b.act(node, FUSED.get(fused, "relu"))

    # -- patterns that look ahead -------------------------------------------------------------------------------
    def follow_act(self, t: int) -> tuple[str, list[OpInfo]]:
        """A standalone activation op that only ``t`` feeds, to fold into the conv / dense producing ``t``."""
        u = self.single_use(t)
        if u is None:
            return "none", []
        nxt = self.m.ops[u]
        if nxt.name in _ACT_OF:
            return _ACT_OF[nxt.name], [nxt]
        return "none", []

    def swish_after(self, t: int) -> list[OpInfo]:
        """[LOGISTIC, MUL] when ``t`` only feeds x * sigmoid(x)."""
        uses = self.uses.get(t, [])
        if len(uses) != 2 or -1 in uses:
            return []
        a, b = (self.m.ops[u] for u in uses)
        sig, mul = (a, b) if a.name == "LOGISTIC" else (b, a)
        if sig.name != "LOGISTIC" or mul.name != "MUL" or mul.options.get("fusedActivationFunction", 0):
            return []
        if sorted(mul.inputs) != sorted((t, sig.outputs[0])) or self.single_use(sig.outputs[0]) != mul.index:
            return []
        return [sig, mul]

    def feeds_swish(self, op: OpInfo) -> bool:
        u = self.single_use(op.outputs[0])
        mul = self.m.ops[u] if u is not None else None
        return (
            mul is not None
            and mul.name == "MUL"
            and sorted(t for t in mul.inputs if t >= 0) == sorted((op.inputs[0], op.outputs[0]))
        )

    def is_scalar_mul(self, op: OpInfo, value: float) -> bool:
        if op.name != "MUL" or op.options.get("fusedActivationFunction", 0):
            return False
        c = [self.const.get(t) for t in op.inputs]
        k = [a for a in c if a is not None]
        return len(k) == 1 and k[0].size == 1 and abs(float(k[0].reshape(())) - value) < 1e-6

    def conv_act(self, op: OpInfo) -> tuple[str, list[OpInfo]]:
        fused = op.options.get("fusedActivationFunction", 0)
        out = op.outputs[0]
        if fused == 0:
            swish = self.swish_after(out)
            return ("swish", swish) if swish else self.follow_act(out)
        if fused == 3:  # relu6 then * 1/6: the converter's hard_sigmoid with the +3 folded into the bias
            u = self.single_use(out)
            if u is not None and self.is_scalar_mul(self.m.ops[u], 1.0 / 6.0):
                return "hsigmoid", [self.m.ops[u]]
        return FUSED.get(fused, "relu"), []

    # -- op handlers -------------------------------------------------------------------------------------------
    def window(self, op: OpInfo, kh: int, kw: int, sh: int, sw: int, dil: int) -> tuple[int, int]:
        """(input node, IR padding), folding a PAD in front of a VALID window when that gives SAME's shape."""
        pad = op.options.get("padding", 0)
        folded = self.pad_of.get(op.index)
        if folded is None:
            return self.x(op), pad
        return self.node[folded[0]], PAD_SAME  # pad() folds only a PAD that makes this VALID window SAME

    def conv(self, op: OpInfo, depthwise: bool) -> None:
        filt = self.shape(op.inputs[1])
        o = op.options
        sh, sw = o.get("strideH", 1), o.get("strideW", 1)
        dh, dw = o.get("dilationHFactor", 1) or 1, o.get("dilationWFactor", 1) or 1
        if dh != dw:
            raise self.err(op, f"dilation {dh}x{dw} is not square; the IR has one dilation")
        x, pad = self.window(op, filt[1], filt[2], sh, sw, dh)
        bias = len(op.inputs) > 2 and op.inputs[2] >= 0
        act, extra = self.conv_act(op)
        cin = self.b.shape(x)[2]
        try:
            if depthwise:
                cout = _hwc(self.shape(op.outputs[0]))[2]
                y = self.b.dwconv(x, filt[1], filt[2], sh, sw, mult=max(1, cout // cin), dil=dh, act=act,
                                  bn=False, bias=bias, pad=pad)  # fmt: skip
            else:
                if filt[3] < 1 or cin % filt[3]:
                    raise self.err(op, f"filter input channels {filt[3]} do not divide input channels {cin}")
                y = self.b.conv(x, filt[0], filt[1], filt[2], sh, sw, groups=cin // filt[3], dil=dh, act=act,
                                bn=False, bias=bias, pad=pad)  # fmt: skip
        except GraphError as e:
            raise self.err(op, e.reason) from None
        self.finish_fused(op, y, extra)

    def finish_fused(self, op: OpInfo, node: int, extra: list[OpInfo]) -> None:
        self.bind(op, node)
        for e in extra:  # ops folded into this node: their outputs are this node's
            self.done.add(e.index)
            self.bind(e, node)

    def dense(self, op: OpInfo) -> None:
        x = self.x(op)
        units = self.shape(op.inputs[1])[0]
        k = self.shape(op.inputs[1])[1]
        if self.b.shape(x)[2] != k:
            if S.elems(self.b.shape(x)) != k or op.options.get("keepNumDims"):
                raise self.err(op, f"reads a {self.b.shape(x)} tensor with {k}-input weights")
            x = self.b.reshape(x, (1, 1, k), flat=True)  # FULLY_CONNECTED flattens its input itself
        fused = op.options.get("fusedActivationFunction", 0)
        act, extra = (FUSED.get(fused, "relu"), []) if fused else self.follow_act(op.outputs[0])
        bias = len(op.inputs) > 2 and op.inputs[2] >= 0
        y = self.b.dense(x, units, act=act, bias=bias)
        out = self.shape(op.outputs[0])
        if len(out) == 2 and out[0] != 1:
            # a 4-D input without keep_num_dims: the (H*W, units) output holds the IR's (H, W, units) values
            self.node[op.outputs[0]] = y
            for e in extra:
                self.done.add(e.index)
                self.node[e.outputs[0]] = y
            return
        self.finish_fused(op, y, extra)

    def pool(self, op: OpInfo, kind: str) -> None:
        o = op.options
        kh, kw = o.get("filterHeight", 1), o.get("filterWidth", 1)
        sh, sw = o.get("strideH", 1), o.get("strideW", 1)
        if sh != sw:
            raise self.err(op, f"stride {sh}x{sw} is not square; the IR pools with one stride")
        x, pad = self.window(op, kh, kw, sh, sw, 1)
        y = self.b.pool(kind, x, kh, sh, kw=kw, pad=pad)
        self.bind(op, self.act_after(y, o.get("fusedActivationFunction", 0)))

    def binary(self, op: OpInfo) -> None:
        ins = [t for t in op.inputs if t >= 0]
        consts = [t for t in ins if t in self.const]
        tens = [t for t in ins if t not in self.const]
        fused = op.options.get("fusedActivationFunction", 0)
        if not tens:
            raise self.err(op, "has only constant inputs")
        if consts:
            self.const_binary(op, tens[0], self.const[consts[0]], fused)
            return
        if op.name in ("ADD", "ADD_N", "SUB"):
            xs = self.nary.get(op.index, tens)
            # merge a chain ADD(ADD(a, b), c): the inner one feeds only this one and fuses no activation
            u = self.single_use(op.outputs[0])
            if (
                op.name == "ADD"
                and not fused
                and u is not None
                and self.m.ops[u].name == "ADD"
                and u not in self.nary
            ):
                nxt = self.m.ops[u]
                rest = [t for t in nxt.inputs if t >= 0 and t != op.outputs[0]]
                if len(rest) == 1 and rest[0] in self.node:  # computed already, so the chain end can read it
                    self.nary[nxt.index] = xs + rest
                    return  # the last ADD of the chain builds the node
            y = self.b.add([self._tensor_node(op, t) for t in xs])
        elif op.name == "MUL":
            a, c = tens[0], tens[-1]
            # swish: LOGISTIC(x) then MUL(x, sigmoid): one act node
            for s, other in ((a, c), (c, a)):
                p = self._producer(s)
                if (
                    p is not None
                    and p.name == "LOGISTIC"
                    and p.inputs[0] == other
                    and self.single_use(s) == op.index
                ):
                    self.bind(op, self.act_after(self.b.act(self.node[other], "swish"), fused))
                    return
            if self.b.shape(self.node[a]) == (1, 1, self.b.shape(self.node[a])[2]) and len(tens) == 2:
                a, c = c, a  # the broadcast (squeeze-excite) scale goes second
            try:
                y = self.b.mul(self.node[a], self.node[c])
            except GraphError as e:
                raise self.err(op, e.reason) from None
        else:
            raise self.err(op, "of two tensors has no IR equivalent")
        self.bind(op, self.act_after(y, fused))

    def _tensor_node(self, op: OpInfo, t: int) -> int:
        if t not in self.node:
            raise self.err(op, "reads a tensor no earlier op computes")
        return self.node[t]

    def _producer(self, t: int) -> OpInfo | None:
        return self.producer.get(t)

    def const_binary(self, op: OpInfo, t: int, k: np.ndarray, fused: int) -> None:
        x = self._tensor_node(op, t)
        if op.name == "MUL" and not np.any(k):
            self.bind(op, self.act_after(self.b.zero(x), fused))
            return
        u = self.single_use(op.outputs[0])
        # hard_sigmoid on its own: ADD 3 with RELU6, then MUL 1/6
        is_three = k.size == 1 and abs(float(k.reshape(())) - 3.0) < 1e-6
        if (
            op.name == "ADD"
            and fused == 3
            and is_three
            and u is not None
            and self.is_scalar_mul(self.m.ops[u], 1 / 6)
        ):
            self.finish_fused(op, self.b.act(x, "hsigmoid"), [self.m.ops[u]])
            return
        y = self.b.bn(x)
        # BN written as MUL then ADD by constants is one affine node
        if op.name == "MUL" and not fused and u is not None:
            nxt = self.m.ops[u]
            if nxt.name in ("ADD", "SUB") and any(s in self.const for s in nxt.inputs if s >= 0):
                self.done.add(nxt.index)
                self.bind(op, y)
                self.bind(nxt, self.act_after(y, nxt.options.get("fusedActivationFunction", 0)))
                return
        self.bind(op, self.act_after(y, fused))

    def alias(self, op: OpInfo) -> None:
        t = op.inputs[0]
        if t in self.const:  # e.g. DEQUANTIZE of fp16 weights: the result is still a constant
            self.const[op.outputs[0]] = self.const[t]
            return
        self.node[op.outputs[0]] = self.x(op)

    def reshape(self, op: OpInfo) -> None:
        real = self.reshaped(op)
        if real is not None:
            self.real[op.outputs[0]] = real
        src, dst = self.shape(op.inputs[0]), self.shape(op.outputs[0])
        if op.inputs[0] in self.const:
            self.const[op.outputs[0]] = self.const[op.inputs[0]]
            return
        if _hwc(dst) is not None and _hwc(src) is not None:
            x = self.x(op)
            flat = len(dst) == 2 and tuple(self.b.shape(x)[:2]) != (1, 1)  # a Flatten of a spatial map
            try:
                self.bind(op, self.b.reshape(x, _hwc(dst), flat=flat))
            except GraphError as e:
                raise self.err(op, e.reason) from None
            return
        if len(src) == 4 and len(dst) == 5 and self.upsample_chain(op):
            return
        # channel shuffle: (1,H,W,C) -> (1,H,W,g,C/g) -> transpose last two -> (1,H,W,C)
        if len(src) == 4 and len(dst) == 5 and dst[:3] == src[:3] and dst[3] * dst[4] == src[3]:
            u = self.single_use(op.outputs[0])
            tr = self.m.ops[u] if u is not None else None
            if tr is not None and tr.name == "TRANSPOSE":
                perm = self.const.get(tr.inputs[1])
                u2 = self.single_use(tr.outputs[0])
                back = self.m.ops[u2] if u2 is not None else None
                if (
                    perm is not None
                    and perm.tolist() == [0, 1, 2, 4, 3]
                    and back is not None
                    and back.name == "RESHAPE"
                    and self.shape(back.outputs[0]) == src
                ):
                    y = self.b.shuffle(self.x(op), dst[3])
                    self.node[op.outputs[0]] = y
                    self.done.update((tr.index, back.index))
                    self.bind(back, y)
                    return
        raise self.err(
            op,
            f"reshapes {list(src)} to {list(dst)}; only 2-D and 4-D shapes and channel shuffles map to the IR",
        )

    def upsample_chain(self, op: OpInfo) -> bool:
        """Keras' nearest UpSampling2D: RESHAPE (or EXPAND_DIMS) to 5-D, TILE, RESHAPE back to 4-D, once per axis
        -> one resize."""
        chain, t = [op], op.outputs[0]
        while True:
            u = self.single_use(t)
            nxt = self.m.ops[u] if u is not None else None
            if nxt is None or nxt.name not in ("RESHAPE", "TILE", "EXPAND_DIMS") or len(chain) > 8:
                break
            shape = self.reshaped(nxt)
            if shape is None or (len(self.shape(t)) == 4 and len(shape) != 5):
                break  # a 4-D tensor goes on only into the next axis' 5-D step
            self.real[nxt.outputs[0]] = shape
            chain.append(nxt)
            t = nxt.outputs[0]
        if len(self.shape(t)) != 4:
            return False
        (_, h, w, c), (_, oh, ow, oc) = self.shape(op.inputs[0]), self.shape(t)
        if oc != c or oh % h or ow % w or not any(o.name == "TILE" for o in chain):
            return False
        y = self.b.resize(self.x(op), oh, ow, "nearest")
        self.done.update(o.index for o in chain[1:])
        self.bind(chain[-1], y)
        return True

    def slice_op(self, op: OpInfo) -> None:
        """A slice of channels -> slice; a crop of H and W -> pad by negative amounts."""
        src, dst = self.shape(op.inputs[0]), self.shape(op.outputs[0])
        ranges = self.slice_ranges(op, src)
        if len(src) != 4 or len(dst) != 4 or ranges is None or ranges[0] != (0, 1):
            raise self.err(
                op, f"slices {list(src)} to {list(dst)}; only channel slices and crops map to the IR"
            )
        (t, h), (lf, w), (c0, c) = ranges[1:]
        if (h, w) == tuple(src[1:3]):
            self.bind(op, self._slice(op, c0, c))
        elif c == src[3]:
            self.bind(op, self.b.pad(self.x(op), -t, -lf, t + h - src[1], lf + w - src[2]))
        else:
            raise self.err(op, "slices channels and crops at once; the IR does one or the other")

    def slice_ranges(self, op: OpInfo, src: tuple[int, ...]) -> list[tuple[int, int]] | None:
        """(start, length) per axis of a STRIDED_SLICE / SLICE; None when it has strides or drops axes."""
        args = [self.const.get(t) for t in op.inputs[1:]]
        if len(args) < 2 or any(a is None for a in args):
            raise self.err(op, "has computed begin or end indices")
        args = [a.reshape(-1) for a in args]
        if op.name == "SLICE":
            index = tuple(
                slice(int(b), None if z < 0 else int(b) + int(z)) for b, z in zip(*args[:2], strict=True)
            )
        else:
            try:
                index = _strided_index(*args[:3], op.options)
            except ValueError:
                return None
        if len(index) != len(src):
            return None
        ranges = []
        for k, ix in enumerate(index):
            if not isinstance(ix, slice):
                return None  # a shrunk axis
            kept = np.arange(src[k])[ix]
            if kept.size == 0 or (kept.size > 1 and np.any(np.diff(kept) != 1)):
                return None
            ranges.append((int(kept[0]), int(kept.size)))
        return ranges

    def _slice(self, op: OpInfo, start: int, size: int) -> int:
        try:
            return self.b.slice(self.x(op), size, start)
        except GraphError as e:
            raise self.err(op, e.reason) from None

    def split(self, op: OpInfo) -> None:
        data = op.inputs[1] if op.name == "SPLIT" else op.inputs[0]
        axis_t = op.inputs[0] if op.name == "SPLIT" else op.inputs[2]
        axis = self.const.get(axis_t)
        src = self.shape(data)
        if axis is None or int(axis.reshape(())) % max(len(src), 1) != len(src) - 1 or len(src) != 4:
            raise self.err(op, "splits along an axis other than channels")
        start = 0
        x = self.node.get(data)
        if x is None:
            raise self.err(op, "splits a tensor no earlier op computes")
        for t in op.outputs:
            size = self.shape(t)[3]
            self.node[t] = self.b.slice(x, size, start)
            self.check_shape(op, self.node[t], t)
            start += size

    def mean(self, op: OpInfo) -> None:
        """MEAN over H and W -> gap; REDUCE_MAX over H and W -> a max pool over the whole map."""
        axes = self.const.get(op.inputs[1])
        src = self.shape(op.inputs[0])
        if axes is None or len(src) != 4 or sorted(int(a) % 4 for a in axes.reshape(-1)) != [1, 2]:
            raise self.err(op, "reduces over axes other than H and W")
        if op.name == "REDUCE_MAX":
            self.bind(op, self.b.pool("maxpool", self.x(op), src[1], 1, kw=src[2], pad=PAD_VALID))
            return
        self.bind(op, self.b.gap(self.x(op), keepdims=bool(op.options.get("keepDims", False))))

    def pad(self, op: OpInfo) -> None:
        """PAD folds into the one VALID conv / pool reading it when that makes it SAME; else a pad node."""
        pads = self.const.get(op.inputs[1])
        src = self.shape(op.inputs[0])
        if pads is None or pads.shape != (len(src), 2) or len(src) != 4 or pads[0].any() or pads[3].any():
            raise self.err(op, "pads axes other than H and W (or by computed amounts)")
        (t, bot), (lf, r) = (int(v) for v in pads[1]), (int(v) for v in pads[2])
        mode = "constant"
        if op.name == "MIRROR_PAD":
            mode = "symmetric" if op.options.get("mode", 0) == fb.MirrorPadMode.SYMMETRIC else "reflect"
        x = self.x(op)  # the padded tensor must be known
        u = self.single_use(op.outputs[0])
        nxt = self.m.ops[u] if u is not None else None
        if mode == "constant" and nxt is not None and self.same_window(nxt, src):
            self.pad_of[nxt.index] = (op.inputs[0], pads)
            return
        self.bind(op, self.b.pad(x, t, lf, bot, r, mode))

    def same_window(self, op: OpInfo, src: tuple[int, ...]) -> bool:
        """Whether ``op`` is a VALID conv / pool whose output has the size SAME padding gives on ``src``."""
        o = op.options
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            kh, kw = self.shape(op.inputs[1])[1:3]
            dil = o.get("dilationHFactor", 1) or 1
        elif op.name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            kh, kw, dil = o.get("filterHeight", 1), o.get("filterWidth", 1), 1
        else:
            return False
        sh, sw = o.get("strideH", 1), o.get("strideW", 1)
        oh, ow = self.shape(op.outputs[0])[1:3]
        same = (out_size(src[1], kh, sh, dil, PAD_SAME), out_size(src[2], kw, sw, dil, PAD_SAME))
        return o.get("padding", 0) == PAD_VALID and same == (oh, ow)

    def run(self) -> LayerGraph:
        m = self.m
        if m.n_subgraphs != 1:
            raise ModelFileError(f"has {m.n_subgraphs} subgraphs; control flow has no IR equivalent", "model")
        if len(m.inputs) != 1:
            raise ModelFileError(f"has {len(m.inputs)} inputs; a LayerGraph has one", "model")
        if len(m.outputs) != 1:
            raise ModelFileError(f"has {len(m.outputs)} outputs; a LayerGraph has one", "model")
        inp = m.tensors[m.inputs[0]]
        if any(d < 0 for d in inp.signature[1:]):
            raise ModelFileError(
                f"input size {list(inp.signature)} is fixed only at run time; export it with a fixed input shape",
                "model",
            )
        shp = _hwc(inp.shape)
        if shp is None:
            raise ModelFileError(
                f"input shape {list(m.tensors[m.inputs[0]].shape)} is not (1, H, W, C)", "model"
            )
        self.b.block = "input"
        self.node[m.inputs[0]] = self.b.input(shp)
        for op in m.ops:  # constants first: patterns look ahead at shapes computed later in the file
            if self.fold_const(op):
                self.done.add(op.index)
        for t, users in self.uses.items():  # a SHAPE evaluated here no longer reads its tensor
            self.uses[t] = [u for u in users if u < 0 or u not in self.done]
        for op in m.ops:
            if op.index in self.done:
                continue
            self.b.block = f"op{op.index}:{op.name.lower()}"
            self.dispatch(op)
        out = m.outputs[0]
        if self.node.get(out, -1) < 0:
            raise ModelFileError("the output is not computed from the input", "model")
        if self.node[out] != len(self.b) - 1:
            raise ModelFileError("the output is not the last op's result", "model")
        return self.b.finish({"source": "tflite", "description": m.description, "ops": len(m.ops)})

    def fold_const(self, op: OpInfo) -> bool:
        """Evaluate shape arithmetic on constants (a dynamic batch leaves SHAPE -> STRIDED_SLICE -> PACK in front
        of a RESHAPE; the batch is the 1 stored in the file's shapes); True when the output became a constant."""
        if op.name not in _FOLDABLE or len(op.outputs) != 1:
            return False
        if op.name == "SHAPE":
            t = op.inputs[0]
            if t not in self.real and any(d < 0 for d in self.m.tensors[t].signature[1:]):
                return False  # not known yet: the walk works it out (see ``shape``)
            val = np.array(self.shape(t), dtype=np.int64)
        else:
            ins = [t for t in op.inputs if t >= 0]
            if not ins or any(t not in self.const for t in ins) or op.options.get("fusedActivationFunction"):
                return False
            try:
                val = _fold(op, [self.const[t] for t in ins], self.shape(op.outputs[0]))
            except (ValueError, IndexError, TypeError, ZeroDivisionError):
                raise self.err(op, "cannot be evaluated on its constant inputs") from None
        out = self.m.tensors[op.outputs[0]]
        self.const[op.outputs[0]] = np.asarray(val).astype(_NP.get(out.dtype, np.float32))
        return True

    def dispatch(self, op: OpInfo) -> None:
        name = op.name
        if self.fold_const(op):
            return
        if name == "CONV_2D":
            self.conv(op, depthwise=False)
        elif name == "DEPTHWISE_CONV_2D":
            self.conv(op, depthwise=True)
        elif name == "FULLY_CONNECTED":
            self.dense(op)
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            self.pool(op, "maxpool" if name == "MAX_POOL_2D" else "avgpool")
        elif name in ("MEAN", "REDUCE_MAX"):
            self.mean(op)
        elif name in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
            _, oh, ow, _ = self.shape(op.outputs[0])
            self.bind(
                op, self.b.resize(self.x(op), oh, ow, "bilinear" if name == "RESIZE_BILINEAR" else "nearest")
            )
        elif name in ("ADD", "ADD_N", "SUB", "MUL"):
            self.binary(op)
        elif name == "DIV":
            if op.inputs[1] not in self.const:
                raise self.err(op, "divides by a tensor; the IR has no such op")
            fused = op.options.get("fusedActivationFunction", 0)
            self.const_binary(op, op.inputs[0], self.const[op.inputs[1]], fused)
        elif name == "CONCATENATION":
            rank = len(self.shape(op.outputs[0]))
            if op.options.get("axis", -1) % rank != rank - 1:
                raise self.err(op, "concatenates along an axis other than channels")
            y = self.b.concat([self.x(op, k) for k in range(len(op.inputs))])
            self.bind(op, self.act_after(y, op.options.get("fusedActivationFunction", 0)))
        elif name in _ACT_OF:
            if name == "LOGISTIC" and self.feeds_swish(op):
                return  # the MUL that follows reads as one swish node
            self.bind(op, self.b.act(self.x(op), _ACT_OF[name]))
        elif name in _PIECEWISE_LINEAR:
            self.bind(op, self.b.act(self.x(op), "relu"))
        elif name in _TRANSCENDENTAL:
            self.bind(op, self.b.act(self.x(op), "sigmoid"))
        elif name in _SKIPPED:
            self.alias(op)
        elif name in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS"):
            self.reshape(op)
        elif name in ("STRIDED_SLICE", "SLICE"):
            self.slice_op(op)
        elif name in ("SPLIT", "SPLIT_V"):
            self.split(op)
        elif name in ("PAD", "PADV2", "MIRROR_PAD"):
            self.pad(op)
        else:
            raise self.err(op, "has no LayerGraph equivalent")


def read_tflite(data) -> LayerGraph:
    """A LayerGraph from .tflite bytes or a path; ModelFileError for corrupt files and ops the IR cannot hold."""
    model = parse_tflite(data)
    try:
        return _Reader(model).run()
    except ModelFileError:
        raise
    except GraphError as e:  # shapes that do not fit together: the file is inconsistent
        raise ModelFileError(e.reason, e.field) from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise ModelFileError(f"unexpected structure ({type(e).__name__}: {e})", "model") from None


__all__ = [
    "OpInfo",
    "TFLiteModel",
    "TensorInfo",
    "check_tflite_bytes",
    "diff_op_graphs",
    "op_signatures",
    "parse_tflite",
    "read_tflite",
]

"""The layer vocabulary of an Arch: names such as ``conv3x3-bn-relu`` or dicts such as ``{"op": "mbconv", "k": 5}``.

``normalize_layer`` turns either form into a canonical dict with every attribute present, so that equal layers
compare (and hash) equal however they were written. Canonical dicts are shared between archs: do not mutate them.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from leti.errors import ArchError
from leti.graph.layergraph import ACTS

_REQ = object()  # marks a required attribute
_INT, _NUM, _BOOL, _STR = "int", "number", "bool", "str"

# op -> {attr: (kind, default, allowed: (lo, hi) for numbers / tuple of choices for strings / None)}
# ``None`` as a default means "decided from context": channels -> the cell's channels; bias -> not bn; etc.
SCHEMAS: dict[str, dict[str, tuple]] = {
    "input": {},
    "output": {},
    "conv": {
        "k": (_INT, 3, (1, 11)),
        "stride": (_INT, 1, (1, 4)),
        "groups": (_INT, 1, (1, 4096)),
        "dilation": (_INT, 1, (1, 4)),
        "channels": (_INT, None, (1, 8192)),
        "act": (_STR, "relu", ACTS),
        "bn": (_BOOL, True, None),
        "bias": (_BOOL, None, None),
        "pre_act": (_STR, "none", ACTS),
    },
    "dwconv": {
        "k": (_INT, 3, (1, 11)),
        "stride": (_INT, 1, (1, 4)),
        "dilation": (_INT, 1, (1, 4)),
        "multiplier": (_INT, 1, (1, 8)),
        "act": (_STR, "relu", ACTS),
        "bn": (_BOOL, True, None),
        "bias": (_BOOL, None, None),
    },
    "sepconv": {
        "k": (_INT, 3, (1, 11)),
        "stride": (_INT, 1, (1, 4)),
        "channels": (_INT, None, (1, 8192)),
        "act": (_STR, "relu", ACTS),
    },
    "mbconv": {
        "k": (_INT, 3, (1, 11)),
        "e": (_NUM, 6, (1, 12)),
        "stride": (_INT, 1, (1, 4)),
        "groups": (_INT, 1, (1, 64)),
        "se": (_NUM, 0, (0, 1)),
        "act": (_STR, "relu", ("relu", "relu6", "hswish", "swish")),
        "channels": (_INT, None, (1, 8192)),
        "expand": (_BOOL, None, None),
        "residual": (_BOOL, True, None),
    },
    "tucker2": {
        "k": (_INT, 3, (1, 11)),
        "stride": (_INT, 1, (1, 4)),
        "dilation": (_INT, 1, (1, 4)),
        "rin": (_INT, _REQ, (1, 8192)),
        "rout": (_INT, _REQ, (1, 8192)),
        "channels": (_INT, None, (1, 8192)),
        "act": (_STR, "relu", ACTS),
        "bn": (_BOOL, True, None),
        "bias": (_BOOL, None, None),
    },
    "cp": {
        "k": (_INT, 3, (1, 11)),
        "stride": (_INT, 1, (1, 4)),
        "rank": (_INT, _REQ, (1, 8192)),
        "channels": (_INT, None, (1, 8192)),
        "act": (_STR, "relu", ACTS),
        "bn": (_BOOL, True, None),
        "bias": (_BOOL, None, None),
    },
    "dense": {"units": (_INT, None, (1, 65536)), "act": (_STR, "none", ACTS), "bias": (_BOOL, True, None)},
    "svd_dense": {
        "rank": (_INT, _REQ, (1, 65536)),
        "units": (_INT, None, (1, 65536)),
        "act": (_STR, "none", ACTS),
        "bias": (_BOOL, True, None),
    },
    "maxpool": {"k": (_INT, 3, (1, 11)), "stride": (_INT, 1, (1, 4))},
    "avgpool": {"k": (_INT, 3, (1, 11)), "stride": (_INT, 1, (1, 4))},
    "gap": {},
    "identity": {"channels": (_INT, None, (1, 8192)), "stride": (_INT, 1, (1, 4))},
    "zero": {},
    "add": {},
    "mul": {},  # a vertex multiplying its two inputs: a map by a (1, 1, C) gate (squeeze-excite), merge "sum" only
    "concat": {},
    "bn": {},
    "act": {"fn": (_STR, "relu", ACTS[1:])},
    "shuffle": {"groups": (_INT, 2, (2, 64))},
}

_OP_ALIASES = {
    "none": "zero",
    "skip": "identity",
    "skip_connect": "identity",
    "global_pool": "gap",
    "global_avg_pool": "gap",
    "batchnorm": "bn",
    "svd": "svd_dense",
    "depthwise": "dwconv",
    "separable": "sepconv",
    "inverted_residual": "mbconv",
}
_ACT_OPS = set(ACTS[1:])

_NAMED: dict[str, dict] = {
    "nor_conv_3x3": {"op": "conv", "k": 3, "pre_act": "relu", "act": "none"},
    "nor_conv_1x1": {"op": "conv", "k": 1, "pre_act": "relu", "act": "none"},
    "avg_pool_3x3": {"op": "avgpool", "k": 3},
    "max_pool_3x3": {"op": "maxpool", "k": 3},
}
_NAME_PATTERNS: list[tuple[re.Pattern, callable]] = [
    (re.compile(r"conv(\d+)x\1-bn-relu"), lambda m: {"op": "conv", "k": int(m[1])}),
    (re.compile(r"conv(\d+)x\1"), lambda m: {"op": "conv", "k": int(m[1])}),
    (re.compile(r"(max|avg)pool(\d+)x\2"), lambda m: {"op": m[1] + "pool", "k": int(m[2])}),
    (re.compile(r"dw(\d+)x\1"), lambda m: {"op": "dwconv", "k": int(m[1])}),
    (re.compile(r"sep(\d+)x\1"), lambda m: {"op": "sepconv", "k": int(m[1])}),
    # FBNet block names: k<kernel>_e<expansion>[_g<groups>]; FBNet keeps the 1x1 expansion even at e=1
    (
        re.compile(r"k(\d+)_e(\d+)(?:_g(\d+))?"),
        lambda m: {"op": "mbconv", "k": int(m[1]), "e": int(m[2]), "groups": int(m[3] or 1), "expand": True},
    ),
]


def _check_value(field: str, kind: str, allowed, value):
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise ArchError(f"must be true or false, got {value!r}", field)
    elif kind == _INT:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ArchError(f"must be an integer, got {value!r}", field)
    elif kind == _NUM:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise ArchError(f"must be a number, got {value!r}", field)
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 0.0 and 0 must give the same canonical text
    elif kind == _STR and not isinstance(value, str):
        raise ArchError(f"must be a string, got {value!r}", field)
    if isinstance(allowed, tuple) and len(allowed) == 2 and kind in (_INT, _NUM):
        lo, hi = allowed
        if not lo <= value <= hi:
            raise ArchError(f"must be in [{lo}, {hi}], got {value!r}", field)
    elif isinstance(allowed, tuple) and kind == _STR and value not in allowed:
        raise ArchError(f"must be one of {', '.join(allowed)}; got {value!r}", field)
    return value


def _from_name(name: str, field: str) -> dict:
    key = name.strip().lower()
    if key in _NAMED:
        return dict(_NAMED[key])
    if key in SCHEMAS:
        return {"op": key}
    if key in _OP_ALIASES:
        return {"op": _OP_ALIASES[key]}
    if key in _ACT_OPS:
        return {"op": "act", "fn": key}
    for pat, make in _NAME_PATTERNS:
        m = pat.fullmatch(key)
        if m:
            return make(m)
    raise ArchError(f"unknown op {name!r}", field)


def _normalize(spec, field: str) -> Layer:
    if isinstance(spec, str):
        spec = _from_name(spec, field)
    elif isinstance(spec, dict):
        spec = dict(spec)
    else:
        raise ArchError(f"must be an op name or a dict with 'op', got {type(spec).__name__}", field)
    op = spec.pop("op", None)
    if not isinstance(op, str):
        raise ArchError("missing the 'op' key" if op is None else f"'op' must be a string, got {op!r}", field)
    op = op.strip().lower()
    if op not in SCHEMAS:
        named = _from_name(op, f"{field}.op")  # a name such as 'conv3x3-bn-relu' used as an op
        op = named.pop("op")
        for k, v in named.items():
            spec.setdefault(k, v)
    schema = SCHEMAS[op]
    out: dict = {"op": op}
    for key in spec:
        if key not in schema:
            known = ", ".join(sorted(schema)) or "none"
            raise ArchError(f"unknown attribute {key!r} for op {op} (known: {known})", f"{field}.{key}")
    for key, (kind, default, allowed) in schema.items():
        value = spec.get(key, default)
        if value is _REQ:
            raise ArchError(f"op {op} needs attribute {key!r}", f"{field}.{key}")
        if value is not None:
            value = _check_value(f"{field}.{key}", kind, allowed, value)
        out[key] = value
    # settle the context-free defaults here so that equal layers are equal dicts
    if "bias" in out and out["bias"] is None:
        out["bias"] = not out.get("bn", False)
    if op == "mbconv" and out["expand"] is None:
        out["expand"] = out["e"] != 1
    if out.get("dilation", 1) > 1 and out.get("stride", 1) > 1:
        raise ArchError("dilation > 1 cannot be combined with stride > 1", f"{field}.dilation")
    return Layer(out)


class Layer(dict):
    """A normalized layer: a plain dict (JSON-serialisable) that is hashable by its canonical text.

    Layers are shared between archs and memoised graphs: treat them as read-only.
    """

    __slots__ = ("_key",)

    @property
    def key(self) -> str:
        try:
            return self._key
        except AttributeError:
            self._key = json.dumps(self, sort_keys=True, separators=(",", ":"))
            return self._key

    def __hash__(self) -> int:
        return hash(self.key)


@lru_cache(maxsize=4096)
def _normalize_name(name: str) -> Layer:
    return _normalize(name, "layer")


def normalize_layer(spec, field: str = "layer") -> Layer:
    """Canonical dict for a layer spec; raises ArchError naming ``field`` and the bad attribute."""
    if isinstance(spec, Layer):
        return spec
    if isinstance(spec, str):
        try:
            return _normalize_name(spec)
        except ArchError as e:
            raise ArchError(e.reason, field + (e.field[len("layer") :] if e.field else "")) from None
    return _normalize(spec, field)


def layer_key(layer: dict) -> str:
    """Canonical text of a normalized layer (a label for hashing)."""
    if isinstance(layer, Layer):
        return layer.key
    return json.dumps(layer, sort_keys=True, separators=(",", ":"))


def compact_layer(layer: dict) -> dict | str:
    """The shortest spec that normalizes back to ``layer`` (for readable JSON)."""
    out = dict(layer)
    for key in list(layer):
        if key == "op":
            continue
        trial = {k: v for k, v in out.items() if k != key}
        try:
            same = _normalize(trial, "layer") == layer
        except ArchError:
            same = False
        if same:
            out = trial
    return out["op"] if len(out) == 1 else out

"""What a family's hyper-parameters and a saved predictor's ``meta.json`` may hold.

Hyper-parameters come from ``--params``, from Python and from ``meta.json``. Each is checked against its annotation
in the family's ``__init__`` (``int``, ``float``, ``bool``, ``str``, optionally ``| None``) and the family's
``param_ranges`` (a value out of range gives one
``PredictorError`` line naming it, not a library's crash), and thread counts are capped at this machine's cores:
``n_jobs=100000`` in a LightGBM model once took the process down. ``meta.json`` is validated by ``Meta``.
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from leti.errors import PredictorError, excerpt

THREAD_PARAMS = ("n_jobs", "threads")
INT_RANGE = (-(10**9), 10**9)  # for ints a family gives no range
FLOAT_RANGE = (-1e12, 1e12)
MAX_STR = 200
SEED_RANGE = (0, 2**32 - 1)


def cores() -> int:
    return os.cpu_count() or 1


def n_threads(n) -> int:
    """A thread count capped to [1, cores]: what the libraries are handed, whatever the parameter says."""
    try:
        n = int(n)
    except (TypeError, ValueError, OverflowError):
        return 1
    return max(1, min(n, cores()))


def _check_value(name: str, value, kind: str, lo_hi: tuple | None, optional: bool):
    """``value`` checked against ``kind`` (the parameter's annotation: int, float, bool or str; anything else is
    left to the family) and the range ``lo_hi``; returns it (integral floats from JSON as int)."""
    if value is None and optional:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise PredictorError(f"must be true or false, got {excerpt(repr(value), 60)}", name)
        return value
    if kind == "int":
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            value = int(value)  # 100.0 from JSON
        if isinstance(value, bool) or not isinstance(value, int):
            raise PredictorError(f"must be an integer, got {excerpt(repr(value), 60)}", name)
        lo, hi = lo_hi or INT_RANGE
        if not lo <= value <= hi:
            raise PredictorError(f"must be an integer in [{lo}, {hi}], got {value}", name)
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PredictorError(f"must be a number, got {excerpt(repr(value), 60)}", name)
        lo, hi = lo_hi or FLOAT_RANGE
        if not (math.isfinite(value) and lo <= value <= hi):
            raise PredictorError(
                f"must be a number in [{lo:g}, {hi:g}], got {excerpt(repr(value), 60)}", name
            )
        return float(value)
    if kind == "str":
        if not isinstance(value, str) or len(value) > MAX_STR:
            raise PredictorError(f"must be a string of at most {MAX_STR} characters", name)
        return value
    if isinstance(value, float) and not math.isfinite(value):  # untyped: the family checks it, but never inf
        raise PredictorError(f"must be finite, got {value!r}", name)
    return value


def _kind(annotation) -> tuple[str, bool]:
    """(``int``/``float``/``bool``/``str`` or ``""``, whether None is allowed) from an annotation (a string under
    postponed annotations)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [p.strip() for p in text.split("|")]
    optional = "None" in parts
    rest = [p for p in parts if p != "None"]
    return (rest[0] if len(rest) == 1 and rest[0] in ("int", "float", "bool", "str") else ""), optional


def check_params(cls, params: dict) -> dict:
    """``params`` for family class ``cls``, checked and with thread counts capped at the machine's cores."""
    if not isinstance(params, dict):
        raise PredictorError(
            f"must be a JSON object of hyper-parameters, got {type(params).__name__}", "params"
        )
    sig = inspect.signature(cls.__init__)
    ranges = {"seed": SEED_RANGE, **getattr(cls, "param_ranges", {})}
    out = {}
    for name, value in params.items():
        p = sig.parameters.get(name) if isinstance(name, str) else None
        if p is None or name == "self" or p.kind != inspect.Parameter.POSITIONAL_OR_KEYWORD:
            known = ", ".join(k for k in sig.parameters if k != "self")
            raise PredictorError(f"unknown hyper-parameter for {cls.family} (known: {known})",
                                 excerpt(str(name), 60))  # fmt: skip
        kind, optional = _kind(p.annotation if p.annotation is not inspect.Parameter.empty else "")
        value = _check_value(name, value, kind, ranges.get(name), optional)
        if name in THREAD_PARAMS and value is not None:
            value = n_threads(value)
        out[name] = value
    return out


# ---- meta.json -----------------------------------------------------------------------------------------------------
class Meta(BaseModel):
    """The fields of ``meta.json`` leti relies on; callers may add others (kept, bounded by the JSON reader)."""

    model_config = ConfigDict(extra="allow", strict=True)

    family: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    feature_version: int
    params: dict[str, Any] = {}
    n_train: int = Field(0, ge=0, le=10**9)
    target: str | None = Field(None, max_length=MAX_STR)
    metrics: dict[str, float | None] = {}
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    trained_at: str | None = Field(None, max_length=64)
    versions: dict[str, str] = {}


def check_meta(info, where: str) -> dict:
    """``info`` (parsed ``meta.json``) when it fits ``Meta``; else ``PredictorError`` naming the first bad field."""
    if not isinstance(info, dict):
        raise PredictorError("meta.json is not a JSON object", where)
    try:
        Meta.model_validate(info)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())) or "meta.json"
        raise PredictorError(f"meta.json {loc}: {err.get('msg', 'invalid')}", where) from None
    for k, v in info.get("metrics", {}).items():
        if v is not None and not math.isfinite(v):
            raise PredictorError(f"meta.json metrics.{excerpt(k, 40)}: must be finite", where)
    return info


__all__ = ["THREAD_PARAMS", "Meta", "check_meta", "check_params", "cores", "n_threads"]

"""Target names: ``<device>-<runtime>-<unit>[-<settings>…]``, one predictor per target.

A target is what measurements are grouped by and what a predictor is trained for. Names from imported
data (``sd855-cpu``, ``pixel3-tflite-cpu``) need not follow the full grammar; targets leti runs itself do:

* host (LiteRT on this machine): ``host-litert-cpu-<N>t[-fp16|-int8][-noxnn]``
* Android over ADB: ``<device>-tflite-<cpu|gpu|nnapi>[-<N>t][-fp16|-int8][-noxnn][-big|-little|-m<hexmask>]``
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from leti.errors import TargetError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._]*(-[a-z0-9._]+)*$")
PRECISIONS = ("fp32", "fp16", "int8")
UNITS = ("cpu", "gpu", "nnapi", "dsp", "npu")


@dataclass(frozen=True)
class TargetSpec:
    """What a target name says about how to measure: unit, threads, precision and options."""

    name: str
    device: str
    runtime: str = ""
    unit: str = "cpu"
    threads: int = 1
    precision: str = "fp32"
    xnnpack: bool = True
    affinity: str | None = None  # 'big', 'little' or a hex mask such as '0xf0'
    extra: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise TargetError("must be a non-empty string", "target")
    if not _NAME_RE.match(name):
        raise TargetError(
            f"{name!r} is not a valid target name (lowercase letters, digits, '.', '_', separated by '-')",
            "target",
        )
    return name


def parse_target(name: str) -> TargetSpec:
    """Split a target name into its parts. Unknown setting tokens are kept in ``extra``."""
    validate_name(name)
    parts = name.split("-")
    device = parts[0]
    rest = parts[1:]
    runtime = ""
    if rest and rest[0] not in UNITS:
        runtime, rest = rest[0], rest[1:]
    unit = "cpu"
    if rest and rest[0] in UNITS:
        unit, rest = rest[0], rest[1:]
    threads, precision, xnnpack, affinity, extra = 1, "fp32", True, None, []
    for tok in rest:
        if re.fullmatch(r"\d+t", tok):
            threads = int(tok[:-1])
            if not 1 <= threads <= 64:
                raise TargetError(f"thread count {threads} out of range 1..64", "target")
        elif tok in PRECISIONS:
            precision = tok
        elif tok == "noxnn":
            xnnpack = False
        elif tok in ("big", "little"):
            affinity = tok
        elif re.fullmatch(r"m[0-9a-f]+", tok):
            affinity = "0x" + tok[1:]
        else:
            extra.append(tok)
    return TargetSpec(name, device, runtime, unit, threads, precision, xnnpack, affinity, tuple(extra))


def host_targets() -> list[str]:
    """The targets the local LiteRT runner can measure on this machine."""
    names = []
    for threads in (1, 2):
        for precision in ("", "-fp16", "-int8"):
            names.append(f"host-litert-cpu-{threads}t{precision}")
    return names


def is_host_target(name: str) -> bool:
    spec = parse_target(name)
    return spec.device == "host" and spec.runtime == "litert" and spec.unit == "cpu" and not spec.extra

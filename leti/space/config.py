"""The macro network around a cell: input size, stem, stacks of cells, downsampling, head, classifier.

```
input (H, W, input_channels)
  -> stem layers                          (a conv's channels default to ``channels``)
  -> for stack s in 0..stacks-1:
       [downsample to channels * multiplier**s, when s > 0]
       cells_per_stack x cell             (cell ops default to the stack's channels)
  -> head layers -> global average pool -> dense(classes)     (classes = 0: the network ends after the head)
```
``merge`` says how a cell vertex combines several inputs: ``nb101`` follows NAS-Bench-101 (1x1 projections of the
cell input, channel truncation, concatenation at the output); ``sum`` adds them (shapes must agree).
"""

from __future__ import annotations

from leti.errors import ArchError
from leti.space.layers import _check_value, normalize_layer

DOWNSAMPLE = ("maxpool", "avgpool", "resblock", "conv", "none")
MERGE = ("nb101", "sum")

DEFAULTS: dict = {
    "input_size": [32, 32],
    "input_channels": 3,
    "channels": 128,
    "stem": [{"op": "conv", "k": 3}],
    "stacks": 3,
    "cells_per_stack": 3,
    "channel_multiplier": 2,
    "downsample": "maxpool",
    "merge": "nb101",
    "head": [],
    "classes": 10,
}

_SCALARS = {
    "input_channels": ("int", (1, 64)),
    "channels": ("int", (1, 4096)),
    "stacks": ("int", (1, 8)),
    "cells_per_stack": ("int", (1, 12)),
    "channel_multiplier": ("number", (1, 4)),
    "classes": ("int", (0, 100000)),
}


def _layer_list(value, field: str) -> list[dict]:
    if not isinstance(value, list):
        raise ArchError(f"must be a list of layers, got {type(value).__name__}", field)
    layers = [normalize_layer(v, f"{field}[{i}]") for i, v in enumerate(value)]
    for i, layer in enumerate(layers):
        if layer["op"] in ("input", "output", "add", "concat", "zero"):
            raise ArchError(f"op {layer['op']} is not allowed in a sequential block", f"{field}[{i}].op")
    return layers


def normalize_config(config: dict | None) -> dict:
    """Fill defaults and validate; raises ArchError naming ``config.<key>``."""
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise ArchError(f"must be a dict, got {type(config).__name__}", "config")
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        key = sorted(unknown)[0]
        raise ArchError(f"unknown key (known: {', '.join(DEFAULTS)})", f"config.{key}")
    out = {**DEFAULTS, **config}
    size = out["input_size"]
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        raise ArchError(f"must be an integer or [height, width], got {size!r}", "config.input_size")
    for v in size:
        if not 8 <= v <= 1024:
            raise ArchError(f"must be in [8, 1024], got {v}", "config.input_size")
    out["input_size"] = [int(size[0]), int(size[1])]
    for key, (kind, bounds) in _SCALARS.items():
        out[key] = _check_value(f"config.{key}", kind, bounds, out[key])
    if isinstance(out["channel_multiplier"], float) and out["channel_multiplier"].is_integer():
        out["channel_multiplier"] = int(out["channel_multiplier"])
    if out["downsample"] not in DOWNSAMPLE:
        raise ArchError(
            f"must be one of {', '.join(DOWNSAMPLE)}; got {out['downsample']!r}", "config.downsample"
        )
    if out["merge"] not in MERGE:
        raise ArchError(f"must be one of {', '.join(MERGE)}; got {out['merge']!r}", "config.merge")
    out["stem"] = _layer_list(out["stem"], "config.stem")
    out["head"] = _layer_list(out["head"], "config.head")
    return out


def stack_channels(config: dict, stack: int) -> int:
    return max(1, int(round(config["channels"] * config["channel_multiplier"] ** stack)))

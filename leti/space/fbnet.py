"""FBNet-style chains: 22 searchable inverted-residual blocks in FBNet's macro network.

Native text: the 22 block names joined by commas, e.g. ``k3_e1,k5_e6,skip,…``.
The space protocol (``leti.space.Space``): ``NAME``, ``ALIASES``, ``parse``, ``sample``, ``to_string``.
"""

from __future__ import annotations

import json

import numpy as np

from leti.errors import ArchError
from leti.space.arch import Arch

NAME = "fbnet"
ALIASES: tuple[str, ...] = ()
BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
# FBNet's stages: (output channels, number of searchable layers, stride of the first one)
STAGES = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
N_LAYERS = sum(n for _, n, _ in STAGES)  # 22

CONFIG = {
    "input_size": [224, 224],
    "input_channels": 3,
    "channels": 16,
    "stem": [{"op": "conv", "k": 3, "stride": 2}],
    "stacks": 1,
    "cells_per_stack": 1,
    "channel_multiplier": 1,
    "downsample": "none",
    "merge": "sum",
    "head": [{"op": "conv", "k": 1, "channels": 1984}],
    "classes": 1000,
}


def positions() -> list[tuple[int, int]]:
    """(channels, stride) of each of the 22 searchable layers."""
    out = []
    for c, n, s in STAGES:
        out += [(c, s)] + [(c, 1)] * (n - 1)
    return out


def _block_layer(name: str, channels: int, stride: int, field: str) -> dict:
    if name not in BLOCKS:
        raise ArchError(f"unknown block {name!r} (known: {', '.join(BLOCKS)})", field)
    if name == "skip":
        return {"op": "identity", "channels": channels, "stride": stride}
    parts = name.split("_")
    k, e = int(parts[0][1:]), int(parts[1][1:])
    g = int(parts[2][1:]) if len(parts) > 2 else 1
    return {
        "op": "mbconv",
        "k": k,
        "e": e,
        "groups": g,
        "expand": True,
        "channels": channels,
        "stride": stride,
    }


def from_blocks(blocks, input_size: int | None = None, config: dict | None = None) -> Arch:
    if isinstance(blocks, str):
        blocks = [b.strip() for b in blocks.split(",")]
    if not isinstance(blocks, list | tuple):
        raise ArchError("must be a list of block names or a comma-joined string", "arch")
    if len(blocks) != N_LAYERS:
        raise ArchError(f"needs {N_LAYERS} blocks, got {len(blocks)}", "arch")
    layers = ["input"]
    for i, (name, (c, s)) in enumerate(zip(blocks, positions(), strict=True)):
        layers.append(_block_layer(name, c, s, f"arch[{i}]"))
    layers.append("output")
    n = len(layers)
    adj = [[1 if j == i + 1 else 0 for j in range(n)] for i in range(n)]
    cfg = {**CONFIG, **(config or {})}
    if input_size is not None:
        cfg["input_size"] = input_size
    return Arch(adj, layers, cfg, "fbnet")


def parse(text: str) -> Arch:
    """An Arch of native text: comma-joined block names, a JSON list of them, or that list itself."""
    if not isinstance(text, str | list | tuple):
        raise ArchError(
            f"must be comma-joined block names or a list of them, got {type(text).__name__}", "arch"
        )
    if isinstance(text, str) and text.strip().startswith("["):
        try:
            return from_blocks(json.loads(text))
        except ValueError as e:
            raise ArchError(f"invalid JSON list ({e})", "arch") from None
    return from_blocks(text)


def to_string(arch: Arch) -> str:
    names = []
    for i, L in enumerate(arch.layers[1:-1], start=1):
        if L["op"] == "identity":
            names.append("skip")
        elif L["op"] == "mbconv" and L["e"] in (1, 3, 6) and L["k"] in (3, 5):
            names.append(f"k{L['k']}_e{L['e']}" + (f"_g{L['groups']}" if L["groups"] > 1 else ""))
        else:
            raise ArchError(f"holds {L['op']}, not an FBNet block", f"layers[{i}]")
    if len(names) != N_LAYERS:
        raise ArchError(f"has {len(names)} blocks, not {N_LAYERS}", "layers")
    return ",".join(names)


def random_blocks(rng: np.random.Generator) -> list[str]:
    return [BLOCKS[i] for i in rng.integers(0, len(BLOCKS), size=N_LAYERS)]


def sample(rng: np.random.Generator, input_size=None) -> tuple[Arch, str]:
    """One random block list (uniform per layer) and its native text; ``input_size`` changes the input."""
    blocks = random_blocks(rng)
    return from_blocks(blocks, input_size=input_size), ",".join(blocks)

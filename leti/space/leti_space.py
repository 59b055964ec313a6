"""The wide ``leti`` space: random cells over the full layer vocabulary with a random macro network.

This is LETI's parametrisation: a random DAG cell plus a config (input size 32-224, channels, stacks, cells per
stack, downsampling), so that one predictor sees a broad range of shapes and ops. Its native text is the Arch JSON.
The space protocol (``leti.space.Space``): ``NAME``, ``ALIASES``, ``parse``, ``sample``, ``to_string``.
"""

from __future__ import annotations

import numpy as np

from leti.space.arch import Arch, live_nodes

NAME = "leti"
ALIASES: tuple[str, ...] = ()
INPUT_SIZES = tuple(range(32, 225, 16))
CHANNELS = (8, 16, 24, 32, 48, 64)
DOWNSAMPLE = ("maxpool", "conv", "resblock", "avgpool")


def random_layer(rng: np.random.Generator) -> dict:
    kind = rng.choice(["conv", "conv", "dwconv", "sepconv", "mbconv", "mbconv", "maxpool", "avgpool",
                       "identity", "tucker2", "cp"])  # fmt: skip
    if kind == "conv":
        return {
            "op": "conv",
            "k": int(rng.choice([1, 3, 5, 7])),
            "act": str(rng.choice(["relu", "relu6", "hswish"])),
        }
    if kind == "dwconv":
        return {"op": "dwconv", "k": int(rng.choice([3, 5, 7]))}
    if kind == "sepconv":
        return {"op": "sepconv", "k": int(rng.choice([3, 5]))}
    if kind == "mbconv":
        return {
            "op": "mbconv",
            "k": int(rng.choice([3, 5, 7])),
            "e": int(rng.choice([1, 3, 6])),
            "se": float(rng.choice([0.0, 0.25])),
            "act": str(rng.choice(["relu", "relu6", "hswish"])),
        }
    if kind in ("maxpool", "avgpool"):
        return {"op": kind, "k": 3}
    if kind == "tucker2":
        return {
            "op": "tucker2",
            "k": 3,
            "rin": int(rng.choice([4, 8, 16])),
            "rout": int(rng.choice([4, 8, 16])),
        }
    if kind == "cp":
        return {"op": "cp", "k": 3, "rank": int(rng.choice([4, 8, 16, 32]))}
    return {"op": "identity"}


def random_cell(rng: np.random.Generator, max_nodes: int = 7) -> tuple[list, list]:
    """A random connected cell (matrix, layers) with 3..max_nodes nodes, pruned to its live part."""
    while True:
        n = int(rng.integers(3, max_nodes + 1))
        m = np.triu(rng.random((n, n)) < 0.45, 1).astype(int)
        keep = live_nodes(m.tolist(), [False] * n)
        if len(keep) < 3:
            continue
        m = m[np.ix_(keep, keep)]
        layers = ["input"] + [random_layer(rng) for _ in range(len(keep) - 2)] + ["output"]
        return m.tolist(), layers


def random_config(rng: np.random.Generator) -> dict:
    stacks = int(rng.integers(1, 5))
    return {
        "input_size": int(rng.choice(INPUT_SIZES)),
        "channels": int(rng.choice(CHANNELS)),
        "stem": [{"op": "conv", "k": 3, "stride": int(rng.choice([1, 2]))}],
        "stacks": stacks,
        "cells_per_stack": int(rng.integers(1, 4)),
        "channel_multiplier": 2,
        "downsample": str(rng.choice(DOWNSAMPLE)),
        "merge": "nb101",
        "classes": int(rng.choice([10, 100, 1000])),
    }


def random_arch(rng: np.random.Generator) -> Arch:
    m, layers = random_cell(rng)
    return Arch(m, layers, random_config(rng), NAME)


def parse(text) -> Arch:
    """An Arch of native text: Arch JSON, as a string or already decoded."""
    return Arch.from_dict(text) if isinstance(text, dict) else Arch.from_json(text)


def to_string(arch: Arch) -> str:
    return arch.to_json()


def sample(rng: np.random.Generator, input_size=None) -> tuple[Arch, str]:
    """One random cell and macro network, and its Arch JSON; ``input_size`` overrides the sampled one."""
    arch = random_arch(rng)
    if input_size:
        arch = arch.with_config(input_size=input_size)
    return arch, arch.to_json()

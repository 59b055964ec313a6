"""A small synthetic mobile-ml-benchmark directory, in the real files' format, for tests.

``write_mlbench(dir)`` writes ``tflite_cnn_ops_gpu.csv`` and ``tflite_cnn_e2e.csv`` for a handful of made-up models
in a few families (widths and depths of each), on two devices. Latencies follow a simple cost model (time per MAC
and per kernel, plus a fixed overhead, with a little seeded noise), so predictors have something to learn. No real
measurement is copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DEVICES = ("pixel4", "iphone7")
SETTINGS = ("1large", "gpu")


class _Model:
    """Rows of one model with GPU-delegate-style kernel names (node ids count every op, listed or not)."""

    def __init__(self, name: str):
        self.name = name
        self.rows: list[tuple[str, dict, str]] = []
        self.next_id = 0

    def add(self, operation: str, feature: dict, base: str, links=(), skip: int = 0) -> None:
        self.next_id += skip  # ops the per-op file leaves out (pads, squeeze-excite muls)
        name = f"{base}_{self.next_id}"
        self.next_id += 1
        for link in links:
            name += f"_linked_:_{link}_{self.next_id}"
            self.next_id += 1
        self.rows.append((operation, feature, name))


def _conv(m: _Model, h: int, cin: int, cout: int, k: int = 1, s: int = 1, links=("relu",), pad: bool = False,
          group: int = 1) -> int:  # fmt: skip
    hin = h + 2 * (k // 2) if pad else h
    hout = (hin - k) // s + 1 if pad else -(-h // s)
    op = "CONV_2D_GROUP" if group > 1 else "CONV_2D"
    flops = 2 * hout * hout * cout * k * k * (cin // group)
    feat = {"Input_shape": str(hin), "Input_channel": cin, "Output_shape": str(hout), "Stride": str(s),
            "Kernel": str(k), "Filter": str(cout), "Group": str(group), "FLOPS": str(flops)}  # fmt: skip
    m.add(op, feat, "convolution_2d_grouped" if group > 1 else "convolution_2d", links, skip=int(pad))
    return hout


def _dw(m: _Model, h: int, c: int, k: int = 3, s: int = 1) -> int:
    hin = h + 2 * (k // 2)
    hout = (hin - k) // s + 1
    feat = {"Input_shape": str(hin), "Input_channel": c, "Output_shape": str(hout), "Stride": str(s),
            "Kernel": str(k), "Filter": "1", "Group": "1", "FLOPS": str(2 * hout * hout * c * k * k)}  # fmt: skip
    m.add("DEPTHWISE_CONV_2D", feat, "depthwise_convolution", ("relu",), skip=1)
    return hout


def _head(m: _Model, h: int, c: int, classes: int = 10) -> None:
    m.add("MEAN", {"Input_shape": str(h), "Input_channel": c, "Output_shape": str(c), "Stride": "-", "Kernel": "0",
                   "Filter": "-", "Group": "-", "FLOPS": str(h * h * c)}, "mean")  # fmt: skip
    m.add("FULLY_CONNECTED", {"Input_shape": "-", "Input_channel": c, "Output_shape": "-", "Stride": "-",
                              "Kernel": "-", "Filter": str(classes), "Group": "-",
                              "FLOPS": str(2 * c * classes)}, "fully_connected")  # fmt: skip


def _plainnet(name: str, width: float, depth: int) -> _Model:
    m = _Model(name)
    c = max(8, int(16 * width))
    h = _conv(m, 32, 3, c, 3, 2, pad=True)
    for i in range(depth):
        h = _conv(m, h, c, c, 3, 1, pad=True, links=("add", "relu") if i % 2 else ("relu",))
    _head(m, h, c)
    return m


def _mobinet(name: str, width: float, se: bool) -> _Model:
    m = _Model(name)
    c = max(8, int(16 * width))
    h = _conv(m, 32, 3, c, 3, 2, pad=True)
    for s in (1, 2, 1):
        h = _dw(m, h, c, 3, s)
        if se:
            m.add("MEAN", {"Input_shape": str(h), "Input_channel": c, "Output_shape": str(c), "Stride": "-",
                           "Kernel": "1", "Filter": "-", "Group": "-", "FLOPS": str(h * h * c)}, "mean")  # fmt: skip
            _conv(m, 1, c, c // 4 or 1, 1, 1, links=("relu",))
            _conv(m, 1, c // 4 or 1, c, 1, 1, links=("sigmoid",))
            m.next_id += 1  # the squeeze-excite MUL, left out of the per-op file
        _conv(m, h, c, 2 * c, 1, 1, links=("relu",))
        c *= 2
    _head(m, h, c)
    return m


def _catnet(name: str, width: float) -> _Model:
    m = _Model(name)
    c = max(8, int(12 * width))
    h = _conv(m, 32, 3, c, 3, 2, pad=True)
    _conv(m, h, c, c, 1, 1)
    _conv(m, h, c, c, 3, 1, pad=True)
    m.add("CONCATENATION", {"Input_shape": str(h), "Input_channel": c, "Output_shape": str(h), "Stride": "-",
                            "Kernel": "2", "Filter": str(2 * c), "Group": "-", "FLOPS": "-"}, "concat")  # fmt: skip
    m.add("MAX_POOL_2D", {"Input_shape": str(h), "Input_channel": 2 * c, "Output_shape": str(h // 2), "Stride": "2",
                          "Kernel": "2", "Filter": "-", "Group": "-", "FLOPS": str(h * h * 2 * c)}, "pooling_2d")  # fmt: skip
    _conv(m, h // 2, 2 * c, 4 * c, 3, 1, pad=True, group=2)
    _head(m, h // 2, 4 * c)
    return m


def models() -> list[_Model]:
    """24 models in 5 families (``leti.datasets.split.model_family``): plainnet, mobinet, semobinet, catnet and
    widenet, each in several widths or depths."""
    out = [_plainnet(f"plainnet{10 + 2 * d}{sfx}", w, 4 + 2 * d) for d in range(3)
           for w, sfx in ((1.0, ""), (0.5, "_wd2"), (0.75, "_w3d4"))]  # fmt: skip
    widths = ((1.0, "w1"), (0.5, "wd2"), (0.75, "w3d4"), (1.5, "w3d2"))
    out += [_mobinet(f"mobinet_{sfx}", w, False) for w, sfx in widths]
    out += [_mobinet(f"semobinet_{sfx}", w, True) for w, sfx in widths]
    out += [_catnet(f"catnet_v1_{i}", w) for i, w in enumerate((1.0, 1.5, 2.0, 0.75))]
    out += [_plainnet(f"widenet{4 + 2 * d}", 2.0, 2 + 2 * d) for d in range(3)]
    return out


def _latency_us(m: _Model, device: int, gpu: bool, rng) -> tuple[float, float, list[float]]:
    per_mac = (0.8e-3, 1.3e-3)[device] * (0.2 if gpu else 1.0)
    per_op = (2.0, 3.0)[device] * (3.0 if gpu else 1.0)
    ops = []
    for op, f, _ in m.rows:
        macs = float(f["FLOPS"]) / 2 if f["FLOPS"] != "-" else 0.0
        ops.append(per_mac * macs + per_op * (2 if op == "CONCATENATION" else 1))
    total = 50.0 + sum(ops) * float(rng.uniform(0.97, 1.03))
    return total, 0.01 * total, [o * 0.9 for o in ops]


def write_mlbench(directory, seed: int = 0) -> Path:
    """Write the two files under ``directory`` (created) and return it."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ms = models()
    ops_head = ["model", "operation", "feature"] + [
        f"{dv}|gpu|{x}" for dv in DEVICES for x in ("float", "kernel")
    ]
    e2e_head = ["model", "FLOPS", "size"] + [f"{dv}|{st}|{p}|{v}" for p in ("float", "quant") for dv in DEVICES
                                             for st in SETTINGS if not (p == "quant" and st == "gpu")
                                             for v in ("mean", "std")]  # fmt: skip
    ops_lines, e2e_lines = [",".join(ops_head)], [",".join(e2e_head)]
    for m in ms:
        per_dev = {dv: _latency_us(m, i, True, rng) for i, dv in enumerate(DEVICES)}
        for j, (op, f, kname) in enumerate(m.rows):
            cells = [m.name, op, '"' + str(f) + '"']
            for dv in DEVICES:
                cells += [f"{per_dev[dv][2][j]:.4f}", kname]
            ops_lines.append(",".join(cells))
        flops = sum(int(f["FLOPS"]) for _, f, _ in m.rows if f["FLOPS"] != "-")
        cells = [m.name, str(flops), "1000"]
        for p in ("float", "quant"):
            for i in range(len(DEVICES)):
                for st in SETTINGS:
                    if p == "quant" and st == "gpu":
                        continue
                    mean, std, _ = _latency_us(m, i, st == "gpu", rng)
                    mean *= 0.6 if p == "quant" else 1.0
                    cells += [f"{mean:.1f}", f"{std:.1f}"]
        e2e_lines.append(",".join(cells))
    (d / "tflite_cnn_ops_gpu.csv").write_text("\n".join(ops_lines) + "\n")
    (d / "tflite_cnn_e2e.csv").write_text("\n".join(e2e_lines) + "\n")
    return d


__all__ = ["DEVICES", "models", "write_mlbench"]

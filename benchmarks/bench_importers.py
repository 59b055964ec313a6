"""Which keras.applications models the importers read, and whether their counts agree with Keras and TensorFlow.

For each model (``weights=None``): the Keras file (``.keras``) and a plain ``.tflite`` export
(``TFLiteConverter.from_keras_model``, batch size left open, as a user writes it) are read with ``read_model``. It
prints node counts of both graphs, params against ``count_params()``, and MACs against TensorFlow's profiler
(``tf.compat.v1.profiler``, float operations of the frozen graph): the profiler counts a multiply-add as 2 FLOPs, so
its conv / depthwise / matmul FLOPs halved must equal the IR's conv / dwconv / dense MACs. Also the read times.

    .venv/bin/python benchmarks/bench_importers.py [--size 224] [--models MobileNet,ResNet50,...]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from leti.importers.models import read_model  # noqa: E402
from leti.tflite.convert import silenced  # noqa: E402

MODELS = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "ResNet50",
          "DenseNet121", "NASNetMobile")  # fmt: skip
WEIGHTED_TF_OPS = ("Conv2D", "DepthwiseConv2dNative", "MatMul")


def profiler_flops(tf, model, size: int) -> tuple[int, int]:
    """(all float ops, float ops of convs / depthwise convs / matmuls) of the frozen inference graph."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(tf.TensorSpec((1, size, size, 3))))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    prof = tf.compat.v1.profiler.profile(graph=frozen.graph, cmd="op", options=opts)
    per_op: dict[str, int] = {}
    stack = list(prof.children)  # "op" view: a chain of nodes, each holding its own ops' float_ops
    while stack:
        node = stack.pop()
        per_op[node.name] = per_op.get(node.name, 0) + int(node.float_ops)
        stack.extend(node.children)
    return int(prof.total_float_ops), sum(per_op.get(op, 0) for op in WEIGHTED_TF_OPS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    with silenced():
        import tensorflow as tf
    header = (f"{'model':<17} {'nodes k/t':>9} {'params IR':>10} {'count_params':>12} {'MACs IR (keras)':>15} "
              f"{'MACs IR (tflite)':>16} {'conv+dense MACs':>15} {'TF prof/2':>13} {'TF prof all':>13} "
              f"{'read k/t s':>10}")  # fmt: skip
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            with silenced():
                model = getattr(tf.keras.applications, name)(
                    input_shape=(args.size, args.size, 3), weights=None
                )
                model.save(Path(tmp) / f"{name}.keras")
                data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
                (Path(tmp) / f"{name}.tflite").write_bytes(data)
                flops, wflops = profiler_flops(tf, model, args.size)
            t0 = time.perf_counter()
            kg = read_model(Path(tmp) / f"{name}.keras")
            t1 = time.perf_counter()
            tg = read_model(Path(tmp) / f"{name}.tflite")
            t2 = time.perf_counter()
            weighted = sum(
                int(kg.macs[i]) for i in range(kg.n_nodes) if kg.op_name(i) in ("conv", "dwconv", "dense")
            )
            print(f"{name:<17} {kg.n_nodes:>4}/{tg.n_nodes:<4} {kg.total_params:>10,} {model.count_params():>12,} "
                  f"{kg.total_macs:>15,} {tg.total_macs:>16,} {weighted:>15,} {wflops // 2:>13,} {flops:>13,} "
                  f"{t1 - t0:>4.1f}/{t2 - t1:<4.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

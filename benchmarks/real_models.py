"""The Keras-application models of the real-model benchmark, converted once and cached outside the repository.

Each model is ``tf.keras.applications.<App>(input_shape=(S, S, 3), alpha=..., weights=None)``, converted as a user
would (``TFLiteConverter.from_keras_model``, batch size left open, default options). Conversion of the large ones
takes a minute or more, so every ``.tflite`` is kept in the cache folder (default ``$LETI_REAL_MODELS_CACHE`` or
``$TMPDIR/leti-real-models``), named after the model; a file there is never rebuilt. Used by
``bench_real_models.py``; on its own it fills the cache:

    .venv/bin/python benchmarks/real_models.py [--cache DIR] [--only mobilenetv2,resnet]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CACHE = Path(os.environ.get("LETI_REAL_MODELS_CACHE", Path(tempfile.gettempdir()) / "leti-real-models"))


@dataclass(frozen=True)
class RealModel:
    """One Keras application at one width and input size; ``family`` is what leave-one-family-out holds out."""

    family: str
    app: str
    size: int
    alpha: float | None = None

    @property
    def name(self) -> str:
        a = "" if self.alpha is None else f"_a{self.alpha:g}"
        return f"{self.app}{a}_{self.size}"

    def path(self, cache: Path) -> Path:
        return cache / "tflite" / f"{self.name}.tflite"

    def keras_model(self):
        import tensorflow as tf

        kw = {"input_shape": (self.size, self.size, 3), "weights": None}
        if self.alpha is not None:
            kw["alpha"] = self.alpha
        return getattr(tf.keras.applications, self.app)(**kw)


def catalogue() -> list[RealModel]:
    """36 models, 7 families, 2 input sizes each (EfficientNets: their own size and a smaller one)."""
    out = [RealModel("mobilenet", "MobileNet", s, a) for a in (0.25, 0.5, 0.75, 1.0) for s in (128, 224)]
    out += [RealModel("mobilenetv2", "MobileNetV2", s, a) for a in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
            for s in (128, 224)]  # fmt: skip
    # the rest in the order the cache is filled (a conversion takes 1-5 min on the shared host)
    out += [RealModel("mobilenetv3", app, s, 1.0) for app in ("MobileNetV3Small", "MobileNetV3Large")
            for s in (160, 224)]  # fmt: skip
    out += [RealModel("resnet", "ResNet50", s) for s in (160, 224)]
    out += [RealModel("efficientnet", "EfficientNetB0", s) for s in (160, 224)]
    out += [RealModel("densenet", "DenseNet121", s) for s in (160, 224)]
    out += [RealModel("nasnet", "NASNetMobile", s) for s in (160, 224)]
    out += [RealModel("efficientnet", f"EfficientNetB{b}", s) for b, sizes in ((1, (192, 240)), (2, (208, 260)))
            for s in sizes]  # fmt: skip
    return out


def convert(m: RealModel, cache: Path = DEFAULT_CACHE) -> Path:
    """The cached .tflite of ``m``, converting it first when it is not there (written atomically)."""
    p = m.path(cache)
    if p.is_file():
        return p
    from leti.tflite.convert import silenced

    with silenced():
        import tensorflow as tf

        tf.keras.backend.clear_session()
        data = tf.lite.TFLiteConverter.from_keras_model(m.keras_model()).convert()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(p)
    return p


def convert_all(models: list[RealModel], cache: Path = DEFAULT_CACHE, log=print) -> list[Path]:
    out = []
    for i, m in enumerate(models):
        t0 = time.perf_counter()
        had = m.path(cache).is_file()
        out.append(convert(m, cache))
        if not had:
            log(f"  converted {m.name} ({i + 1}/{len(models)}) in {time.perf_counter() - t0:.0f} s")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--only", help="comma-separated families")
    a = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    models = catalogue()
    if a.only:
        models = [m for m in models if m.family in a.only.split(",")]
    convert_all(models, a.cache, log=lambda s: print(s, flush=True))
    print(f"{len(models)} models in {a.cache / 'tflite'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

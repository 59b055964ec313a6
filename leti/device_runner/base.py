"""The Runner protocol: what every runner (LiteRT on this machine, ``benchmark_model`` over ADB) offers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from leti.measurement import Measurement, Settings


@runtime_checkable
class Runner(Protocol):
    """Something that can measure a .tflite model on one or more targets."""

    def targets(self) -> list[str]: ...

    def measure(self, model_bytes: bytes, settings: Settings) -> Measurement: ...

"""The Runner protocol: what every runner (LiteRT on this machine, ``benchmark_model`` over ADB) offers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from leti.measurement import Measurement, Settings


@runtime_checkable
class Runner(Protocol):
    """Something that can measure a .tflite model on one or more targets.

    A runner may hold a connection (ADB) or a process-wide resource; ``close()`` releases it and is safe to call
    twice. Runners are context managers: ``with make_runner(binding) as runner: …`` closes on the way out.
    """

    def targets(self) -> list[str]: ...

    def measure(self, model_bytes: bytes, settings: Settings) -> Measurement: ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc) -> None: ...

"""The one round-robin measuring loop behind ``leti lut build`` and the host layer LUT, on this machine."""

from __future__ import annotations

import pytest

from leti.device_runner.local import LocalRunner, settings_for_target
from leti.errors import LetiError
from leti.graph.builder import GraphBuilder
from leti.tflite.flatbuffer import graph_to_tflite
from leti.workflows.lut_build import round_robin

TARGET = "host-litert-cpu-1t"


def _model(channels: int) -> bytes:
    b = GraphBuilder()
    b.conv(b.input((16, 16, 3)), channels, 3)
    return graph_to_tflite(b.finish(), seed=0)


def test_round_robin_measures_every_model_each_pass_and_builds_once():
    settings, _ = settings_for_target(TARGET, warmup=1, runs=3)
    built, calls = [], []

    def lazy():
        built.append(1)
        return _model(8)

    with LocalRunner() as runner:
        ms = round_robin(
            runner, settings, [_model(4), lazy], 3, "min", lambda done, total: calls.append(done)
        )
    assert len(ms) == 2 and all(m > 0 for m in ms)
    assert calls == list(range(1, 7)) and len(built) == 1  # a small model is kept for the later passes
    with pytest.raises(LetiError, match="rounds"):
        round_robin(LocalRunner(), settings, [_model(4)], 0)
    with pytest.raises(LetiError, match="stat"):
        round_robin(LocalRunner(), settings, [_model(4)], 1, "p99")

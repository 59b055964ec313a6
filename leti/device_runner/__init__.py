"""Runners that measure .tflite models: ``local`` (LiteRT on this machine) and ``adb`` (Android)."""

from leti.device_runner.base import Runner

__all__ = ["Runner"]

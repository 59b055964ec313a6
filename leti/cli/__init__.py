"""The ``leti`` command: one module per group of verbs; ``main`` parses and dispatches."""

from leti.cli.main import main

__all__ = ["main"]

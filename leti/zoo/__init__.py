"""Pretrained predictors shipped with leti, one per target of the public measurement data it documents.

``ZOO_DIR`` holds them in the registry's layout (``<target>/<family>/v<N>/``, each sealed, with a ``meta.json``
naming the data source, its licence and commit, the protocol and the test metrics) plus ``zoo.json``, the index
written by ``leti zoo build`` (``leti.zoo.build``). Only derived model files ship, never measurements. A predictor
the user trains for the same target takes precedence (``leti.predictors.registry``).
"""

from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
INDEX_FILE = "zoo.json"
# The build protocol (``leti.zoo.build``); here so that the command line shows the defaults without importing it.
TRAIN_SIZE = (
    1500  # archs to train on (split by canonical hash); a target keeps at least a quarter for testing
)
SEED = 0
FOLDS = 5

__all__ = ["FOLDS", "INDEX_FILE", "SEED", "TRAIN_SIZE", "ZOO_DIR"]

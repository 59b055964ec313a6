"""Params from the LayerGraph equal Keras' count_params() of the equivalent tf.keras model, for 200 archs per space.

Archs 0..29 of each space's sample (seed 2024) are built, converted and counted in tests/test_build.py, which needs
their Keras models anyway; this file counts archs 30..199.
"""

from __future__ import annotations

import numpy as np
import pytest

from leti.space import sample

N_PER_SPACE = 200
SEED = 2024
DONE_IN_TEST_BUILD = 30
CHUNKS = 6  # split so that pytest-xdist can spread the Keras builds over the cores


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("space", ["nasbench101", "nasbench201", "fbnet", "leti"])
def test_params_equal_keras_count_params(space, chunk):
    import keras

    from leti.build.keras_model import build_keras

    archs = sample(space, N_PER_SPACE, seed=SEED)[DONE_IN_TEST_BUILD:]
    for arch, text in np.array_split(np.array(archs, dtype=object), CHUNKS)[chunk]:
        g = arch.to_graph()
        model = build_keras(g)
        assert model.count_params() == g.total_params, f"{space}: {text[:120]}"
        assert tuple(model.output.shape[1:]) == (g.output_shape[2],)
    keras.backend.clear_session()  # once per chunk: it runs a full gc.collect, too slow to call per model

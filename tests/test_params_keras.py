"""Params from the LayerGraph equal Keras' count_params() of the equivalent tf.keras model (200 archs per space)."""

from __future__ import annotations

import pytest

from leti.space import sample

N_PER_SPACE = 200
CHUNKS = 8  # split so that pytest-xdist can spread the Keras builds over the cores


@pytest.fixture(scope="module")
def build_keras():
    from leti.build.keras_model import build_keras

    return build_keras


@pytest.mark.parametrize("chunk", range(CHUNKS))
@pytest.mark.parametrize("space", ["nb101", "nb201", "fbnet", "leti"])
def test_params_equal_keras_count_params(space, chunk, build_keras):
    import keras

    archs = sample(space, N_PER_SPACE, seed=2024)
    size = N_PER_SPACE // CHUNKS
    for arch, text in archs[chunk * size : (chunk + 1) * size]:
        g = arch.to_graph()
        model = build_keras(g)
        assert model.count_params() == g.total_params, f"{space}: {text[:120]}"
        assert tuple(model.output.shape[1:]) == (g.output_shape[2],)
        keras.backend.clear_session()  # keep memory and variable-creation time flat over hundreds of models

"""Tucker-2 / CP / SVD factorisations: exactness, error monotonicity, MUSCO recompression, Keras layouts."""

from __future__ import annotations

import numpy as np
import pytest

from leti.compression.decompose import (
    ConvGeometry,
    FactorLayer,
    cp_decompose,
    decomposition_methods,
    rel_error,
    svd_decompose,
    tucker2_decompose,
    tucker2_recompress,
)
from leti.errors import LetiError


def decaying_kernel(seed: int, shape=(3, 3, 16, 16), decay: float = 4.0) -> np.ndarray:
    """A 'trained-like' kernel: channel spectra decay exponentially, directions random."""
    rng = np.random.default_rng(seed)
    _, _, c_in, c_out = shape
    core = rng.standard_normal(shape)
    core *= np.exp(-np.arange(c_in) / decay)[:, None] * np.exp(-np.arange(c_out) / decay)
    q_in, _ = np.linalg.qr(rng.standard_normal((c_in, c_in)))
    q_out, _ = np.linalg.qr(rng.standard_normal((c_out, c_out)))
    return np.einsum("ijrs,cr,os->ijco", core, q_in, q_out)


def cp_kernel(seed: int, shape, rank: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.einsum("ir,jr,cr,or->ijco", *(rng.standard_normal((n, rank)) for n in shape))


# ---------------------------------------------------------------- Tucker-2


def test_tucker2_full_rank_is_exact_and_factors_are_keras_shaped():
    k = np.random.default_rng(0).standard_normal((3, 3, 6, 10))
    b = np.arange(10.0)
    t = tucker2_decompose(k, 6, 10, bias=b)
    assert t.first.shape == (1, 1, 6, 6) and t.core.shape == (3, 3, 6, 10) and t.last.shape == (1, 1, 10, 10)
    assert t.ranks == (6, 10) and t.bias is not None and np.array_equal(t.bias, b)
    assert t.rel_error(k) < 1e-12
    np.testing.assert_allclose(t.u_in.T @ t.u_in, np.eye(6), atol=1e-12)


def test_tucker2_error_is_nonincreasing_and_matches_discarded_spectrum():
    k = np.random.default_rng(1).standard_normal((3, 3, 12, 10))
    errs = np.array([[tucker2_decompose(k, a, b).rel_error(k) for b in range(1, 11)] for a in range(1, 13)])
    assert np.all(np.diff(errs, axis=0) <= 1e-12) and np.all(np.diff(errs, axis=1) <= 1e-12)
    assert errs[-1, -1] < 1e-12 and errs[0, 0] > 0.5
    # full input rank: the error is exactly the discarded output-mode singular values
    s = np.linalg.svd(np.moveaxis(k, 3, 0).reshape(10, -1), compute_uv=False)
    for r in (2, 5, 9):
        expected = np.sqrt(np.sum(s[r:] ** 2)) / np.linalg.norm(k)
        assert errs[-1, r - 1] == pytest.approx(expected, rel=1e-10)


def test_tucker2_recompress_matches_fresh_decomposition():
    # Stated tolerance: the core-only path lands within 0.01 (absolute, in relative-error units) and 2% of a
    # fresh HOSVD at the same ranks; on decaying-spectrum kernels within 1e-3.
    for seed in range(3):
        for decay, tol in ((4.0, 1e-3), (1e3, 1e-2)):
            k = decaying_kernel(seed, (3, 3, 32, 24), decay)
            t = tucker2_decompose(k, 24, 20)
            for r_in, r_out in ((16, 12), (8, 8), (4, 3)):
                again = tucker2_recompress(t, r_in, r_out)
                fresh = tucker2_decompose(k, r_in, r_out)
                assert again.ranks == (r_in, r_out)
                assert again.first.shape == (1, 1, 32, r_in) and again.last.shape == (1, 1, r_out, 24)
                e_again, e_fresh = again.rel_error(k), fresh.rel_error(k)
                assert abs(e_again - e_fresh) <= tol
                assert abs(e_again - e_fresh) <= 0.02 * e_fresh
    # recompressing at the current ranks changes nothing
    t = tucker2_decompose(decaying_kernel(9), 10, 8, bias=np.ones(16))
    same = tucker2_recompress(t, 10, 8)
    np.testing.assert_allclose(same.reconstruct(), t.reconstruct(), atol=1e-12)
    assert same.bias is t.bias and same.geometry == t.geometry


def test_tucker2_keeps_float32():
    k = np.random.default_rng(2).standard_normal((3, 3, 4, 5)).astype(np.float32)
    t = tucker2_decompose(k, 4, 5, bias=np.zeros(5))
    assert {t.first.dtype, t.core.dtype, t.last.dtype, t.bias.dtype} == {np.dtype(np.float32)}
    assert t.rel_error(k) < 1e-6


# ---------------------------------------------------------------- CP


def test_cp_recovers_a_true_low_cp_rank_tensor():
    for seed, shape, rank in ((0, (3, 3, 8, 6), 4), (1, (3, 3, 10, 12), 6), (2, (5, 5, 6, 6), 3)):
        k = cp_kernel(seed, shape, rank)
        cp = cp_decompose(k, rank, seed=0)
        assert cp.rel_error(k) < 1e-5
        assert cp.rank == rank
        assert cp.first.shape == (1, 1, shape[2], rank)
        assert cp.vertical.shape == (shape[0], 1, rank, 1) and cp.horizontal.shape == (1, shape[1], rank, 1)
        assert cp.last.shape == (1, 1, rank, shape[3])
        # the CP weights live in the last factor only
        for f in (cp.first[0, 0], cp.vertical[:, 0, :, 0], cp.horizontal[0, :, :, 0]):
            np.testing.assert_allclose(np.linalg.norm(f, axis=0), 1.0, atol=1e-12)


def test_cp_is_deterministic_and_error_falls_with_rank():
    k = decaying_kernel(3, (3, 3, 8, 8), decay=3.0)
    errs = [cp_decompose(k, r, seed=0, n_iter_max=300).rel_error(k) for r in (1, 2, 4, 8, 16)]
    # ALS is not optimal, so allow a small tolerance; the trend must still be clearly downward
    assert all(b <= a + 1e-3 for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 0.5 * errs[0]
    again = cp_decompose(k, 4, seed=0, n_iter_max=300)
    np.testing.assert_array_equal(
        again.reconstruct(), cp_decompose(k, 4, seed=0, n_iter_max=300).reconstruct()
    )


# ---------------------------------------------------------------- SVD


def test_svd_full_rank_exact_and_error_is_eckart_young():
    w = np.random.default_rng(4).standard_normal((20, 12))
    s = np.linalg.svd(w, compute_uv=False)
    errs = [svd_decompose(w, r).rel_error(w) for r in range(1, 13)]
    assert errs[-1] < 1e-12
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False))
    for r in (1, 5, 11):
        assert errs[r - 1] == pytest.approx(np.sqrt(np.sum(s[r:] ** 2)) / np.linalg.norm(w), rel=1e-10)
    f = svd_decompose(w, 5, bias=np.ones(12))
    assert f.first.shape == (20, 5) and f.second.shape == (5, 12) and f.rank == 5 and f.n_params == 160
    # balanced split: both factors carry sqrt of the singular values
    np.testing.assert_allclose(np.linalg.norm(f.first, axis=0), np.linalg.norm(f.second, axis=1), rtol=1e-10)


# ---------------------------------------------------------------- validation


def test_bad_inputs_name_the_field():
    k = np.ones((3, 3, 4, 5))
    cases = [
        (lambda: tucker2_decompose(k, 5, 2), "r_in"),
        (lambda: tucker2_decompose(k, 2, 0), "r_out"),
        (lambda: tucker2_decompose(k[0], 2, 2), "kernel"),
        (lambda: tucker2_decompose(k, 2, 2, bias=np.ones(4)), "bias"),
        (lambda: tucker2_decompose(k, 2, 2, geometry=ConvGeometry(groups=2)), "groups"),
        (lambda: tucker2_recompress(tucker2_decompose(k, 2, 2), 3, 2), "r_in"),
        (lambda: cp_decompose(k, 0), "rank"),
        (lambda: cp_decompose(k, 2, seed=-1), "seed"),
        (lambda: cp_decompose(k, 2, geometry=ConvGeometry(groups=4)), "groups"),
        (lambda: svd_decompose(np.ones((4, 3)), 4), "rank"),
        (lambda: svd_decompose(k, 2), "kernel"),
        (lambda: ConvGeometry(padding="causal"), "padding"),
        (lambda: ConvGeometry(strides=(0, 1)), "strides"),
        (lambda: rel_error(np.zeros(3), np.ones(3)), "kernel"),
        (lambda: rel_error(np.ones(3), np.ones(4)), "approx"),
        (lambda: decomposition_methods("DepthwiseConv2D"), "layer_type"),
        (lambda: decomposition_methods("depthwise_conv2d"), "layer_type"),
        (lambda: decomposition_methods("Conv2D", groups=8), "groups"),
        (lambda: decomposition_methods("LSTM"), "layer_type"),
    ]
    for call, name in cases:
        with pytest.raises(LetiError, match=f"^{name}:") as info:
            call()
        assert info.value.field == name
    assert decomposition_methods("Conv2D") == ("tucker2", "cp")
    assert decomposition_methods("dense") == ("svd",)
    with pytest.raises(LetiError, match="not decomposable"):
        decomposition_methods("DepthwiseConv2D")


# ---------------------------------------------------------------- Keras layouts


@pytest.fixture(scope="session")
def keras():
    tf = pytest.importorskip("tensorflow")
    tf.random.set_seed(0)
    return tf.keras


def run_layers(keras, layers: list[FactorLayer], x: np.ndarray) -> np.ndarray:
    y = x
    for spec in layers:
        layer = getattr(keras.layers, spec.keras_class)(**spec.keras_config())
        layer.build(y.shape)
        layer.set_weights(spec.weights())
        y = np.asarray(layer(y))
    return y


def run_original(keras, kernel, bias, geometry: ConvGeometry, x):
    layer = keras.layers.Conv2D(
        kernel.shape[3],
        kernel.shape[:2],
        strides=geometry.strides,
        padding=geometry.padding,
        dilation_rate=geometry.dilation_rate,
    )
    layer.build(x.shape)
    layer.set_weights([kernel, bias])
    return np.asarray(layer(x))


GEOMETRIES = [
    ((3, 3), ConvGeometry()),
    ((3, 3), ConvGeometry(strides=2, padding="same")),
    ((3, 5), ConvGeometry(strides=(2, 1), padding="valid")),
    ((3, 3), ConvGeometry(padding="same", dilation_rate=2)),
    ((1, 1), ConvGeometry()),
]
C_IN, C_OUT, CP_RANK = 4, 6, 3


def conv_case(ksize, seed=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 9, 8, C_IN)).astype(np.float32)
    bias = rng.standard_normal(C_OUT).astype(np.float32)
    kernel = rng.standard_normal((*ksize, C_IN, C_OUT)).astype(np.float32)
    cp_true = cp_kernel(seed + 1, (*ksize, C_IN, C_OUT), CP_RANK).astype(np.float32)
    return x, bias, kernel, cp_true


@pytest.mark.parametrize(("ksize", "geometry"), GEOMETRIES)
def test_keras_tucker2_replacement_matches_original_conv(keras, ksize, geometry):
    x, bias, kernel, _ = conv_case(ksize)
    t2 = tucker2_decompose(kernel, C_IN, C_OUT, bias=bias, geometry=geometry)
    assert [spec.keras_class for spec in t2.layers()] == ["Conv2D"] * 3
    ref = run_original(keras, kernel, bias, geometry, x)
    np.testing.assert_allclose(run_layers(keras, t2.layers(), x), ref, atol=1e-4)


@pytest.mark.parametrize(
    ("ksize", "geometry", "stride_on"),
    [(k, g, "split") for k, g in GEOMETRIES if g.strides == (1, 1)]
    + [((3, 3), ConvGeometry(strides=2, padding="valid"), "last")],
)
def test_keras_cp_replacement_matches_original_conv(keras, ksize, geometry, stride_on):
    # TF's DepthwiseConv2D kernel runs equal strides only; split strides are checked through LiteRT below.
    x, bias, _, cp_true = conv_case(ksize)
    cp = cp_decompose(cp_true, CP_RANK, bias=bias, geometry=geometry)
    layers = cp.layers(stride_on)
    assert [spec.keras_class for spec in layers] == ["Conv2D", "DepthwiseConv2D", "DepthwiseConv2D", "Conv2D"]
    ref = run_original(keras, cp_true, bias, geometry, x)
    np.testing.assert_allclose(run_layers(keras, layers, x), ref, atol=1e-4 * np.abs(ref).max())


def test_litert_runs_cp_with_split_strides(keras):
    """Strided CP in the default (s,1)/(1,s) layout: build a Keras model, convert it, run it in LiteRT."""
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    import tensorflow as tf

    x = conv_case((3, 3))[0][:1]
    inp = keras.Input(x.shape[1:], batch_size=1)
    outputs, weights, refs = [], [], {}
    for ksize, geometry in GEOMETRIES[1:3]:  # (2,2) 'same' and (2,1) 'valid'
        _, bias, _, cp_true = conv_case(ksize)
        ref = run_original(keras, cp_true, bias, geometry, x)
        refs[ref.shape] = ref
        y = inp
        for spec in cp_decompose(cp_true, CP_RANK, bias=bias, geometry=geometry).layers():
            layer = getattr(keras.layers, spec.keras_class)(**spec.keras_config())
            y = layer(y)
            weights.append((layer, spec.weights()))
        outputs.append(y)
    assert len(refs) == 2  # distinct output shapes identify the branches after conversion
    model = keras.Model(inp, outputs)
    for layer, w in weights:
        layer.set_weights(w)
    interp = interpreter_mod.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert()
    )
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = [interp.get_tensor(d["index"]) for d in interp.get_output_details()]
    assert sorted(g.shape for g in got) == sorted(refs)
    for g in got:
        ref = refs[g.shape]
        np.testing.assert_allclose(g, ref, atol=1e-4 * np.abs(ref).max())


def test_cp_stride_placement_validation():
    cp = cp_decompose(cp_kernel(0, (3, 3, 4, 6), 3), 3, geometry=ConvGeometry(strides=2, padding="same"))
    with pytest.raises(LetiError, match="^stride_on:"):
        cp.layers("last")
    with pytest.raises(LetiError, match="^stride_on:"):
        cp.layers("middle")
    split = cp.layers()
    assert (split[1].strides, split[2].strides) == ((2, 1), (1, 2))


def test_keras_svd_replacement_matches_dense(keras):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((10, 7)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    x = rng.standard_normal((5, 10)).astype(np.float32)
    dense = keras.layers.Dense(7)
    dense.build(x.shape)
    dense.set_weights([w, b])
    f = svd_decompose(w, 7, bias=b)
    assert [spec.keras_config()["use_bias"] for spec in f.layers()] == [False, True]
    np.testing.assert_allclose(run_layers(keras, f.layers(), x), np.asarray(dense(x)), atol=1e-4)
    # truncated: the two Dense layers compute x @ (A B) exactly
    f3 = svd_decompose(w, 3, bias=b)
    np.testing.assert_allclose(run_layers(keras, f3.layers(), x), x @ f3.reconstruct() + b, atol=1e-4)

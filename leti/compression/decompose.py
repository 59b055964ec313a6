"""Low-rank factorisations of Conv2D / Dense kernels, with factors in Keras layouts.

Layouts: Conv2D kernel ``(kh, kw, c_in, c_out)``, DepthwiseConv2D kernel ``(kh, kw, channels, 1)``, Dense kernel
``(c_in, c_out)``. Every factor record has ``reconstruct()`` (the dense kernel it stands for), ``rel_error()`` and
``layers()``: the replacement layers, in order, as :class:`FactorLayer` records a model builder can instantiate
(``keras_class``, ``keras_config()``, ``weights()``) without further reshaping.

* Tucker-2 (truncated HOSVD on the two channel modes): 1x1 conv -> kxk conv (original geometry) -> 1x1 conv + bias.
* CP: 1x1 conv -> kx1 depthwise -> 1xk depthwise -> 1x1 conv + bias (CP weights folded into the last 1x1).
* SVD: Dense (no bias) -> Dense + bias.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from leti.errors import LetiError

__all__ = [
    "ConvGeometry",
    "FactorLayer",
    "Tucker2Factors",
    "CPFactors",
    "SVDFactors",
    "decomposition_methods",
    "tucker2_decompose",
    "tucker2_recompress",
    "cp_decompose",
    "svd_decompose",
    "rel_error",
]


def _pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in value)
    ):
        raise LetiError(f"must be a positive integer or a pair of them, got {value!r}", field=name)
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class ConvGeometry:
    """Spatial settings of the original Conv2D: they move onto the spatial factor(s) of a decomposition."""

    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    dilation_rate: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "strides", _pair(self.strides, "strides"))
        object.__setattr__(self, "dilation_rate", _pair(self.dilation_rate, "dilation_rate"))
        if self.padding not in ("valid", "same"):
            raise LetiError(f"must be 'valid' or 'same', got {self.padding!r}", field="padding")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int | np.integer) or self.groups < 1:
            raise LetiError(f"must be an integer >= 1, got {self.groups!r}", field="groups")


_KERAS_CLASS = {"conv2d": "Conv2D", "depthwise_conv2d": "DepthwiseConv2D", "dense": "Dense"}


@dataclass(frozen=True, eq=False)
class FactorLayer:
    """One replacement layer. ``kind`` is 'conv2d', 'depthwise_conv2d' or 'dense'; ``bias`` None means no bias."""

    kind: str
    kernel: np.ndarray
    bias: np.ndarray | None = None
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"
    dilation_rate: tuple[int, int] = (1, 1)

    @property
    def keras_class(self) -> str:
        return _KERAS_CLASS[self.kind]

    def keras_config(self) -> dict:
        """Constructor arguments of the Keras layer (activation left at its default, linear)."""
        use_bias = self.bias is not None
        if self.kind == "dense":
            return {"units": int(self.kernel.shape[1]), "use_bias": use_bias}
        conf = {
            "kernel_size": (int(self.kernel.shape[0]), int(self.kernel.shape[1])),
            "strides": self.strides,
            "padding": self.padding,
            "dilation_rate": self.dilation_rate,
            "use_bias": use_bias,
        }
        if self.kind == "conv2d":
            return {"filters": int(self.kernel.shape[3]), **conf}
        return {**conf, "depth_multiplier": 1}

    def weights(self) -> list[np.ndarray]:
        """Arguments for ``layer.set_weights``."""
        return [self.kernel] if self.bias is None else [self.kernel, self.bias]


def rel_error(kernel: np.ndarray, approx: np.ndarray) -> float:
    """``||kernel - approx||_F / ||kernel||_F``."""
    k, a = np.asarray(kernel, dtype=np.float64), np.asarray(approx, dtype=np.float64)
    if k.shape != a.shape:
        raise LetiError(f"shape {a.shape} does not match kernel shape {k.shape}", field="approx")
    norm = np.linalg.norm(k)
    if norm == 0:
        raise LetiError("is all zeros; relative error is undefined", field="kernel")
    return float(np.linalg.norm(k - a) / norm)


@dataclass(frozen=True, eq=False)
class Tucker2Factors:
    """``kernel ~= core x_3 U_in x_4 U_out``.

    ``first``: (1, 1, c_in, R_in) = U_in; ``core``: (kh, kw, R_in, R_out); ``last``: (1, 1, R_out, c_out) = U_out^T;
    ``bias``: (c_out,) or None, carried by the last layer; ``geometry``: applied to the core conv.
    """

    first: np.ndarray
    core: np.ndarray
    last: np.ndarray
    bias: np.ndarray | None
    geometry: ConvGeometry = field(default_factory=ConvGeometry)

    @property
    def ranks(self) -> tuple[int, int]:
        return int(self.core.shape[2]), int(self.core.shape[3])

    @property
    def u_in(self) -> np.ndarray:
        return self.first[0, 0]

    @property
    def u_out(self) -> np.ndarray:
        return self.last[0, 0].T

    @property
    def n_params(self) -> int:
        return self.first.size + self.core.size + self.last.size

    def reconstruct(self) -> np.ndarray:
        return np.einsum("ijrs,cr,os->ijco", self.core, self.u_in, self.u_out, optimize=True)

    def rel_error(self, kernel: np.ndarray) -> float:
        return rel_error(kernel, self.reconstruct())

    def layers(self) -> list[FactorLayer]:
        g = self.geometry
        return [
            FactorLayer("conv2d", self.first),
            FactorLayer("conv2d", self.core, None, g.strides, g.padding, g.dilation_rate),
            FactorLayer("conv2d", self.last, self.bias),
        ]


@dataclass(frozen=True, eq=False)
class CPFactors:
    """``kernel[i,j,c,o] ~= sum_r vertical[i,0,r,0] horizontal[0,j,r,0] first[0,0,c,r] last[0,0,r,o]``.

    ``first``: (1, 1, c_in, R); ``vertical``: (kh, 1, R, 1) depthwise with strides (s_h, 1), dilation (d_h, 1);
    ``horizontal``: (1, kw, R, 1) depthwise with strides (1, s_w), dilation (1, d_w); ``last``: (1, 1, R, c_out),
    holding the CP weights (the other three factors have unit-norm columns); ``bias``: (c_out,) or None.
    """

    first: np.ndarray
    vertical: np.ndarray
    horizontal: np.ndarray
    last: np.ndarray
    bias: np.ndarray | None
    geometry: ConvGeometry = field(default_factory=ConvGeometry)

    @property
    def rank(self) -> int:
        return int(self.first.shape[3])

    @property
    def n_params(self) -> int:
        return self.first.size + self.vertical.size + self.horizontal.size + self.last.size

    def reconstruct(self) -> np.ndarray:
        return np.einsum(
            "ir,jr,cr,ro->ijco",
            self.vertical[:, 0, :, 0],
            self.horizontal[0, :, :, 0],
            self.first[0, 0],
            self.last[0, 0],
            optimize=True,
        )

    def rel_error(self, kernel: np.ndarray) -> float:
        return rel_error(kernel, self.reconstruct())

    def layers(self, stride_on: str = "split") -> list[FactorLayer]:
        """Replacement layers. ``stride_on`` places the original strides:

        * ``"split"`` (default, the usual CP layout): (s_h, 1) on the kx1 and (1, s_w) on the 1xk depthwise. Exact for
          'valid' and 'same' padding, and TFLite/LiteRT run it; TensorFlow's own DepthwiseConv2D kernel rejects
          unequal strides, so such a Keras model builds and converts but cannot be executed (or fine-tuned) in TF.
        * ``"last"``: (s_h, s_w) on the 1xk depthwise, the kx1 at stride 1. Runs in TF when s_h == s_w, at the cost
          of a full-resolution kx1; exact only for 'valid' padding (or unit strides), so 'same' is rejected.
        """
        (sh, sw), (dh, dw), pad = self.geometry.strides, self.geometry.dilation_rate, self.geometry.padding
        if stride_on == "split":
            # 'same' padding splits exactly: the kx1 pads only rows, the 1xk only columns, as the kxk conv would.
            v_strides, h_strides = (sh, 1), (1, sw)
        elif stride_on == "last":
            if pad == "same" and (sh, sw) != (1, 1):
                raise LetiError(
                    "'last' is not equivalent to a strided conv with 'same' padding (row offsets differ); use 'split'",
                    field="stride_on",
                )
            v_strides, h_strides = (1, 1), (sh, sw)
        else:
            raise LetiError(f"must be 'split' or 'last', got {stride_on!r}", field="stride_on")
        return [
            FactorLayer("conv2d", self.first),
            FactorLayer("depthwise_conv2d", self.vertical, None, v_strides, pad, (dh, 1)),
            FactorLayer("depthwise_conv2d", self.horizontal, None, h_strides, pad, (1, dw)),
            FactorLayer("conv2d", self.last, self.bias),
        ]


@dataclass(frozen=True, eq=False)
class SVDFactors:
    """``kernel ~= first @ second``: ``first`` (c_in, r) Dense without bias, ``second`` (r, c_out) Dense + bias.

    The singular values are split evenly (sqrt on each side) so both factors have comparable scale.
    """

    first: np.ndarray
    second: np.ndarray
    bias: np.ndarray | None

    @property
    def rank(self) -> int:
        return int(self.first.shape[1])

    @property
    def n_params(self) -> int:
        return self.first.size + self.second.size

    def reconstruct(self) -> np.ndarray:
        return self.first @ self.second

    def rel_error(self, kernel: np.ndarray) -> float:
        return rel_error(kernel, self.reconstruct())

    def layers(self) -> list[FactorLayer]:
        return [FactorLayer("dense", self.first), FactorLayer("dense", self.second, self.bias)]


def decomposition_methods(layer_type: str, groups: int = 1) -> tuple[str, ...]:
    """Decompositions that apply to a layer type (Keras class name or snake case), or a LetiError saying why not."""
    key = str(layer_type).lower().replace("_", "")
    if key == "conv2d":
        if groups != 1:
            raise LetiError(
                f"grouped convolutions (groups={groups}) are not decomposed: their kernel mixes only channels "
                "within a group, so a channel factorisation would change the layer",
                field="groups",
            )
        return ("tucker2", "cp")
    if key == "dense":
        return ("svd",)
    if key in ("depthwiseconv2d", "separableconv2d"):
        raise LetiError(
            f"{layer_type} is not decomposable: a depthwise kernel has one kxk filter per channel and no channel "
            "mixing to factorise (prune its producer instead)",
            field="layer_type",
        )
    raise LetiError(f"no decomposition for layer type {layer_type!r}", field="layer_type")


def _float_kernel(kernel: np.ndarray, ndim: int, name: str = "kernel") -> np.ndarray:
    k = np.asarray(kernel)
    if k.ndim != ndim or min(k.shape) < 1:
        raise LetiError(f"must be a non-empty {ndim}-D array, got shape {k.shape}", field=name)
    if not np.issubdtype(k.dtype, np.number) or np.iscomplexobj(k) or not np.all(np.isfinite(k)):
        raise LetiError("must hold finite real numbers", field=name)
    return k if np.issubdtype(k.dtype, np.floating) else k.astype(np.float64)


def _check_bias(bias: np.ndarray | None, c_out: int, dtype: np.dtype) -> np.ndarray | None:
    if bias is None:
        return None
    b = np.asarray(bias)
    if b.shape != (c_out,) or not np.issubdtype(b.dtype, np.number) or not np.all(np.isfinite(b)):
        raise LetiError(f"must be a finite vector of shape ({c_out},), got shape {b.shape}", field="bias")
    return b.astype(dtype)


def _check_rank(rank: object, name: str, upper: int | None = None) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or rank < 1:
        raise LetiError(f"must be an integer >= 1, got {rank!r}", field=name)
    if upper is not None and rank > upper:
        raise LetiError(f"must be <= {upper}, got {rank}", field=name)
    return int(rank)


def _check_geometry(geometry: ConvGeometry | None) -> ConvGeometry:
    geometry = ConvGeometry() if geometry is None else geometry
    if not isinstance(geometry, ConvGeometry):
        raise LetiError(f"must be a ConvGeometry, got {type(geometry).__name__}", field="geometry")
    if geometry.groups != 1:
        decomposition_methods("conv2d", geometry.groups)  # raises the grouped-conv error
    return geometry


def _leading_vectors(mat: np.ndarray, r: int) -> np.ndarray:
    """First ``r`` left singular vectors of ``mat`` (completed to an orthonormal basis if r > rank), sign-fixed."""
    u, _, _ = np.linalg.svd(mat, full_matrices=r > min(mat.shape))
    u = u[:, :r]
    # Deterministic signs: the largest-magnitude entry of each column is positive.
    signs = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(r)])
    return u * np.where(signs == 0, 1.0, signs)


def _hosvd2(k: np.ndarray, r_in: int, r_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    u_in = _leading_vectors(np.moveaxis(k, 2, 0).reshape(k.shape[2], -1), r_in)
    u_out = _leading_vectors(np.moveaxis(k, 3, 0).reshape(k.shape[3], -1), r_out)
    core = np.einsum("ijco,cr,os->ijrs", k, u_in, u_out, optimize=True)
    return core, u_in, u_out


def tucker2_decompose(
    kernel: np.ndarray,
    r_in: int,
    r_out: int,
    bias: np.ndarray | None = None,
    geometry: ConvGeometry | None = None,
) -> Tucker2Factors:
    """Tucker-2 of a Conv2D kernel by truncated HOSVD; ``1 <= r_in <= c_in``, ``1 <= r_out <= c_out``.

    The error is non-increasing in each rank (the projection subspaces are nested) and zero at full ranks.
    """
    k = _float_kernel(kernel, 4)
    geometry = _check_geometry(geometry)
    _, _, c_in, c_out = k.shape
    r_in, r_out = _check_rank(r_in, "r_in", c_in), _check_rank(r_out, "r_out", c_out)
    core, u_in, u_out = _hosvd2(k.astype(np.float64), r_in, r_out)
    dt = k.dtype
    return Tucker2Factors(
        first=u_in[None, None].astype(dt),
        core=core.astype(dt),
        last=u_out.T[None, None].astype(dt),
        bias=_check_bias(bias, c_out, dt),
        geometry=geometry,
    )


def tucker2_recompress(t2: Tucker2Factors, r_in: int, r_out: int) -> Tucker2Factors:
    """MUSCO's further compression: Tucker-2 of the core only, folded into the outer factors.

    ``(G', U'_in, U'_out) = Tucker-2(G)``; then ``U_in <- U_in U'_in`` and ``U_out <- U_out U'_out``. Only the core
    is decomposed, so fine-tuned outer factors are kept, not recomputed from a dense kernel.
    """
    if not isinstance(t2, Tucker2Factors):
        raise LetiError(f"must be Tucker2Factors, got {type(t2).__name__}", field="t2")
    cur_in, cur_out = t2.ranks
    r_in, r_out = _check_rank(r_in, "r_in", cur_in), _check_rank(r_out, "r_out", cur_out)
    dt = t2.core.dtype
    core, v_in, v_out = _hosvd2(t2.core.astype(np.float64), r_in, r_out)
    u_in = t2.u_in.astype(np.float64) @ v_in
    u_out = t2.u_out.astype(np.float64) @ v_out
    return Tucker2Factors(
        first=u_in[None, None].astype(dt),
        core=core.astype(dt),
        last=u_out.T[None, None].astype(dt),
        bias=t2.bias,
        geometry=t2.geometry,
    )


def cp_decompose(
    kernel: np.ndarray,
    rank: int,
    bias: np.ndarray | None = None,
    geometry: ConvGeometry | None = None,
    seed: int = 0,
    n_iter_max: int = 500,
    tol: float = 1e-8,
) -> CPFactors:
    """Rank-``rank`` CP of a Conv2D kernel by ALS (tensorly ``parafac``, SVD init, seeded).

    ALS is a local method: the result is reproducible for a given seed but not guaranteed optimal. It stops
    when the relative reconstruction error changes by less than ``tol`` between sweeps, or after ``n_iter_max``.
    """
    import tensorly as tl
    from tensorly.decomposition import parafac

    k = _float_kernel(kernel, 4)
    geometry = _check_geometry(geometry)
    rank = _check_rank(rank, "rank")
    n_iter_max = _check_rank(n_iter_max, "n_iter_max")
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < 1:
        raise LetiError(f"must be a number in [0, 1), got {tol!r}", field="tol")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise LetiError(f"must be a non-negative integer, got {seed!r}", field="seed")
    dt = k.dtype
    k64 = k.astype(np.float64)
    # tensorly warns when rank exceeds a mode size (kh, kw); its SVD init then pads with seeded random columns.
    with tl.backend_context("numpy"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Trying to compute SVD", category=UserWarning)
        weights, factors = parafac(
            k64,
            rank,
            n_iter_max=n_iter_max,
            init="svd",
            tol=tol,
            random_state=np.random.RandomState(int(seed)),
            normalize_factors=False,
            linesearch=True,
        )
    a_h, a_w, a_c, a_o = (np.asarray(f, dtype=np.float64) for f in factors)
    a_o = a_o * np.asarray(weights, dtype=np.float64)[None, :]
    # Unit-norm columns on the first three factors; their scales move into the last one.
    scale = np.ones(rank)
    for f in (a_h, a_w, a_c):
        n = np.linalg.norm(f, axis=0)
        safe = np.where(n > 0, n, 1.0)
        f /= safe
        scale *= n
    a_o = a_o * scale[None, :]
    return CPFactors(
        first=a_c[None, None].astype(dt),
        vertical=a_h[:, None, :, None].astype(dt),
        horizontal=a_w[None, :, :, None].astype(dt),
        last=a_o.T[None, None].astype(dt),
        bias=_check_bias(bias, k.shape[3], dt),
        geometry=geometry,
    )


def svd_decompose(kernel: np.ndarray, rank: int, bias: np.ndarray | None = None) -> SVDFactors:
    """Truncated SVD of a Dense kernel ``(c_in, c_out)``, ``1 <= rank <= min(c_in, c_out)`` (Eckart-Young optimal)."""
    k = _float_kernel(kernel, 2)
    c_in, c_out = k.shape
    rank = _check_rank(rank, "rank", min(c_in, c_out))
    u, s, vt = np.linalg.svd(k.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    dt = k.dtype
    return SVDFactors(
        first=(u[:, :rank] * root).astype(dt),
        second=(root[:, None] * vt[:rank]).astype(dt),
        bias=_check_bias(bias, c_out, dt),
    )

"""Shape, MAC and parameter arithmetic for the primitive ops of a LayerGraph.

Every module that needs this arithmetic (graph expansion, the .tflite reader, compression) calls these functions.

Counting conventions:
* ``macs`` counts multiply-accumulates for conv and dense (one multiply-add = 1). Other ops count one operation per
  element they touch: pooling ``kh*kw`` per output element, add ``(n_inputs-1)`` per output element, mul/act/bn/zero 1
  per output element, global pooling 1 per input element, bilinear resize 4 per output element (the taps it
  weighs). Data movement (concat, slice, shuffle, pad, reshape, nearest resize) counts 0.
* ``params`` counts every stored weight, like Keras' ``count_params()``: kernels, biases and the four BatchNorm vectors
  (gamma, beta, moving mean, moving variance).
"""

from __future__ import annotations

Shape = tuple[int, int, int]  # (H, W, C); vectors are (1, 1, C)

PAD_SAME, PAD_VALID = 0, 1


def out_size(size: int, k: int, stride: int, dilation: int = 1, pad: int = PAD_SAME) -> int:
    """Spatial output size of a conv/pool window along one axis."""
    if pad == PAD_SAME:
        return -(-size // stride)
    eff = (k - 1) * dilation + 1
    return max(0, (size - eff) // stride + 1)


def window_out_shape(
    shape: Shape, kh: int, kw: int, sh: int, sw: int, channels: int, dilation: int = 1, pad: int = PAD_SAME
) -> Shape:
    h, w, _ = shape
    return (out_size(h, kh, sh, dilation, pad), out_size(w, kw, sw, dilation, pad), channels)


def conv_macs(out: Shape, kh: int, kw: int, cin: int, groups: int) -> int:
    return out[0] * out[1] * out[2] * kh * kw * (cin // groups)


def conv_params(kh: int, kw: int, cin: int, cout: int, groups: int, bias: bool, bn: bool) -> int:
    return kh * kw * (cin // groups) * cout + (cout if bias else 0) + (4 * cout if bn else 0)


def dwconv_macs(out: Shape, kh: int, kw: int) -> int:
    return out[0] * out[1] * out[2] * kh * kw


def dwconv_params(kh: int, kw: int, cout: int, bias: bool, bn: bool) -> int:
    return kh * kw * cout + (cout if bias else 0) + (4 * cout if bn else 0)


def dense_macs(in_shape: Shape, units: int) -> int:
    return in_shape[0] * in_shape[1] * in_shape[2] * units


def dense_params(cin: int, units: int, bias: bool) -> int:
    return cin * units + (units if bias else 0)


def pool_macs(out: Shape, kh: int, kw: int) -> int:
    return out[0] * out[1] * out[2] * kh * kw


def elems(shape: Shape) -> int:
    return shape[0] * shape[1] * shape[2]


def padded_shape(shape: Shape, top: int, left: int, bottom: int, right: int) -> Shape:
    """Shape after spatial padding (negative amounts crop)."""
    return (shape[0] + top + bottom, shape[1] + left + right, shape[2])


def resize_macs(out: Shape, bilinear: bool) -> int:
    return 4 * elems(out) if bilinear else 0

"""Functional-model surgery: replace layers by their factors, prune channels, rebuild the Keras model.

A *unit* is what one edit acts on: a plain Conv2D (``groups=1``) or Dense, or a factor group written by an earlier
edit (``<name>__tucker2_0..2``, ``<name>__cp_0..3``, ``<name>__svd_0..1``). Edits:

* ``tucker2`` / ``cp`` / ``svd``: the unit's layers are replaced by the factor layers, named after the unit, with
  the factor weights; a Tucker-2 unit is re-decomposed through its core (MUSCO's further compression), an SVD unit
  re-truncated. BatchNorm and activation after the unit stay where they were.
* ``prune``: the unit keeps its highest-norm output channels; the BatchNorm after it, every depthwise conv, pool and
  activation on the way, and the input axis of every Conv2D / Dense that reads those channels are sliced to match.
  A unit whose channels reach an Add, a Concatenate, a grouped conv or the model output cannot be pruned.

Every layer is rebuilt from its config with copied weights, so the new model shares nothing with the old one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from leti.compression.decompose import (  # noqa: E402
    ConvGeometry,
    CPFactors,
    SVDFactors,
    Tucker2Factors,
    cp_decompose,
    svd_decompose,
    tucker2_decompose,
    tucker2_recompress,
)
from leti.compression.keras_ir import (  # noqa: E402
    FACTOR_METHODS,
    FACTOR_RE,
    KNode,
    factor_name,
    functional_nodes,
    keras_to_arch,
)
from leti.compression.prune import prune_plan, pruned_rel_error  # noqa: E402
from leti.errors import LetiError  # noqa: E402

__all__ = [
    "METHODS",
    "Edit",
    "Unit",
    "units",
    "unit_methods",
    "factorize",
    "clamp_ranks",
    "prune_keep",
    "apply_edits",
    "model_outputs",
    "output_error",
]

METHODS = ("tucker2", "cp", "svd", "prune")
_CHANNEL_PASS = ("BatchNormalization", "ReLU", "Activation", "MaxPooling2D", "AveragePooling2D",
                 "GlobalAveragePooling2D", "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                 "Identity")  # fmt: skip


@dataclass(frozen=True)
class Edit:
    """One change to one unit: ``ranks`` (R_in, R_out) / (R,) for decompositions, ``ratio`` and ``norm`` for
    pruning (the share of output channels removed, 0 < ratio < 1); ``seed`` and ``cp_iters`` drive CP's ALS."""

    unit: str
    method: str
    ranks: tuple[int, ...] = ()
    ratio: float = 0.0
    norm: str = "l1"
    seed: int = 0
    cp_iters: int = 20  # ALS sweeps for CP: enough to get the error to within a few % of convergence

    def __post_init__(self):
        if self.method not in METHODS:
            raise LetiError(f"must be one of {', '.join(METHODS)}; got {self.method!r}", "method")
        want = {"tucker2": 2, "cp": 1, "svd": 1, "prune": 0}[self.method]
        if len(self.ranks) != want or any(
            isinstance(r, bool) or not isinstance(r, int | np.integer) or r < 1 for r in self.ranks
        ):
            raise LetiError(
                f"{self.method} needs {want} positive integer rank(s), got {self.ranks!r}", "ranks"
            )
        object.__setattr__(self, "ranks", tuple(int(r) for r in self.ranks))
        if self.method == "prune" and not 0 < self.ratio < 1:
            raise LetiError(f"must be in (0, 1) for pruning, got {self.ratio!r}", "ratio")

    @property
    def label(self) -> str:
        """``tucker2 r=(12, 16)``, ``cp r=24``, ``prune l1 0.25``."""
        if self.method == "prune":
            return f"prune {self.norm} {self.ratio:g}"
        return f"{self.method} r={self.ranks if len(self.ranks) > 1 else self.ranks[0]}"


@dataclass(frozen=True, eq=False)
class Unit:
    """A compressible unit of a model (see the module docstring).

    ``kernel``: its dense kernel in Keras layout (reconstructed for factor groups); ``factors``: the factor record
    of a group; ``prune_reason``: why its output channels cannot be pruned (None when they can).
    """

    name: str
    kind: str  # conv | dense | tucker2 | cp | svd
    layers: tuple[str, ...]
    kernel: np.ndarray
    bias: np.ndarray | None
    geometry: ConvGeometry | None
    factors: Tucker2Factors | CPFactors | SVDFactors | None
    classifier: bool
    prune_reason: str | None

    @property
    def params(self) -> int:
        """Weights of the unit's kernel(s), biases left out (as the ranks module counts)."""
        return int(self.factors.n_params if self.factors is not None else self.kernel.size)


def _geometry(layer) -> ConvGeometry:
    return ConvGeometry(tuple(layer.strides), layer.padding, tuple(layer.dilation_rate), layer.groups)


def _kernel_bias(layer) -> tuple[np.ndarray, np.ndarray | None]:
    w = layer.get_weights()
    return w[0], (w[1] if layer.use_bias else None)


def _channel_walk(nodes: dict[str, KNode], start: str, output: str) -> tuple[list[str], list[str]]:
    """Layers the channels of ``start`` pass through (in topological order) and the layers that consume them.

    Raises LetiError (the reason the unit cannot be pruned) when they reach anything else.
    """
    through, consumers, todo, seen = [], [], [start], {start}
    order = {name: i for i, name in enumerate(nodes)}
    while todo:
        cur = todo.pop()
        if cur == output:
            raise LetiError("its channels are the model output", "prune")
        for name in nodes[cur].consumers:
            if name in seen:
                continue
            seen.add(name)
            node = nodes[name]
            vector_flatten = node.kind == "Flatten" and int(np.prod(node.shape)) == node.shape[-1]
            if node.kind in (*_CHANNEL_PASS, "DepthwiseConv2D") or vector_flatten:
                through.append(name)
                todo.append(name)
            elif (node.kind == "Conv2D" and node.layer.groups == 1) or node.kind == "Dense":
                consumers.append(name)
            else:
                raise LetiError(f"its channels reach {node.kind} {name!r}", "prune")
    return sorted(through, key=order.get), consumers


def units(model) -> dict[str, Unit]:
    """The compressible units of a functional model, by name, in topological order."""
    nodes = functional_nodes(model)
    output = model.outputs[0]._keras_history.operation.name
    classifier = keras_to_arch(model).classifier
    found: dict[str, Unit] = {}
    grouped: set[str] = set()
    for name, node in nodes.items():
        if name in grouped:
            continue
        m = FACTOR_RE.match(name)
        if m and m["i"] == "0":
            unit, method = m["unit"], m["method"]
            chain = [factor_name(unit, method, i) for i in range(FACTOR_METHODS[method])]
            layers = [nodes[c].layer for c in chain]
            grouped.update(chain)
            bias = layers[-1].get_weights()[1] if layers[-1].use_bias else None
            if method == "tucker2":
                f = Tucker2Factors(*(lay.get_weights()[0] for lay in layers), bias, _geometry(layers[1]))
            elif method == "cp":
                geo = ConvGeometry((layers[1].strides[0], layers[2].strides[1]), layers[1].padding)
                f = CPFactors(*(lay.get_weights()[0] for lay in layers), bias, geo)
            else:
                f = SVDFactors(layers[0].get_weights()[0], layers[1].get_weights()[0], bias)
            geometry = getattr(f, "geometry", None)
            found[unit] = Unit(unit, method, tuple(chain), f.reconstruct(), bias, geometry, f, False,
                               "factorized units are not pruned")  # fmt: skip
        elif (node.kind == "Conv2D" and node.layer.groups == 1) or node.kind == "Dense":
            kernel, bias = _kernel_bias(node.layer)
            try:
                _channel_walk(nodes, name, output)
                reason = None
            except LetiError as e:
                reason = e.reason
            is_cls = name == classifier
            if is_cls:
                reason = "the classifier's outputs are the classes"
            geometry = _geometry(node.layer) if node.kind == "Conv2D" else None
            found[name] = Unit(name, "conv" if node.kind == "Conv2D" else "dense", (name,), kernel, bias, geometry,
                               None, is_cls, reason)  # fmt: skip
    return found


def unit_methods(unit: Unit) -> tuple[str, ...]:
    """The edits that apply to a unit. The classifier is left alone: the IR's expansion owns it."""
    if unit.classifier:
        return ()
    prune = ("prune",) if unit.prune_reason is None else ()
    if unit.kind == "conv":
        # CP's separable kx1 / 1xk pair has no dilation in the IR; a 1x1 conv has no spatial mode to split
        k = unit.kernel.shape[0]
        cp = (
            ("cp",)
            if unit.kernel.shape[0] == unit.kernel.shape[1]
            and k > 1
            and unit.geometry.dilation_rate == (1, 1)
            else ()
        )
        return ("tucker2", *cp, *prune)
    if unit.kind == "dense":
        return ("svd", *prune)
    if unit.kind in ("tucker2", "svd"):
        return (unit.kind,)
    return ()


def factorize(unit: Unit, edit: Edit, in_keep: np.ndarray | None = None):
    """The factor record an edit gives for a unit; ``in_keep``: input channels left by a pruned producer."""
    with one_blas_thread():
        return _factorize(unit, edit, in_keep)


def one_blas_thread():
    """Decompositions work on small matrices: BLAS threads only fight over the cores (70x slower on a busy host)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def clamp_ranks(edit: Edit, c_in: int, c_out: int, kind: str) -> Edit:
    """A fresh Tucker-2 / SVD cannot keep more input rank than the unit has input channels: after its producer
    was pruned, ``R_in`` (Tucker-2) and ``r`` (SVD) are capped by the channels left."""
    if edit.method == "tucker2" and kind != "tucker2" and edit.ranks[0] > c_in:
        return replace(edit, ranks=(c_in, edit.ranks[1]))
    if edit.method == "svd" and kind != "svd" and edit.ranks[0] > min(c_in, c_out):
        return replace(edit, ranks=(min(c_in, c_out),))
    return edit


def _factorize(unit: Unit, edit: Edit, in_keep: np.ndarray | None):
    if in_keep is not None:
        edit = clamp_ranks(edit, len(in_keep), unit.kernel.shape[-1], unit.kind)
    kernel, geometry = unit.kernel, unit.geometry
    if edit.method not in unit_methods(unit) or edit.method == "prune":
        allowed = ", ".join(m for m in unit_methods(unit) if m != "prune") or "none"
        raise LetiError(
            f"{edit.method} does not apply to {unit.kind} unit {unit.name!r} (allowed: {allowed})", "method"
        )
    if unit.kind == "tucker2":
        f = unit.factors
        if in_keep is not None:
            f = Tucker2Factors(f.first[:, :, in_keep, :], f.core, f.last, f.bias, f.geometry)
        r_in, r_out = f.ranks
        if edit.ranks[0] > r_in or edit.ranks[1] > r_out:
            raise LetiError(f"must not exceed the current ranks {(r_in, r_out)}, got {edit.ranks}", "ranks")
        return tucker2_recompress(f, *edit.ranks)
    if in_keep is not None:
        kernel = np.take(kernel, in_keep, axis=kernel.ndim - 2)
    if edit.method == "tucker2":
        return tucker2_decompose(kernel, *edit.ranks, bias=unit.bias, geometry=geometry)
    if edit.method == "cp":
        from threadpoolctl import threadpool_limits

        # one BLAS thread: ALS works on small matrices, where threads only fight over the cores
        with threadpool_limits(1):
            return cp_decompose(
                kernel, edit.ranks[0], unit.bias, geometry, seed=edit.seed, n_iter_max=edit.cp_iters
            )
    return svd_decompose(kernel, edit.ranks[0], bias=unit.bias)


def prune_keep(unit: Unit, edit: Edit) -> np.ndarray:
    """Output channels a prune edit keeps (highest ``norm``, ascending indices)."""
    if edit.method != "prune" or "prune" not in unit_methods(unit):
        why = unit.prune_reason or "not a prune edit"
        raise LetiError(f"unit {unit.name!r} cannot be pruned ({why})", "method")
    return prune_plan(unit.kernel, edit.ratio, edit.norm)


def pruning_error(unit: Unit, edit: Edit) -> float:
    return pruned_rel_error(unit.kernel, prune_keep(unit, edit))


def _slice_weights(layer, weights: list[np.ndarray], in_keep, out_keep) -> tuple[dict, list[np.ndarray]]:
    """Config changes and sliced weights of one layer whose input and/or output channels shrink."""
    kind = type(layer).__name__
    changes: dict = {}
    w = list(weights)
    if kind in ("Conv2D", "Dense"):
        if in_keep is not None:
            w[0] = np.take(w[0], in_keep, axis=w[0].ndim - 2)
        if out_keep is not None:
            w[0] = w[0][..., out_keep]
            if layer.use_bias:
                w[1] = w[1][out_keep]
            changes["filters" if kind == "Conv2D" else "units"] = int(len(out_keep))
    elif kind == "DepthwiseConv2D" and in_keep is not None:
        w[0] = w[0][:, :, in_keep, :]
        if layer.use_bias:
            w[1] = w[1][out_keep]
    elif kind == "BatchNormalization" and out_keep is not None:
        w = [v[out_keep] for v in w]
    return changes, w


def _plan_channels(model, nodes, all_units, edits) -> tuple[dict, dict]:
    """(in_keep, out_keep) per layer name for every prune edit."""
    output = model.outputs[0]._keras_history.operation.name
    in_keep: dict[str, np.ndarray] = {}
    out_keep: dict[str, np.ndarray] = {}
    for e in edits:
        if e.method != "prune":
            continue
        unit = all_units[e.unit]
        keep = prune_keep(unit, e)
        out_keep[unit.name] = keep
        through, consumers = _channel_walk(nodes, unit.name, output)
        chan = {unit.name: keep}
        for name in through:
            node = nodes[name]
            src = chan[node.inputs[0]]
            if node.kind == "DepthwiseConv2D":
                mult = node.layer.depth_multiplier
                in_keep[name] = src
                chan[name] = out_keep[name] = (src[:, None] * mult + np.arange(mult)[None, :]).ravel()
            else:
                chan[name] = out_keep[name] = src
        for name in consumers:
            in_keep[name] = chan[nodes[name].inputs[0]]
    return in_keep, out_keep


def _check_edits(all_units: dict[str, Unit], edits) -> list[Edit]:
    edits = list(edits)
    seen = set()
    for e in edits:
        if not isinstance(e, Edit):
            raise LetiError(f"must be Edit records, got {type(e).__name__}", "edits")
        if e.unit not in all_units:
            raise LetiError(f"no compressible unit {e.unit!r} in the model", "edits")
        if e.unit in seen:
            raise LetiError(f"unit {e.unit!r} has more than one edit", "edits")
        seen.add(e.unit)
        if e.method not in unit_methods(all_units[e.unit]):
            u = all_units[e.unit]
            why = f" ({u.prune_reason})" if e.method == "prune" and u.prune_reason else ""
            raise LetiError(f"{e.method} does not apply to {u.kind} unit {u.name!r}{why}", "edits")
    return edits


def _clone(layer, changes: dict, name: str | None = None):
    cfg = {**layer.get_config(), **changes}
    if name is not None:
        cfg["name"] = name
    return type(layer).from_config(cfg)


def _call(layer, args: list):
    return layer(
        args if len(args) > 1 or type(layer).__name__ in ("Add", "Concatenate", "Multiply") else args[0]
    )


def apply_edits(model, edits, name: str | None = None) -> keras.Model:
    """A new Keras model with ``edits`` applied (at most one per unit); the input model is left unchanged."""
    nodes = functional_nodes(model)
    all_units = units(model)
    edits = _check_edits(all_units, edits)
    in_keep, out_keep = _plan_channels(model, nodes, all_units, edits)
    by_first = {all_units[e.unit].layers[0]: e for e in edits if e.method != "prune"}
    skip = {lay for e in edits if e.method != "prune" for lay in all_units[e.unit].layers[1:]}
    tensors: dict = {}
    for lname, node in nodes.items():
        if lname in skip:
            continue
        if node.kind == "InputLayer":
            tensors[lname] = keras.Input(node.shape, batch_size=1, name=lname)
            continue
        args = [tensors[i] for i in node.inputs]
        if lname in by_first:
            e = by_first[lname]
            unit = all_units[e.unit]
            f = factorize(unit, e, in_keep.get(lname))
            x = args[0]
            specs = f.layers()
            # the unit's own activation (Conv2D / Dense ``activation=``) moves onto its last factor
            act = nodes[unit.layers[-1]].layer.get_config().get("activation", "linear")
            for i, spec in enumerate(specs):
                extra = {"activation": act} if i == len(specs) - 1 else {}
                layer = getattr(keras.layers, spec.keras_class)(
                    name=factor_name(unit.name, e.method, i), **spec.keras_config(), **extra
                )
                x = layer(x)
                layer.set_weights([w.astype(np.float32) for w in spec.weights()])
            tensors[unit.layers[-1]] = x
            continue
        changes, weights = _slice_weights(
            node.layer, node.layer.get_weights(), in_keep.get(lname), out_keep.get(lname)
        )
        layer = _clone(node.layer, changes)
        y = _call(layer, args)
        if weights:
            layer.set_weights(weights)
        tensors[lname] = y
    out = tensors[model.outputs[0]._keras_history.operation.name]
    return keras.Model(tensors[next(iter(nodes))], out, name=name or model.name)


# ---- outputs --------------------------------------------------------------------------------------------------
def _needs_litert(model) -> bool:
    """TensorFlow's depthwise kernel refuses unequal strides (CP's split layout); LiteRT runs them."""
    return any(
        isinstance(lay, keras.layers.DepthwiseConv2D) and lay.strides[0] != lay.strides[1]
        for lay in model.layers
    )


def model_outputs(model, xs: np.ndarray) -> np.ndarray:
    """Outputs of ``model`` for a batch of inputs ``xs`` (one at a time: the models have batch size 1).

    Models with CP's split strides run through LiteRT (fp32), everything else through Keras.
    """
    xs = np.asarray(xs, dtype=np.float32)
    if not _needs_litert(model):
        return np.concatenate([np.asarray(model(x[None], training=False)) for x in xs])
    from ai_edge_litert.interpreter import Interpreter

    from leti.tflite.convert import keras_to_tflite, silenced

    data = keras_to_tflite(model, "fp32")
    with silenced():
        interp = Interpreter(model_content=data, num_threads=1)
        interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    ys = []
    for x in xs:
        interp.set_tensor(inp, x[None])
        interp.invoke()
        ys.append(interp.get_tensor(out).copy())
    return np.concatenate(ys)


def random_inputs(model, n: int = 4, seed: int = 0) -> np.ndarray:
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def output_error(original, compressed, n: int = 4, seed: int = 0) -> float:
    """``||y - y_hat|| / ||y||`` of the two models' outputs over ``n`` seeded standard-normal inputs."""
    xs = random_inputs(original, n, seed)
    y, y_hat = (
        model_outputs(original, xs).astype(np.float64),
        model_outputs(compressed, xs).astype(np.float64),
    )
    if y.shape != y_hat.shape:
        raise LetiError(f"output shapes differ: {y.shape} vs {y_hat.shape}", "compressed")
    norm = np.linalg.norm(y)
    return float(np.linalg.norm(y - y_hat) / norm) if norm > 0 else float(np.linalg.norm(y_hat))

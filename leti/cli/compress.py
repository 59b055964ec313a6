"""``leti compress MODEL.keras --target T --latency-budget 0.6x|12ms``: plan, print, optionally build and verify.

Output: one row per compressed layer (method, rank or prune ratio, weight error, params and MACs before -> after,
predicted ms saved by that edit alone), then the whole model's predicted latency against the budget. ``--verify``
builds the compressed model, measures it and the original on this machine (host targets) and prints predicted next
to measured. ``-o OUT.keras`` saves the compressed model.
"""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import argparse
import json
import os
import re
import sys
from pathlib import Path

import leti.cli.args as T
from leti.cli.common import add_timing_args
from leti.errors import LetiError, excerpt
from leti.importers.bounded_json import load_file
from leti.paths import is_file
from leti.targets import is_host_target, validate_name

__all__ = ["add_compress_parser", "cmd_compress", "format_plan", "load_model"]

_NODE_RE = re.compile(r"\.n(\d+):")  # an Arch node's block name in a single-cell graph: s0.c0.n<v>:<op>


def add_compress_parser(sub) -> None:
    s = sub.add_parser("compress", help="pick low-rank ranks / prune ratios that meet a latency budget")
    s.add_argument("model", help="a Keras functional model (.keras)")
    s.add_argument("--target", required=True, help="e.g. host-litert-cpu-1t")
    s.add_argument(
        "--latency-budget", required=True, help="0.6x (of the original's predicted latency) or 12ms"
    )
    s.add_argument("--methods", default="tucker2,cp,svd,prune", help="comma-separated: tucker2,cp,svd,prune")
    s.add_argument(
        "--steps", type=T.STEPS, default=1, help="compress in K rounds (Tucker-2 cores re-decomposed)"
    )
    s.add_argument(
        "--solver", default="auto", choices=("auto", "knapsack", "greedy"), help="how the plan is searched"
    )
    s.add_argument(
        "--predictor", help="predictor family to load for the target (default: the one that answers for it)"
    )
    s.add_argument("--family", dest="predictor", help=argparse.SUPPRESS)  # the old name of --predictor
    s.add_argument("--lut", help="host targets: a layer-LUT JSON file to reuse and extend (measured layers)")
    s.add_argument(
        "--verify", action="store_true", help="build and measure the compressed model (host targets)"
    )
    add_timing_args(s, "--verify: ")
    s.add_argument("--margin", type=T.MARGIN, default=0.0,
                   help="plan for (1 - M) x the budget to absorb prediction error, e.g. 0.05")  # fmt: skip
    s.add_argument("--allow-ood", action="store_true",
                   help="plan even when the predictor flags the model or the plan as out of distribution")  # fmt: skip
    s.add_argument("-o", "--output", help="save the compressed model here (.keras)")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=cmd_compress)


def load_model(path: str):
    """A Keras model from a .keras file, with leti's custom layers registered; LetiError when it cannot load."""
    p = Path(path)
    if not is_file(p):
        raise LetiError("no such file", "model")
    if p.suffix not in (".keras", ".h5"):
        raise LetiError(f"must be a .keras (or .h5) file, got {p.name!r}", "model")
    from leti.tflite.convert import silenced

    with silenced():
        import keras

        import leti.tflite.keras_model  # noqa: F401 - registers ChannelShuffle, ChannelSlice, Zero

        try:
            return keras.models.load_model(p, compile=False)
        except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad file; report one line
            err = " ".join(str(e).split())[:200]
    raise LetiError(f"cannot load the Keras model ({err})", "model")


def _predictor(args, model):
    """The predictor for the target: ``--lut``, ``--family``, or the registry's best; a host target without a
    trained predictor gets a layer LUT measured on this machine. A host LUT is calibrated on the original model."""
    from leti.compression.plan import default_predictor
    from leti.predictors import registry
    from leti.workflows.lut_build import LayerLUT

    target = validate_name(args.target)
    if args.lut:
        if not is_host_target(target):
            raise LetiError("a layer LUT is measured on this machine: use a host target", "--lut")
        lut = _host_lut(target)
        p = Path(args.lut)
        if is_file(p):
            data = load_file(p, "--lut")
            try:
                lut = LayerLUT.from_dict(data)
            except LetiError:
                raise
            except Exception as e:  # noqa: BLE001 - any shape of wrong content: one line naming the flag
                raise LetiError(f"not a layer-LUT JSON file ({excerpt(f'{type(e).__name__}: {e}', 200)})",
                                "--lut") from None  # fmt: skip
            if lut.target != target:
                raise LetiError(f"was measured for {lut.target}, not {target}", "--lut")
        return _calibrated(lut, model)
    if args.predictor:
        return registry.load(target, args.predictor)
    try:
        return default_predictor(target)
    except LetiError:
        if not is_host_target(target):
            raise
    return _calibrated(_host_lut(target), model)


def _host_lut(target: str):
    """A layer LUT on this machine: the least disturbed of 3 spread-out 10-run measurements of each layer."""
    from leti.workflows.lut_build import LayerLUT

    return LayerLUT(target=target, runs=10, warmup=3, stat="min", repeats=3)


def _calibrated(lut, model):
    """Calibrate a host LUT on the original and 3 random compressed variants (built from the IR: latency does not
    depend on the weights), measured together with their layers."""
    from leti.compression.keras_ir import keras_to_arch
    from leti.compression.plan import calibration_archs

    ka = keras_to_arch(model)
    lut.calibrate_on_host([ka.graph()] + [a.to_graph() for a in calibration_archs(ka)])
    return lut


def describe(predictor, target: str) -> str:
    from leti.workflows.lut_build import LayerLUT

    if isinstance(predictor, LayerLUT):
        return (
            f"predictor: layer LUT measured on this machine ({len(predictor.entries)} layers, {predictor.stat} of "
            f"{predictor.repeats} x {predictor.runs} runs), calibrated on the original and 3 variants: "
            f"x{predictor.scale:.3f}, {predictor.per_layer_ms * 1000:+.1f} us per layer"
        )
    return f"predictor: {getattr(predictor, 'family', type(predictor).__name__)} for {target}"


def _out_of_distribution(predictor, target: str, model, p) -> str:
    """Why the trained predictor's trust data flags the original model or the planned one ('' when it does not, or
    when the predictor has no trust data: a layer LUT measured on this machine prices measured layers only)."""
    from leti.compression.keras_ir import keras_to_arch
    from leti.predictors.base import Predictor
    from leti.trust import load as load_trust

    if not isinstance(predictor, Predictor):
        return ""
    tm = getattr(predictor, "trust_", None)
    if tm is None and getattr(predictor, "path_", None) is not None:
        tm = load_trust(predictor.path_)
    if tm is None:
        return ""
    ka = keras_to_arch(model)
    original, planned = ka.graph(), p.arch.to_graph()
    a = tm.assess([original, planned], predictor.predict([original, planned]))
    if a.in_distribution.all():
        return ""
    layers: dict[str, str] = {}  # Keras layer -> reason, from the original model's nodes
    for i, why in tm.node_reasons(original):
        m = _NODE_RE.search(original.blocks[original.block[i]])
        names = ka.node_layers[int(m[1])] if m and int(m[1]) < len(ka.node_layers) else ()
        for name in names or (original.blocks[original.block[i]],):
            layers.setdefault(name, why)
    parts = [f"{n} ({w})" for n, w in list(layers.items())[:6]]
    more = f" and {len(layers) - 6} more" if len(layers) > 6 else ""
    which = "the model" if not a.in_distribution[0] else "the planned model"
    head = f"{which}: {a.why[0] or a.why[1]}"
    return head + (f"; layers {', '.join(parts)}{more}" if parts else "")


def format_plan(p) -> str:
    """The plan as a text table: one row per edited layer and round, then the totals."""
    head = ("step", "layer", "method", "rank/ratio", "rel.err", "params", "MACs", "saved ms")
    rows = []
    for r in p.table():
        rows.append((str(r["step"]), r["layer"], r["method"], r["setting"], f"{r['rel_error']:.3f}",
                     f"{r['params_before']:,} -> {r['params']:,}", f"{r['macs_before']:,} -> {r['macs']:,}",
                     f"{r['saved_ms']:.3f}"))  # fmt: skip
    if len(p.steps) == 1:
        head, rows = head[1:], [r[1:] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    if not rows:
        lines.append("(no layer needs compressing: the model already meets the budget)")
    status = "meets" if p.meets_budget else "MISSES"
    lines.append(
        f"model: predicted {p.original_ms:.3f} ms -> {p.predicted_ms:.3f} ms ({p.predicted_ms / p.original_ms:.3f}x), "
        f"budget {p.budget.text} = {p.budget_ms:.3f} ms: {status} it; weight error sum {sum(s.weight_error for s in p.steps):.3f}"
    )
    return "\n".join(lines)


def _verify(p, model, compressed, runs: int, warmup: int) -> dict:
    """Measure the original and the compressed model on this machine, in the same round-robin passes."""
    from leti.device_runner.local import settings_for_target
    from leti.tflite.convert import keras_to_tflite
    from leti.workflows.lut_build import LayerLUT

    if not is_host_target(p.target):
        raise LetiError(f"--verify measures on this machine; {p.target} is not a host target", "--verify")
    _, precision = settings_for_target(p.target)
    meter = LayerLUT(p.target, runs=runs, warmup=warmup, stat="min", repeats=3)
    orig, comp = meter.measure_many(
        [keras_to_tflite(model, precision), keras_to_tflite(compressed, precision)]
    )
    budget = p.budget.value * orig if p.budget.kind == "x" else p.budget.value
    return {"original_measured_ms": orig, "compressed_measured_ms": comp, "budget_measured_ms": budget,
            "meets_budget_measured": comp <= budget}  # fmt: skip


def cmd_compress(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from leti.compression.candidates import check_methods
    from leti.compression.plan import apply, parse_budget, plan

    budget = parse_budget(args.latency_budget)  # bad input fails before the model is loaded
    methods = check_methods(args.methods)
    if isinstance(args.steps, bool) or not 1 <= args.steps <= 10:
        raise LetiError(f"must be in 1..10, got {args.steps}", "--steps")
    if args.output and not args.output.endswith(".keras"):
        raise LetiError("must end in .keras", "--output")
    if args.verify and not is_host_target(validate_name(args.target)):
        raise LetiError(f"--verify measures on this machine; {args.target} is not a host target", "--verify")
    model = load_model(args.model)
    predictor = _predictor(args, model)
    p = plan(model, args.target, budget, methods, predictor=predictor, steps=args.steps, solver=args.solver,
             margin=args.margin)  # fmt: skip
    about = describe(predictor, args.target)
    ood = _out_of_distribution(predictor, args.target, model, p)
    if ood and not args.allow_ood:
        raise LetiError(f"the {about.removeprefix('predictor: ')} has not seen what this plan needs, so its "
                        f"predictions here are guesses (pass --allow-ood to plan anyway): {ood}", "plan")  # fmt: skip
    if args.lut:
        Path(args.lut).write_text(json.dumps(predictor.to_dict()))
    out: dict = {"predictor": about, "plan": p.table(), "original_ms": p.original_ms,
                 "predicted_ms": p.predicted_ms, "budget_ms": p.budget_ms, "meets_budget": p.meets_budget,
                 "in_distribution": not ood, "why": ood}  # fmt: skip
    compressed = None
    if args.verify or args.output:
        from leti.compression.keras_surgery import output_error

        compressed = apply(p)
        out["output_error"] = output_error(model, compressed)
    if args.output:
        compressed.save(args.output)
        out["saved"] = args.output
    if args.verify:
        out.update(_verify(p, model, compressed, args.runs, args.warmup))
    if args.json:
        print(json.dumps(out, default=str))
        return 0
    print(about)
    if ood:
        print(f"leti: warning: out of distribution (--allow-ood): {ood}", file=sys.stderr)
    print(format_plan(p))
    if "output_error" in out:
        print(f"output error ||y - y_hat|| / ||y|| on 4 random inputs: {out['output_error']:.4f}")
    if args.verify:
        status = "meets" if out["meets_budget_measured"] else "MISSES"
        print(
            f"measured (LocalRunner, least of 3 x {args.runs} runs): original {out['original_measured_ms']:.3f} ms, "
            f"compressed {out['compressed_measured_ms']:.3f} ms (predicted {p.predicted_ms:.3f} ms); "
            f"budget {out['budget_measured_ms']:.3f} ms: {status} it"
        )
    if args.output:
        print(f"saved {args.output}")
    return 0

"""``leti space sample`` and ``leti space show``: archs of a space, and the layer table of one arch or model."""

from __future__ import annotations

import json

from leti.cli.common import _Parser, _print_json, wide_console
from leti.errors import LetiError


def add_space_parsers(sub) -> None:
    sp = sub.add_parser("space", help="sample and inspect architectures").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = sp.add_parser("sample", help="print N archs as JSON lines with keys hash and arch")
    s.add_argument("--space", required=True, help="nb101, nb201, fbnet or leti")
    s.add_argument("-n", type=int, default=10, help="how many archs")
    s.add_argument("--seed", type=int, default=0, help="sampling seed")
    s.add_argument("--constraints", help='JSON, e.g. {"max_macs": 3e8, "input_size": 96}')
    s.set_defaults(func=cmd_space_sample)
    s = sp.add_parser("show", help="layer table with shapes, MACs and params")
    s.add_argument("arch", help="NB201 string, FBNet blocks, Arch JSON, a .json/.jsonl file, or a model file "
                                "(.tflite, .onnx, .keras, .h5)")  # fmt: skip
    s.add_argument("--space", help="how to read a native string (nb101, nb201, fbnet, leti)")
    s.add_argument(
        "--input-shape", metavar="H,W,C", help="input size of a model file whose input size is not fixed"
    )
    s.add_argument("--prune", action="store_true", help="show the pruned arch")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=cmd_space_show)


def cmd_space_sample(args) -> int:
    from leti.space import sample

    constraints = json.loads(args.constraints) if args.constraints else None
    if constraints is not None and not isinstance(constraints, dict):
        raise LetiError("must be a JSON object", "--constraints")
    for arch, text in sample(args.space, args.n, args.seed, constraints):
        print(json.dumps({"hash": arch.hash, "full_hash": arch.full_hash, "space": arch.space,
                          "native": text, "arch": arch.to_dict()}, separators=(",", ":")))  # fmt: skip
    return 0


def cmd_space_show(args) -> int:
    from rich.table import Table

    from leti.importers.inputs import read_arch_arg

    arch, g = read_arch_arg(args.arch, args.space, args.input_shape)
    if arch is not None and args.input_shape:
        raise LetiError("applies to model files (.tflite, .onnx, .keras, .h5) only", "--input-shape")
    if arch is not None and args.prune:
        arch = arch.prune()
        g = arch.to_graph()
    if args.json:
        _print_json({"hash": arch.hash if arch else None, "totals": g.totals(), "nodes": g.table()})
        return 0
    con = wide_console()
    title = f"{arch.space} arch {arch.hash[:12]}" if arch else f"{g.meta.get('source', 'model')} model"
    t = Table(title=title, show_lines=False)
    for col in ("id", "op", "block", "attrs", "in", "out", "MACs", "params"):
        t.add_column(col, justify="right" if col in ("id", "MACs", "params") else "left")
    for nd in g.nodes():
        attrs = " ".join(f"{k}={v}" for k, v in nd.attrs.items())
        t.add_row(str(nd.id), nd.op + ("" if nd.live else " (dead)"), nd.block, attrs,
                  "x".join(map(str, nd.in_shape)), "x".join(map(str, nd.out_shape)), f"{nd.macs:,}", f"{nd.params:,}")  # fmt: skip
    con.print(t)
    tot = g.totals()
    con.print(
        f"nodes {tot['nodes']}, MACs {tot['macs']:,}, params {tot['params']:,}, "
        f"activations {tot['activation_bytes'] / 2**20:.2f} MiB, peak {tot['peak_bytes'] / 2**20:.2f} MiB, "
        f"depth {tot['depth']}  (MACs count multiply-accumulates; fp32 bytes)"
    )
    return 0

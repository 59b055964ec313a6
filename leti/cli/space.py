"""``leti space sample`` and ``leti space show``: archs of a space, and the layer table of one arch or model."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import json

import leti.cli.args as T
from leti.cli.common import _Parser, _print_json, wide_console
from leti.errors import LetiError


def add_space_parsers(sub) -> None:
    sp = sub.add_parser("space", help="sample and inspect architectures").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = sp.add_parser("sample", help="print N archs as JSON lines with keys hash and arch")
    s.add_argument("--space", required=True, help="nb101, nb201, fbnet or leti")
    s.add_argument("-n", type=T.COUNT, default=10, help="how many archs")
    s.add_argument("--seed", type=T.SEED, default=0, help="sampling seed")
    s.add_argument("--constraints", type=T.JSON_OBJECT, help='JSON, e.g. {"max_macs": 3e8, "input_size": 96}')
    s.set_defaults(func=cmd_space_sample)
    s = sp.add_parser("show", help="layer table with shapes, MACs and params")
    s.add_argument("arch", help="NB201 string, FBNet blocks, Arch JSON, a .json/.jsonl file, or a model file "
                                "(.tflite, .onnx, .keras, .h5)")  # fmt: skip
    s.add_argument("--space", help="how to read a native string (nb101, nb201, fbnet, leti)")
    s.add_argument(
        "--input-shape", metavar="H,W,C", help="input size of a model file whose input size is not fixed"
    )
    s.add_argument("--prune", action="store_true", help="show the pruned arch")
    s.add_argument("--rows", type=T.NONNEG_INT, default=500,
                   help="show at most this many layers (0: all), with the totals of all")  # fmt: skip
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=cmd_space_show)


def cmd_space_sample(args) -> int:
    from leti.space import sample

    for arch, text in sample(args.space, args.n, args.seed, args.constraints):
        print(sample_line(arch, text))
    return 0


def sample_line(arch, text: str) -> str:
    """One arch as ``leti space sample`` prints it (``leti suggest`` too; ``--file`` and ``--train-archs`` read it)."""
    return json.dumps({"hash": arch.hash, "full_hash": arch.full_hash, "space": arch.space, "native": text,
                       "arch": arch.to_dict()}, separators=(",", ":"))  # fmt: skip


def cmd_space_show(args) -> int:
    from rich.table import Table

    from leti.importers.inputs import read_arch_arg

    arch, g = read_arch_arg(args.arch, args.space, args.input_shape)
    if arch is not None and args.input_shape:
        raise LetiError("applies to model files (.tflite, .onnx, .keras, .h5) only", "--input-shape")
    if arch is not None and args.prune:
        arch = arch.prune()
        g = arch.to_graph()
    n = g.n_nodes
    shown = n if args.rows == 0 else min(n, args.rows)  # a 670k-layer table took minutes to print
    if args.json:
        _print_json({"hash": arch.hash if arch else None, "totals": g.totals(), "nodes": g.table(shown),
                     "nodes_shown": shown})  # fmt: skip
        return 0
    con = wide_console()
    title = f"{arch.space} arch {arch.hash[:12]}" if arch else f"{g.meta.get('source', 'model')} model"
    t = Table(title=title, show_lines=False)
    for col in ("id", "op", "block", "attrs", "in", "out", "MACs", "params"):
        t.add_column(col, justify="right" if col in ("id", "MACs", "params") else "left")
    for nd in (g.node(i) for i in range(shown)):
        attrs = " ".join(f"{k}={v}" for k, v in nd.attrs.items())
        t.add_row(str(nd.id), nd.op + ("" if nd.live else " (dead)"), nd.block, attrs,
                  "x".join(map(str, nd.in_shape)), "x".join(map(str, nd.out_shape)), f"{nd.macs:,}", f"{nd.params:,}")  # fmt: skip
    con.print(t)
    if shown < n:
        con.print(
            f"… {n - shown:,} more layers not shown (--rows 0 shows all; --json for machine-readable output)"
        )
    tot = g.totals()
    con.print(
        f"nodes {tot['nodes']}, MACs {tot['macs']:,}, params {tot['params']:,}, "
        f"activations {tot['activation_bytes'] / 2**20:.2f} MiB, peak {tot['peak_bytes'] / 2**20:.2f} MiB, "
        f"depth {tot['depth']}  (MACs count multiply-accumulates; fp32 bytes)"
    )
    return 0

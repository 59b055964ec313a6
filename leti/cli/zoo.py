"""``leti zoo build``: train the pretrained predictors that ship with leti from the public measurement data."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import leti.cli.args as T
from leti.cli.common import _Parser, _print_json
from leti.errors import LetiError
from leti.zoo import FOLDS, SEED, TRAIN_SIZE, ZOO_DIR


def add_zoo_parsers(sub) -> None:
    zp = sub.add_parser("zoo", help="the pretrained predictors shipped with leti").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = zp.add_parser("build", help="train one pretrained predictor per target of the public data (seeded)")
    s.add_argument(
        "-o",
        "--output",
        dest="out",
        default=None,
        help="zoo directory (default: the installed package's leti/zoo)",
    )
    s.add_argument(
        "--data", help="folder with the public CSV files (default $LETI_DATA, else ../shared/data)"
    )
    s.add_argument("--train-size", type=T.TRAIN_SIZE, default=TRAIN_SIZE, help="training archs per target")
    s.add_argument("--seed", type=T.SEED, default=SEED, help="split and CV seed")
    s.add_argument(
        "--folds", type=T.POSITIVE_INT, default=FOLDS, help="cross-validation folds for the family choice"
    )
    s.add_argument("--targets", help="comma-separated targets to build (default: all)")
    s.add_argument(
        "--families", help="comma-separated candidate families (default: auto's, without torch ones)"
    )
    s.add_argument("--json", action="store_true", help="print the built predictors as JSON")
    s.set_defaults(func=cmd_zoo_build)


def cmd_zoo_build(args) -> int:
    import sys

    from leti.zoo.build import build

    if args.train_size < 10:
        raise LetiError(f"must be at least 10, got {args.train_size}", "--train-size")
    if not 2 <= args.folds <= 20:
        raise LetiError(f"must be in 2..20, got {args.folds}", "--folds")
    cands = [[f.strip(), {}] for f in args.families.split(",") if f.strip()] if args.families else None
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None

    def progress(line: str) -> None:
        print(f"leti zoo: {line}", file=sys.stderr, flush=True)

    built = build(args.out or ZOO_DIR, args.data, train_size=args.train_size, seed=args.seed, folds=args.folds,
                  targets=targets, cands=cands, progress=progress)  # fmt: skip
    total = sum(b.bytes for b in built)
    if args.json:
        _print_json({"predictors": [{"target": b.target, "family": b.family, "path": str(b.path), "bytes": b.bytes,
                                     "metrics": b.metrics} for b in built], "total_bytes": total})  # fmt: skip
        return 0
    for b in built:
        print(f"{b.target:30s} {b.family:9s} acc@10 {100 * b.metrics['acc10']:5.1f}%  rho {b.metrics['spearman']:.3f}"
              f"  {b.bytes / 1e6:6.2f} MB  {b.path}")  # fmt: skip
    print(f"{len(built)} pretrained predictors, {total / 1e6:.2f} MB")
    return 0

"""``leti predict`` and ``leti serve``: handlers and parsers, wired into ``leti.cli.main``."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import json
import sys

import leti.cli.args as T
from leti.cli.common import wide_console
from leti.errors import LetiError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


# ---- leti predict --------------------------------------------------------------------------------------------------
def add_predict_parser(sub) -> None:
    s = sub.add_parser("predict", help="predicted latency (ms) of archs on a target")
    s.add_argument(
        "arch",
        nargs="*",
        help="NB201 string, FBNet blocks, NB101 JSON, Arch JSON, a .json file, or a model file "
        "(.tflite, .onnx, .keras, .h5)",
    )
    s.add_argument("--target", required=True, help="e.g. pixel4-tflite2.1-cpu-a76 (leti targets lists them)")
    s.add_argument("--predictor", help="family (xgboost, lut, …); default: the one that answers for the target "
                   "(leti predictors list)")  # fmt: skip
    s.add_argument("--space", help="how to read native strings: nb101, nb201, fbnet or leti")
    s.add_argument("--index", type=T.NONNEG_INT, action="append", metavar="N",
                   help="a NAS-Bench-201 arch by the benchmark's own index, 0..15624 (repeatable; --space nb201)")  # fmt: skip
    s.add_argument(
        "--input-shape", metavar="H,W,C", help="input size of model files whose input size is not fixed"
    )
    s.add_argument("--file", help="JSON lines, one arch each: {space, arch}, Arch JSON or `leti space sample` output "
                                  "('-' reads stdin)")  # fmt: skip
    s.add_argument("--url", help="ask a running `leti serve` instead of loading the predictor here")
    s.add_argument("--token", help="bearer token for --url (default $LETI_TOKEN)")
    s.add_argument("--predictor-root", help="trained predictors (default $LETI_HOME/predictors)")
    s.add_argument("--coverage", type=T.PROBABILITY, default=0.9,
                   help="coverage of the printed intervals, in (0, 1)")  # fmt: skip
    s.add_argument("--json", action="store_true", help='print {"target", "predictor", "latency_ms": [...], '
                   '"interval_ms": [[lo, hi], ...], "in_distribution": [...], "why": [...]}')  # fmt: skip
    s.add_argument("--explain", action="store_true",
                   help="each kernel's predicted ms (a kernel predictor: --predictor kernel)")  # fmt: skip
    s.set_defaults(func=cmd_predict)


def _from_args(args) -> tuple[list, list, list[str], list[str]]:
    """(archs, spaces, where each came from for errors, labels to print)."""
    given = [name for name, v in (("archs", args.arch), ("--file", args.file), ("--index", args.index)) if v]
    if len(given) > 1:
        raise LetiError(f"give archs, --file or --index, not {' and '.join(given)}", "arch")
    from leti.graph.layergraph import LayerGraph
    from leti.importers.inputs import read_arch_arg, read_jsonl, rebase

    if args.index:
        return _indexed(args)
    if args.file:
        if args.input_shape:
            raise LetiError("applies to model files given as arguments, not to --file", "--input-shape")
        archs, spaces, where = read_jsonl(args.file, args.space)
        return archs, spaces, where, [_label(a, s, w) for a, s, w in zip(archs, spaces, where, strict=True)]
    if not args.arch:
        raise LetiError("give one or more archs, --file archs.jsonl or --index N", "arch")
    archs, where = [], []
    for i, text in enumerate(args.arch):
        field = "arch" if len(args.arch) == 1 else f"arch[{i}]"
        try:
            arch, graph = read_arch_arg(text, args.space, args.input_shape)
        except LetiError as e:
            raise e if e.field in ("space", "input_shape") else rebase(e, field) from None
        archs.append(arch if arch is not None else graph)  # a model file gives a graph only
        where.append(field)
    if args.input_shape and all(a is not None and not isinstance(a, LayerGraph) for a in archs):
        raise LetiError("applies to model files (.tflite, .onnx, .keras, .h5) only", "--input-shape")
    return archs, [None] * len(archs), where, list(args.arch)


def _indexed(args) -> tuple[list, list, list[str], list[str]]:
    """NAS-Bench-201 archs by the benchmark's index: labelled ``#1234 |cell|``."""
    from leti.space import canonical_space, nb201

    if args.space is not None and canonical_space(args.space, "--space") != nb201.NAME:
        raise LetiError(f"archs by index exist for nb201 only, not {args.space!r}", "--space")
    archs = [{"space": nb201.NAME, "index": i} for i in args.index]
    where = ["--index" if len(archs) == 1 else f"--index[{k}]" for k in range(len(archs))]
    labels = []
    for i, w in zip(args.index, where, strict=True):
        try:
            labels.append(f"#{i} {nb201.string_of_index(i)}")
        except LetiError as e:
            raise LetiError(e.reason, w) from None
    return archs, [None] * len(archs), where, labels


def _label(arch, space, where: str) -> str:
    """How a row of ``--file`` is shown: its native string (an NB201 cell, FBNet blocks) or, for archs without a
    short one, its space and canonical hash."""
    if isinstance(arch, str) and len(arch) <= 200:
        return arch.strip()
    from leti.importers.inputs import to_arch
    from leti.space import native_text

    try:
        a = to_arch(arch, space)
    except LetiError:
        return where  # reported as an error of its own when predicted
    text = native_text(a)
    return text if not text.startswith(("{", "[")) and len(text) <= 200 else f"{a.space} {a.hash[:16]}"


def cmd_predict(args) -> int:
    from leti.trust import check_coverage

    coverage = check_coverage(args.coverage, "--coverage")
    archs, spaces, where, labels = _from_args(args)
    if args.explain and args.url:
        raise LetiError("--explain runs the predictor here; drop --url", "--explain")
    if args.url:
        from leti.graph.layergraph import LayerGraph
        from leti.service.api import Client, wire_item

        if any(isinstance(a, LayerGraph) for a in archs):
            raise LetiError("a model file cannot be sent to a server; drop --url", "arch")
        items = [wire_item(a, s) for a, s in zip(archs, spaces, strict=True)]
        with Client(args.url, token=args.token) as client:
            res = client.predict_items(items, args.target, args.predictor, coverage)
        res["latency_ms"] = [None if x != x else float(x) for x in res["latency_ms"]]  # NaN (null) -> None
        n = len(res["latency_ms"])
        res.setdefault("interval_ms", [[None, None]] * n)  # an older server sends latencies only
        res.setdefault("in_distribution", [None] * n)
        res.setdefault("why", [""] * n)
        about = f"{res['predictor']}, served by {args.url}"
    else:
        from leti.service.api import predictor_cache

        loaded = predictor_cache().get(args.target, args.predictor, args.predictor_root)
        if args.explain:
            from leti.importers.inputs import graph_of

            graphs = [graph_of(a, s, w, f"{w}: space") for a, s, w in zip(archs, spaces, where, strict=True)]
            return _explain(loaded, graphs, labels, args.json)
        about = f"{loaded.family} v{loaded.version}" + (
            ", pretrained" if loaded.source == "pretrained" else ""
        )
        res = loaded.predict_archs(archs, spaces, where, space_fields=[f"{w}: space" for w in where],
                                   coverage=coverage)  # fmt: skip
    for label, ok, why in zip(labels, res["in_distribution"], res["why"], strict=True):
        if ok is False:  # one line per arch a user should not trust blindly
            print(f"leti: warning: {_short(label, 60)}: out of distribution: {why}", file=sys.stderr)
    if args.json:
        keys = ("target", "predictor", "latency_ms", "interval_ms", "in_distribution", "why")
        print(json.dumps({k: res[k] for k in keys}))
        return 0
    pct = f"{100 * coverage:g}%"
    for value, (lo, hi), ok, label in zip(res["latency_ms"], res["interval_ms"], res["in_distribution"], labels,
                                          strict=True):  # fmt: skip
        v = f"{value:10.4f}" if value is not None else f"{'nan':>10}"
        iv = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else "[-, -]"
        flag = "  OOD" if ok is False else ""
        print(f"{v} ms  {iv:>20}{flag}  {_short(label, 72)}")
    print(
        f"({len(labels)} archs, {res['target']}, predictor {about}, {pct} intervals)",
        file=sys.stderr,
    )
    return 0


def _explain(loaded, graphs, labels: list[str], as_json: bool) -> int:
    """One table per arch: its kernels under the target's fusion rules, each with its predicted ms."""
    explain = getattr(loaded.predictor, "explain", None)
    if explain is None:
        raise LetiError(
            f"the {loaded.family} predictor cannot explain per kernel; use --predictor kernel", "--explain"
        )
    from rich.table import Table

    out = []
    for g, label in zip(graphs, labels, strict=True):
        e = explain(g)
        out.append({"arch": label, **e})
        if as_json:
            continue
        t = Table(title=f"{label if len(label) <= 60 else label[:57] + '...'}: {e['total_ms']:.4f} ms on "
                  f"{loaded.target} ({e['rules']} rules)")  # fmt: skip
        for col in ("#", "kernel", "ops", "in", "out", "k/s/g", "ms", "note"):
            t.add_column(col, justify="right" if col in ("#", "ms") else "left")
        for k in e["kernels"]:
            c = k["config"]
            note = "outside training: " + ", ".join(k["outside"]) if k["outside"] else ""
            t.add_row(str(k["kernel"]), k["type"], "+".join(k["ops"]), f"{c['h_in']}x{c['w_in']}x{c['c_in']}",
                      f"{c['h_out']}x{c['w_out']}x{c['c_out']}", f"{c['k']}/{c['stride']}/{c['groups']}",
                      f"{k['ms']:.4f}", note)  # fmt: skip
        t.add_row("", "overhead", "", "", "", "", f"{e['overhead_ms']:.4f}", "")
        wide_console().print(t)
        if e["kernels_outside_training_ranges"]:
            print(f"leti: warning: {e['kernels_outside_training_ranges']} kernels lie outside what the predictor "
                  "was trained on: their times are extrapolated", file=sys.stderr)  # fmt: skip
    if as_json:
        print(
            json.dumps({"target": loaded.target, "predictor": loaded.family, "explain": out}, default=float)
        )
    return 0


def _short(label: str, width: int) -> str:
    return label if len(label) <= width else label[: width - 3] + "..."


# ---- leti serve ----------------------------------------------------------------------------------------------------
def add_serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="serve predictions over HTTP (FastAPI; docs at /docs)")
    s.add_argument("--host", default="127.0.0.1", help="interface to bind; 127.0.0.1 is this machine only")
    s.add_argument("--port", type=T.PORT, default=8000, help="TCP port (0: any free one)")
    s.add_argument(
        "--token", help="require 'Authorization: Bearer TOKEN' (default $LETI_TOKEN; none if unset)"
    )
    s.add_argument("--max-batch", type=T.POSITIVE_INT, default=10000, help="most archs in one request")
    s.add_argument("--max-body", type=T.BYTES, default=4 << 20,
                   help="most bytes in one request body, chunked or not")  # fmt: skip
    s.add_argument("--predictor-root", help="trained predictors (default $LETI_HOME/predictors)")
    s.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level")  # fmt: skip
    s.set_defaults(func=cmd_serve)


def _fewer_malloc_arenas(n: int = 2) -> None:
    """Ask glibc for at most ``n`` malloc arenas. By default each thread that allocates may get its own (8 per
    core), and memory freed in one is not reused by the others: under concurrent requests the server's resident
    memory grew to several times its working set (benchmarks/bench_service.py --memory). No-op off glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def cmd_serve(args) -> int:
    import uvicorn

    from leti.service.app import create_app, token_from_env

    token = token_from_env(args.token)
    if args.host not in LOOPBACK and not token:
        print(f"leti: warning: serving on {args.host} without a token: anyone who can reach it may use it; "
              "set --token or LETI_TOKEN", file=sys.stderr)  # fmt: skip
    _fewer_malloc_arenas()
    app = create_app(predictor_root=args.predictor_root, store_path=getattr(args, "store", None), token=token,
                     max_batch=args.max_batch, max_body=args.max_body)  # fmt: skip
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"leti: serving on http://{shown}:{port} (docs at /docs)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def _bind(host: str, port: int):
    """A listening socket, bound here so that a busy port is a one-line error rather than uvicorn's exit."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise LetiError(f"cannot resolve {host!r} ({e.strerror})", "--host") from None
    family, kind, proto, _, addr = infos[0]
    # proto must be IPPROTO_TCP (as getaddrinfo gives it), not 0: asyncio sets TCP_NODELAY on accepted connections
    # only then, and without it every response waits ~40 ms for a delayed ACK
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise LetiError(f"cannot bind {host}:{port} ({e.strerror or e})", "--port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock

"""``leti train``, ``leti evaluate``, ``leti report`` and ``leti suggest``: predictors trained and tested on the store,
and the archs to measure first on a new target."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import argparse
import json
import sys
from pathlib import Path

import leti.cli.args as T
from leti.cli.common import _Parser, _print_json, _store, add_store_option, wide_console
from leti.cli.space import sample_line
from leti.errors import LetiError
from leti.predictors.families import FAMILIES


def add_predictors_parsers(sub) -> None:
    s = sub.add_parser("train", help="train a predictor for a target on archs chosen by canonical-hash split; "
                       "saved as a new version")  # fmt: skip
    s.add_argument("--target", required=True, help="a target with measurements in the store")
    s.add_argument("--predictor", required=True, choices=FAMILY_CHOICES, help="the family to train")
    s.add_argument("--train-size", type=T.TRAIN_SIZE, default=None,
                   help="archs to train on (default 900; fewshot: K of the target's measured archs, default 10)")  # fmt: skip
    s.add_argument("--seed", type=T.SEED, default=0, help="split seed")
    s.add_argument("--space", help="only archs of this space")
    s.add_argument(
        "--params", type=T.JSON_OBJECT, help="JSON hyper-parameters, e.g. '{\"n_estimators\": 500}'"
    )
    g = s.add_argument_group("few-shot (--predictor fewshot)")
    g.add_argument(
        "--sources", help="comma-separated source targets (default: every other target of the space)"
    )
    g.add_argument("--train-archs", metavar="FILE",
                   help="train on exactly these archs (JSON lines as `leti space sample` or `leti suggest` prints)")  # fmt: skip
    s.add_argument(
        "--no-trust", action="store_true", help="skip calibrating intervals and out-of-distribution checks"
    )
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser(
        "evaluate", help="test a trained predictor on all the target's archs outside its training set"
    )
    s.add_argument("--target", required=True, help="a target with measurements in the store")
    s.add_argument("--predictor", default=None, help="family (default: the one that answers for the target)")
    s.add_argument("--space", help="only archs of this space")
    s.add_argument(
        "--coverage", type=T.PROBABILITY, default=0.9, help="interval coverage to check, in (0, 1)"
    )
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.add_argument("-o", "--output", dest="plot", metavar="FILE.png",
                   help="write the predicted-vs-measured plot here (y = x, ±10%% band)")  # fmt: skip
    s.add_argument("--plot", dest="plot", help=argparse.SUPPRESS)  # the old name of --output
    s.add_argument("--split", choices=("trained", "family"), default="trained",
                   help="trained: the saved predictor on the archs outside its training set; family: fit a fresh "
                   "predictor leaving each model family out in turn (imported real models)")  # fmt: skip
    s.add_argument("--params", type=T.JSON_OBJECT, help="JSON hyper-parameters for --split family")
    add_store_option(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("report", help="train and evaluate every family on every target of a space")
    s.add_argument("--space", required=True, help="nb101, nb201, fbnet, leti or model")
    s.add_argument("--train-size", type=T.TRAIN_SIZE, default=900, help="training archs per target")
    s.add_argument("--seed", type=T.SEED, default=0, help="split seed")
    s.add_argument("--families", help="comma-separated (default: all)")
    s.add_argument("-o", "--output", dest="out", metavar="DIR",
                   help="write report.html (plots inline), report.md and one PNG plot per target here")  # fmt: skip
    s.add_argument("--out", dest="out", help=argparse.SUPPRESS)  # the old name of --output
    s.add_argument("--json", action="store_true", help="print the rows and the files written as JSON")
    add_store_option(s)
    s.set_defaults(func=cmd_report)

    pr = sub.add_parser("predictors", help="saved predictors: list, show, remove versions").add_subparsers(
        dest="sub", required=True, parser_class=_Parser
    )
    s = pr.add_parser("list", help="every saved version, yours and pretrained, and which one answers")
    s.add_argument("--target", help="only this target")
    s.add_argument(
        "--all", action="store_true", help="older versions too (default: each family's current one)"
    )
    s.add_argument("--predictor-root", help="trained predictors (default $LETI_HOME/predictors)")
    s.add_argument("--json", action="store_true", help="print the results as JSON")
    s.set_defaults(func=cmd_predictors_list)
    s = pr.add_parser("show", help="the meta.json of one predictor (default: the one that answers)")
    s.add_argument("target")
    s.add_argument("--predictor", help="family (default: the one that answers)")
    s.add_argument(
        "--version", type=T.POSITIVE_INT, help="version number (default: the family's current one)"
    )
    s.add_argument("--predictor-root", help="trained predictors (default $LETI_HOME/predictors)")
    s.add_argument("--json", action="store_true", help="all of meta.json")
    s.set_defaults(func=cmd_predictors_show)
    s = pr.add_parser("rm", help="remove a version you trained (the previous one answers again)")
    s.add_argument("target")
    s.add_argument("--predictor", required=True, help="family")
    s.add_argument(
        "--version", type=T.POSITIVE_INT, help="version number (default: every version of the family)"
    )
    s.add_argument("--predictor-root", help="trained predictors (default $LETI_HOME/predictors)")
    s.set_defaults(func=cmd_predictors_rm)

    s = sub.add_parser(
        "suggest", help="the archs to measure first on a new target, for the few-shot predictor"
    )
    s.add_argument("--target", required=True, help="the new target (need not be measured yet)")
    s.add_argument("--space", required=True, help="nb101, nb201, fbnet or leti")
    s.add_argument("-n", type=T.COUNT, default=10, help="how many archs")
    s.add_argument(
        "--sources", help="comma-separated source targets (default: every other target of the space)"
    )
    s.add_argument("--pool", type=T.COUNT, default=2000, help="archs sampled to choose from")
    s.add_argument("--seed", type=T.SEED, default=0, help="sampling seed")
    s.set_defaults(func=cmd_suggest)


FAMILY_CHOICES = FAMILIES
EVALUATE_KEYS = (
    "acc5",
    "acc10",
    "acc20",
    "rmse",
    "mape",
    "r2",
    "spearman",
    "kendall",
    "n_train",
    "n_test",
    "family",
)
TRUST_KEYS = ("coverage", "interval_rel_width", "ood_share")


def _metrics_table(title: str, rows: list[tuple[str, dict]]):
    from rich.table import Table

    t = Table(title=title)
    for col in ("predictor", "acc@5 %", "acc@10 %", "acc@20 %", "RMSE ms", "MAPE %", "R²", "Spearman ρ", "Kendall τ",
                "n_train", "n_test"):  # fmt: skip
        t.add_column(col, justify="left" if col == "predictor" else "right")
    for name, m in rows:
        t.add_row(name, f"{100 * m['acc5']:.1f}", f"{100 * m['acc10']:.1f}", f"{100 * m['acc20']:.1f}",
                  f"{m['rmse']:.3f}", f"{100 * m['mape']:.1f}", f"{m['r2']:.3f}", f"{m['spearman']:.3f}",
                  f"{m['kendall']:.3f}", str(m.get("n_train", "")), str(m.get("n_test", "")))  # fmt: skip
    return t


def sources_arg(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise LetiError(f"must be comma-separated target names, got {text!r}", "--sources")
    return names


def _train_archs(path: str, space: str | None) -> list:
    """(Arch, where) per line of a JSON-lines file; errors name the file and line."""
    from leti.importers.inputs import read_jsonl, rebase, to_arch

    archs, spaces, where = read_jsonl(path, space)
    out = []
    for a, s, w in zip(archs, spaces, where, strict=True):
        try:
            out.append((to_arch(a, s), w))
        except LetiError as e:
            raise rebase(e, w) from None
    return out


def cmd_train(args) -> int:
    from leti.predictors.evaluate import train
    from leti.predictors.registry import make, resolve

    params = args.params
    make(args.predictor, **(params or {}))  # bad hyper-parameters are reported before the store is opened
    fewshot = args.predictor == "fewshot"
    if not fewshot and (args.sources or args.train_archs):
        raise LetiError(
            "applies to --predictor fewshot only", "--sources" if args.sources else "--train-archs"
        )
    if args.train_archs and args.train_size is not None:
        raise LetiError("give --train-size or --train-archs, not both", "--train-archs")
    size = args.train_size if args.train_size is not None else (10 if fewshot else 900)
    kwargs = {}
    if fewshot:
        kwargs["sources"] = sources_arg(args.sources)
        if args.train_archs:
            kwargs["train_archs"] = _train_archs(args.train_archs, args.space)
    pred, meta = train(_store(args, create=False), args.target, args.predictor, size, args.seed, params, args.space,
                       save=True, trust=not args.no_trust, **kwargs)  # fmt: skip
    m = {**meta["metrics"], "n_train": meta["n_train"], "n_test": meta["n_test"]}
    answers = resolve(args.target)
    if args.json:
        out = {k: v for k, v in meta.items() if k != "train_hashes"}
        out["answers"] = {"family": answers.family, "version": answers.version, "source": answers.source}
        _print_json(out)
        return 0
    if not meta["metrics"]:
        print(f"{args.target}: trained {args.predictor} on all {meta['n_train']} measured archs in "
              f"{meta['fit_seconds']:.1f}s; none left to test it on")  # fmt: skip
        return 0
    name = args.predictor + (f" ({meta['auto_chosen']['family']})" if args.predictor == "auto" else "")
    wide_console().print(_metrics_table(f"{args.target}: trained {name} in {meta['fit_seconds']:.1f}s, "
                                    f"tested on held-out archs", [(name, m)]))  # fmt: skip
    if "coverage" in meta.get("trust", {}):
        t = meta["trust"]
        print(f"90% intervals cover {100 * t['coverage']:.1f}% of the held-out archs (median width "
              f"{100 * t['interval_rel_width']:.1f}% of the prediction); {100 * t['ood_share']:.1f}% flagged out of "
              f"distribution")  # fmt: skip
    print(saved_line(meta, answers))
    return 0


def saved_line(meta: dict, answers) -> str:
    """Where ``leti train`` saved the predictor, what it kept, and which predictor now answers."""
    v = meta["version"]
    kept = f"; v{v - 1} and older kept (leti predictors list --all)" if v > 1 else ""
    sel = meta.get("selection") or {}
    on = (
        f" (best acc@10 on {sel['n_test']} archs held out from every trained predictor)"
        if sel.get("n_test")
        else ""
    )
    return (
        f"saved {meta['family']} v{v} to {meta['path']}{kept}\n"
        f"leti predict --target {meta['target']} now answers with {answers.family} v{answers.version}{on}"
    )


def _predictor_rows(rows) -> list[dict]:
    out = []
    for r in rows:
        m = r.meta.get("metrics") if isinstance(r.meta.get("metrics"), dict) else {}
        out.append({**r.summary(), "acc10": m.get("acc10"), "spearman": m.get("spearman"),
                    "chosen": (r.meta.get("auto_chosen") or {}).get("family") if r.family == "auto" else None})  # fmt: skip
    return out


def cmd_predictors_list(args) -> int:
    from leti.predictors.registry import saved

    problems: dict[str, str] = {}
    rows = [r for r in saved(args.target, args.predictor_root, problems=problems) if args.all or r.current]
    data = _predictor_rows(rows)
    if args.json:
        _print_json({"predictors": data, "problems": problems})
        return 0
    from rich.table import Table

    t = Table(title="saved predictors (* answers for its target)")
    for col in ("", "target", "family", "version", "source", "n_train", "acc@10 %", "ρ", "trained at"):
        t.add_column(col, justify="right" if col in ("version", "n_train", "acc@10 %", "ρ") else "left")
    for r in data:
        fam = r["family"] + (f" ({r['chosen']})" if r["chosen"] else "")
        acc = f"{100 * r['acc10']:.1f}" if isinstance(r["acc10"], int | float) else "-"
        rho = f"{r['spearman']:.3f}" if isinstance(r["spearman"], int | float) else "-"
        ver = f"v{r['version']}" + ("" if r["current"] else " (old)")
        t.add_row("*" if r["answers"] else "", r["target"], fam, ver, r["source"], str(r["n_train"] or "-"), acc,
                  rho, str(r["trained_at"] or "-"))  # fmt: skip
    con = wide_console()
    if data:
        con.print(t)
    else:
        print(
            "no saved predictors"
            + (f" for {args.target}" if args.target else "")
            + "; train one with leti train"
        )
    for where, why in sorted(problems.items()):
        print(f"leti: warning: {where}: {why}", file=sys.stderr)
    return 0


def cmd_predictors_show(args) -> int:
    from leti.predictors.registry import resolve

    hit = resolve(args.target, args.predictor, args.predictor_root, args.version)
    if args.json:
        _print_json({**hit.meta, **hit.summary()})
        return 0
    meta = hit.meta
    lines = [f"{hit.target} {hit.family} v{hit.version} ({hit.source}){'  answers for its target' if hit.answers else ''}",
             f"path: {hit.path}"]  # fmt: skip
    for key in ("source_data", "licence", "protocol", "train_size", "seed", "split", "space", "n_train", "n_test",
                "trained_at", "auto_chosen", "selection"):  # fmt: skip
        if meta.get(key) not in (None, {}, ""):
            lines.append(f"{key}: {json.dumps(meta[key], sort_keys=True, default=str)}")
    m = meta.get("metrics")
    if isinstance(m, dict) and m:
        lines.append("test metrics: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                  for k, v in sorted(m.items())))  # fmt: skip
    print("\n".join(lines))
    return 0


def cmd_predictors_rm(args) -> int:
    from leti.predictors.registry import remove, resolve

    gone = remove(args.target, args.predictor, args.version, args.predictor_root)
    for d in gone:
        print(f"removed {d}")
    try:
        now = resolve(args.target, root=args.predictor_root)
        print(
            f"leti predict --target {args.target} now answers with {now.family} v{now.version} ({now.source})"
        )
    except LetiError:
        print(f"no predictor is left for {args.target}")
    return 0


def cmd_evaluate(args) -> int:
    from leti.predictors.evaluate import evaluate

    if args.split == "family":
        return _evaluate_by_family(args)
    from leti.trust import check_coverage

    coverage = check_coverage(args.coverage, "--coverage")
    store = _store(args, create=False)
    m = evaluate(store, args.target, args.predictor, space=args.space, return_predictions=bool(args.plot),
                 coverage=coverage)  # fmt: skip
    if args.plot:
        from leti.predictors.render import plot

        y_true, y_pred = m.pop("y_true"), m.pop("y_pred")
        plot(y_true, y_pred, args.plot, args.target, m["family"], note=f"trained on {m['n_train']}")
    if args.json:
        _print_json({k: m[k] for k in (*EVALUATE_KEYS, *TRUST_KEYS) if k in m})
        return 0
    rec = store.get_target(args.target)
    floor = (
        f"; target noise floor {100 * rec.noise_floor:.1f}%" if rec and rec.noise_floor is not None else ""
    )
    wide_console().print(_metrics_table(f"{args.target}: {m['family']} on {m['n_test']} archs outside its training set"
                                    f"{floor}", [(m["family"], m)]))  # fmt: skip
    if "coverage" in m:
        print(f"{100 * coverage:g}% intervals cover {100 * m['coverage']:.1f}% (median width "
              f"{100 * m['interval_rel_width']:.1f}% of the prediction); {100 * m['ood_share']:.1f}% flagged out of "
              f"distribution")  # fmt: skip
    else:
        print("no trust data saved with this predictor (retrain it for intervals and flags)")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _evaluate_by_family(args) -> int:
    from leti.predictors.family_split import evaluate_by_family

    if args.predictor is None:
        raise LetiError("name the family to evaluate with --split family", "--predictor")
    if args.predictor not in FAMILIES:
        raise LetiError(
            f"unknown predictor family {args.predictor!r} (known: {', '.join(FAMILIES)})", "--predictor"
        )
    params = args.params
    store = _store(args, create=False)  # after the arguments: a bad one is reported whatever the store
    m = evaluate_by_family(store, args.target, args.predictor, params, return_predictions=bool(args.plot))
    if args.plot:
        from leti.predictors.render import plot

        y_true, y_pred = m.pop("y_true"), m.pop("y_pred")
        m.pop("models", None)
        plot(y_true, y_pred, args.plot, args.target, m["family"], note="leave-one-family-out")
    if args.json:
        _print_json({k: m[k] for k in (*EVALUATE_KEYS, "split", "n_families", "kernel_measurements")})
        return 0
    title = (f"{args.target}: {m['family']}, leave-one-family-out over {m['n_families']} families "
             f"({m['n_test']} models)")  # fmt: skip
    wide_console().print(_metrics_table(title, [(m["family"], m)]))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def cmd_report(args) -> int:
    from leti.predictors.evaluate import report_page
    from leti.predictors.render import markdown

    families = args.families.split(",") if args.families else None
    kwargs = {"families": families} if families else {}
    from rich.console import Console
    from rich.progress import Progress

    store = _store(args, create=False)
    with Progress(console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(f"report on {args.space}", total=None)

        def progress(row, done, total):
            prog.update(task, completed=done, total=total,
                        description=f"{row.target} {row.family}: acc@10 {100 * row.metrics['acc10']:.1f}%")  # fmt: skip

        page = report_page(store, args.space, args.train_size, out_dir=args.out, seed=args.seed, progress=progress,
                           **kwargs)  # fmt: skip
    files = {}
    if args.out:
        out = Path(args.out)
        files = {"markdown": str(out / "report.md"), "html": str(out / "report.html"),
                 "plots": {t: str(png) for t, (_, png) in page.plots.items()}}  # fmt: skip
    if args.json:
        _print_json({"space": page.space, "train_size": page.train_size, "seed": page.seed,
                     "rows": [r.to_dict() for r in page.rows], "files": files})  # fmt: skip
        return 0
    print(markdown(page, images=False))
    if args.out:
        print(f"wrote {files['html']} (plots inline), {files['markdown']} and one plot per target")
    return 0


def cmd_suggest(args) -> int:
    from leti.predictors.fewshot_data import suggest_archs

    picks = suggest_archs(_store(args), args.target, args.space, args.n, sources_arg(args.sources), args.pool,
                          args.seed)  # fmt: skip
    for arch, text in picks:
        print(sample_line(arch, text))
    return 0

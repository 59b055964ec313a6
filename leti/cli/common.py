"""What every verb shares: the one-line-error parser, the dispatcher, consoles and JSON output."""

from __future__ import annotations

# leti imports that load numpy/pandas stay inside the functions: `leti --help` must start fast (issue 15).
import argparse
import json
import os
import sys

import leti.cli.args as T
from leti.errors import LetiError, excerpt, missing_extra
from leti.measurement import DEFAULT_RUNS, DEFAULT_WARMUP

EXIT_BAD_INPUT = 2


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        # identity, not equality: a default of 0 or 0.0 is shown, only None / False (flags) / SUPPRESS are not
        shown = not any(default is x for x in (None, False, argparse.SUPPRESS))
        if shown and action.option_strings and "%(default)" not in text and "default" not in text.lower():
            text += (" " if text else "") + "(default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (via LetiError) instead of usage text + message, and shows
    the defaults in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise LetiError(message, self.prog.replace("leti ", "", 1) if self.prog != "leti" else None)


STORE_HELP = (
    "measurement store: a path, sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
    "(default $LETI_STORE, else $LETI_HOME/leti.db; LETI_HOME=~/.leti)"
)


def add_store_option(p: argparse.ArgumentParser, top: bool = False) -> None:
    """``--store``, accepted before the verb (``top``) and after it; the later one wins."""
    p.add_argument("--store", metavar="STORE", help=STORE_HELP, default=None if top else argparse.SUPPRESS)


def _store(args, create: bool = True):
    """The store a command names. ``create=False`` (read-only commands): a location without a store is an error."""
    from leti.datasets.store import Store

    return Store.open(getattr(args, "store", None), create=create)


def add_timing_args(parser, what: str = "") -> None:
    """``--runs`` and ``--warmup``, with the same defaults on every command that measures."""
    parser.add_argument(
        "--runs", type=T.POSITIVE_INT, default=DEFAULT_RUNS, help=f"{what}timed runs per measurement"
    )
    parser.add_argument(
        "--warmup", type=T.NONNEG_INT, default=DEFAULT_WARMUP, help=f"{what}untimed runs before them"
    )


def wide_console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns and squeeze the tables
        console = Console(width=160)
    return console


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, sort_keys=True, default=str))


EXIT_INTERNAL = 1


def run_parser(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and dispatch. Bad input (any ``LetiError``) is one ``leti: error: <field>: <reason>`` line and exit 2;
    anything else is a bug: one ``leti: internal error`` line asking for a report and exit 1, with the traceback
    only under ``--debug`` (or ``LETI_DEBUG=1``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("LETI_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line, not only before the verb
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except LetiError as e:
        print(f"leti: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ImportError as e:  # an optional package this installation lacks: say which extra brings it
        err = missing_extra(e)
        if err is None:
            raise
        print(f"leti: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("leti: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit:  # --help, --version
        raise
    except BaseException as e:  # noqa: BLE001 (the last line of defence: never a bare traceback)
        if debug:
            import traceback

            traceback.print_exc()
        what = excerpt(f"{type(e).__name__}: {e}", 200)
        print(f"leti: internal error ({what}); this is a bug in leti: please report it, with the output of the same "
              "command run with --debug", file=sys.stderr)  # fmt: skip
        return EXIT_INTERNAL

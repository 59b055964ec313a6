"""The ``leti`` command. Bad input prints one line, ``leti: error: <field>: <reason>``, and exits with status 2.

Each group of verbs lives in its own module with its parser and handlers; this one only assembles the parser and
dispatches. Heavy libraries (TensorFlow, torch, boosting) are imported inside the handlers that need them, so that
``leti --help`` and light commands start instantly.
"""

from __future__ import annotations

import argparse
import os
import sys

from leti import __version__
from leti.cli.common import _Parser, add_store_option, run_parser
from leti.cli.compress import add_compress_parser
from leti.cli.dataset import add_dataset_parsers
from leti.cli.farm import add_farm_parser
from leti.cli.kernels import add_kernels_parsers
from leti.cli.measure import add_measure_parsers
from leti.cli.predict import add_predict_parser, add_serve_parser
from leti.cli.predictors import add_predictors_parsers
from leti.cli.space import add_space_parsers
from leti.cli.zoo import add_zoo_parsers


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="leti", description="Estimate neural-network latency on phones and boards.")
    p.add_argument("--version", action="version", version=f"leti {__version__}")
    add_store_option(p, top=True)
    p.add_argument("--debug", action="store_true", help="on an internal error, print the traceback")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_space_parsers(sub)
    add_dataset_parsers(sub)
    add_measure_parsers(sub)
    add_kernels_parsers(sub)
    add_predictors_parsers(sub)
    add_predict_parser(sub)
    add_serve_parser(sub)
    add_compress_parser(sub)
    add_farm_parser(sub)
    add_zoo_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # shell completion (register-python-argcomplete leti): answers and exits
        try:
            import argcomplete
        except ImportError:
            return 0
        argcomplete.autocomplete(parser)
    return run_parser(parser, argv)


if __name__ == "__main__":
    sys.exit(main())

"""The command line as people expect it: --version, every option's default in its help, one name per idea,
-o/--output for output paths, --json where results are printed, the same --runs/--warmup defaults, and shell
completion through argcomplete."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leti import __version__
from leti.cli import main
from leti.cli.main import build_parser
from leti.measurement import DEFAULT_RUNS, DEFAULT_WARMUP, Settings

ROOT = Path(__file__).resolve().parents[1]


def _commands(parser=None, path=("leti",)):
    """(command path, parser) of every command, sub-commands included."""
    parser = parser or build_parser()
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _commands(sp, (*path, name))


def _options(parser):
    return [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction | argparse._VersionAction)]  # fmt: skip


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"leti {__version__}"


def test_every_option_has_help_showing_its_default():
    missing, no_default = [], []
    for path, p in _commands():
        text = p.format_help()
        for a in _options(p):
            if not a.help:
                missing.append(f"{' '.join(path)} {a.option_strings[-1]}")
            has_default = not any(a.default is x for x in (None, False, argparse.SUPPRESS))
            if has_default and f"default: {a.default}" not in " ".join(text.split()):
                no_default.append(f"{' '.join(path)} {a.option_strings[-1]}={a.default!r}")
    assert missing == [] and no_default == []


def _option(path, name):
    parser = dict(_commands())[path]
    return next((a for a in _options(parser) if name in a.option_strings), None)


@pytest.mark.parametrize("path", [("leti", "generate"), ("leti", "bench"), ("leti", "lut", "build"),
                                  ("leti", "kernels", "build"), ("leti", "compress")])  # fmt: skip
def test_runs_and_warmup_have_one_default(path):
    assert _option(path, "--runs").default == DEFAULT_RUNS == Settings().runs
    assert _option(path, "--warmup").default == DEFAULT_WARMUP == Settings().warmup


@pytest.mark.parametrize("path", [("leti", "dataset", "export"), ("leti", "evaluate"), ("leti", "report"),
                                  ("leti", "compress"), ("leti", "zoo", "build")])  # fmt: skip
def test_output_paths_are_o_output(path):
    a = _option(path, "--output")
    assert a is not None and "-o" in a.option_strings


@pytest.mark.parametrize("path", [("leti", "report"), ("leti", "import"), ("leti", "dataset", "export"),
                                  ("leti", "lut", "build"), ("leti", "kernels", "build"), ("leti", "train"),
                                  ("leti", "evaluate"), ("leti", "predict"), ("leti", "targets"),
                                  ("leti", "predictors", "list"), ("leti", "zoo", "build")])  # fmt: skip
def test_commands_that_print_results_have_json(path):
    assert _option(path, "--json") is not None


def test_one_name_for_the_predictor_family():
    for path, p in _commands():
        names = {s for a in _options(p) for s in a.option_strings}
        assert "--family" not in names, path  # the family of a predictor is --predictor everywhere
    assert _option(("leti", "compress"), "--predictor") is not None
    # the old name still parses
    args = build_parser().parse_args(["compress", "m.keras", "--target", "t", "--latency-budget", "0.5x",
                                      "--family", "lut"])  # fmt: skip
    assert args.predictor == "lut"


def test_shell_completion(tmp_path):
    pytest.importorskip("argcomplete")
    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": "leti pred", "COMP_POINT": "9", "COMP_TYPE": "9",
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "PYTHONPATH": str(ROOT)}  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "leti.cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    words = out.read_text().split()
    assert "predict" in words and "predictors" in words and "train" not in words


def test_queue_flag_defaults_mirror_the_queue():
    """The CLI mirrors the queue's defaults (importing the queue would slow `leti --help`): they must agree."""
    from leti.cli import measure
    from leti.datasets import queue

    assert measure.DEFAULT_LEASE_S == queue.DEFAULT_LEASE_S
    assert measure.DEFAULT_MAX_ATTEMPTS == queue.DEFAULT_MAX_ATTEMPTS
    assert _option(("leti", "farm", "worker"), "--lease").default == queue.DEFAULT_LEASE_S
    assert _option(("leti", "generate"), "--lease").default == queue.DEFAULT_LEASE_S

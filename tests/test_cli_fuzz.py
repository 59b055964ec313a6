"""Property-based fuzzing of every ``leti`` verb (issue 11): each verb's parser, driven with generated garbage
flags, values, positionals, files and stdin, answers with exit 2 and one ``leti: error:`` line, or succeeds; never a
traceback, an internal error, a signal or a hang. The verbs are read from the parser itself, so a new verb or flag
is fuzzed without a change here."""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import leti.cli.args as T
from leti.cli.main import build_parser, main

TIMEOUT_S = 60  # per example; parsing and refusing take milliseconds, a hang takes forever
# verbs whose exit status 1 is an answer, not an error: well-formed but unreachable devices, jobs left to measure
EXIT_1_MEANS = {("devices",): "a device is unreachable", ("generate",): "jobs remain"}


def verbs(parser: argparse.ArgumentParser, path=()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(words, parser) of every leaf verb: ``("space", "sample")``, ``("train",)``, …"""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    out = []
    for name, sub in subs[0].choices.items():
        out += verbs(sub, (*path, name))
    return out


VERBS = verbs(build_parser())


def test_every_numeric_flag_has_a_checked_type():
    """Every flag that takes a number uses a type from leti.cli.args (a range checked while parsing), never a bare
    int or float; every JSON flag the bounded reader."""
    seen = 0
    for words, p in VERBS:
        for a in p._actions:
            if a.type in (int, float):
                raise AssertionError(f"leti {' '.join(words)} {a.option_strings}: bare {a.type.__name__}")
            if a.type in T.NUMERIC_TYPES or a.type is T.JSON_OBJECT:
                seen += 1
    assert seen >= 30


# ---- garbage ---------------------------------------------------------------------------------------------------------
NASTY = [
    "", " ", "-1", "0", "1", "2", "-0", "nan", "NaN", "inf", "-inf", "1e400", "1e-400", "99999999999999999999",
    "0x10", "1_000", "3.5", "abc", "{bad", "[", "}", "{}", "[]", "null", '"abc"', '{"max_tries":"abc"}',
    '{"max_tries":1e400}', '{"n_estimators":-1}', '{"n_jobs":100000}', '{"input_size":[0,0]}', '{"bogus":1}',
    "[" * 5000 + "]" * 5000, '{"a":' * 3000 + "1" + "}" * 3000, "x" * 10_000, "\udcff\udcfe", "\x00",
    "host-litert-cpu-1t@tcp:host:99999", "pixel4-tflite-cpu-4t@usb:a;b", "pixel4-tflite-cpu-4t@tcp:",
    "nokia-tflite-cpu", "Pixel 4!", "../../etc/passwd", "/nonexistent/dir/x.csv", "/dev/null", "-",
    "1.2.3.4:99999", "usb:a;b", "nb201", "leti", "nb999", "|nor_conv_3x3~0|+|bad|", "lut", "xgboost",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|",
]  # fmt: skip
FILE_CONTENTS = [
    b"", b"\xff\xfe\x00\x01garbage", b"[" * 100_000 + b"]" * 100_000, b'{"adjacency": [[0, NaN]]}', b"{bad\n",
    b'{"space": "nb201", "arch": "|bad|"}\n', b"space,arch,target,latency_ms,source\nnb201,x,t,abc,s\n",
    b"\x00" * 64, b'{"arch": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
]  # fmt: skip
VALUE = st.sampled_from(NASTY) | st.text(max_size=40) | st.integers(-(10**30), 10**30).map(str)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("garbage")
    out = []
    for i, data in enumerate(FILE_CONTENTS):
        for suffix in (".json", ".jsonl", ".csv", ".tflite", ".keras"):
            f = d / f"g{i}{suffix}"
            f.write_bytes(data)
            out.append(str(f))
    out.append(str(d))  # a directory where a file is expected
    return out


@pytest.fixture
def no_servers(monkeypatch):
    """``leti serve`` with acceptable flags would serve forever: here it returns once it would start serving, and
    leaves logging alone (uvicorn's handlers would keep writing to this test's captured stderr after it closed)."""
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.setattr(uvicorn.Config, "configure_logging", lambda self: None)


def argv_for(draw, words, parser, files) -> list[str]:
    argv = list(words)
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    required = [a for a in options if a.required]
    # the required flags, usually: garbage then reaches the handlers, not only argparse
    chosen = (required if draw(st.integers(0, 9)) else []) + (
        draw(st.lists(st.sampled_from(options), max_size=5)) if options else []
    )
    for a in chosen:
        argv.append(draw(st.sampled_from(a.option_strings)))
        if a.nargs != 0:
            argv.append(draw(VALUE | st.sampled_from(files)))
    for a in (a for a in parser._actions if not a.option_strings):
        n = draw(st.integers(0 if a.nargs in ("*", "?") else 1, 2))
        argv += [draw(VALUE | st.sampled_from(files)) for _ in range(n)]
    if draw(st.booleans()):
        argv = draw(st.permutations(argv))  # flags before the verb, values without their flag, …
    return argv


@pytest.mark.parametrize("words", [w for w, _ in VERBS], ids=[" ".join(w) for w, _ in VERBS])
def test_garbage_is_refused_in_one_line(words, files, no_servers, monkeypatch, tmp_path):
    parser = dict(VERBS)[words]
    monkeypatch.chdir(tmp_path)  # whatever a command writes lands here

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.data(), st.sampled_from(FILE_CONTENTS))
    def run(data, stdin):
        argv = argv_for(data.draw, words, parser, files)

        class Stdin:
            buffer = io.BytesIO(stdin)

            @staticmethod
            def read():
                return stdin.decode("utf-8", "surrogateescape")

        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdin", Stdin())
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(TIMEOUT_S)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except SystemExit as e:  # --help
            code = e.code
        except Hang:
            raise AssertionError(f"leti {[a[:80] for a in argv]!r} did not finish in {TIMEOUT_S} s") from None
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        text = err.getvalue()
        argv = [
            a if len(a) < 80 else a[:60] + f"…({len(a)} chars)" for a in argv
        ]  # readable failure messages
        assert "Traceback" not in text and "internal error" not in text, (argv, text[-2000:])
        assert code in (0, 2, None) or (code == 1 and words in EXIT_1_MEANS), (argv, code, text[-2000:])
        if code == 2:
            lines = text.strip().splitlines()
            assert lines and lines[-1].startswith("leti: error: ") and len(lines[-1]) < 1200, (
                argv,
                text[-2000:],
            )

    run()

"""The one JSON reader for outside input (issue 11): too deep, too large, not UTF-8, NaN or out-of-range numbers
are each one ``LetiError`` line naming the input, never a RecursionError or UnicodeDecodeError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leti.errors import LetiError
from leti.importers.bounded_json import depth, load_file, loads


@pytest.mark.parametrize("data, words", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[" * 65 + "]" * 65, "nested too deeply"),
    (b"\xff\xfe[1]", "not UTF-8"),
    ('{"max_tries": 1e400}', "too large a number"),
    ("[NaN]", "NaN"),
    ("[-Infinity]", "Infinity"),
    ("1" * 5000, "not valid JSON"),
    ("{bad", "not valid JSON"),
    ("", "not valid JSON"),
])  # fmt: skip
def test_bad_json_is_one_line(data, words):
    with pytest.raises(LetiError, match=words) as e:
        loads(data, "--constraints")
    assert str(e.value).startswith("--constraints: ") and "\n" not in str(e.value) and len(str(e.value)) < 600


def test_limits_and_good_json(tmp_path):
    assert loads("[" * 64 + "]" * 64, "x") == loads("[" * 64 + "]" * 64, "x")
    assert loads('{"a": [1, 2.5, "é"]}', "x") == {"a": [1, 2.5, "é"]}
    with pytest.raises(LetiError, match="bytes of JSON"):
        loads("[" + "0," * 100 + "0]", "x", max_bytes=50)
    f = tmp_path / "a.json"
    f.write_bytes(b'{"ok": true}')
    assert load_file(f) == {"ok": True}
    with pytest.raises(LetiError, match="no such file"):
        load_file(tmp_path / "none.json")
    with pytest.raises(LetiError, match="directory"):
        load_file(tmp_path)
    f.write_bytes(b"x" * 100)
    with pytest.raises(LetiError, match="larger than"):
        load_file(f, max_bytes=10)
    assert depth({"a": [[1], {"b": []}]}, 10) == 4 and depth(5, 10) == 0


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=200) | st.text(alphabet='[]{}":,0123456789.eE+-nulltrueNaI \\', max_size=200))
def test_garbage_is_json_or_one_line(data):
    try:
        loads(data, "x")
    except LetiError as e:
        assert "\n" not in str(e)

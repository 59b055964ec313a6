"""The measurement CSV exchange format: strict reading, round-trips, and idempotent import into the store."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from leti.datasets.csvio import (
    CsvRow,
    import_csv,
    read_measurement_csv,
    write_measurement_csv,
)
from leti.datasets.store import ArchRecord, Store
from leti.errors import ArchError, LetiError
from leti.space import canonical_space

DATA = Path("/work/shared/data")
HEADER = "space,arch,target,latency_ms,source\n"
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
LETI_ARCH = json.dumps(
    {"adjacency": [[0, 1], [0, 0]], "layers": [{"op": "conv", "k": 3}], "note": 'a "quoted", b'}
)


def standin_parse(space: str, text: str) -> ArchRecord:
    """A trivial parser: arch_id = sha1 of the text; the 'pruned' hash ignores 'none' ops, like dead branches."""
    arch_id = hashlib.sha1(f"{space}:{text}".encode()).hexdigest()
    pruned = hashlib.sha1(text.replace("none", "").encode()).hexdigest()
    return ArchRecord(arch_id, pruned, space, text, json.dumps({"text": text}))


def write(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "leti.db") as s:
        yield s


def test_space_aliases():
    assert canonical_space("nb201") == "nasbench201"
    assert canonical_space("NB101") == "nasbench101"
    assert [canonical_space(s) for s in ("fbnet", "leti")] == ["fbnet", "leti"]
    with pytest.raises(LetiError, match=r"^space: 'darts' is not a known space"):
        canonical_space("darts")
    with pytest.raises(LetiError, match=r"^cli\.space:"):
        canonical_space("darts", field="cli.space")


def test_round_trip_with_quoted_json_arch(tmp_path):
    rows = [
        CsvRow("nasbench201", NB201, "pixel3-tflite-cpu", 17.238100000000003, "HELP"),
        CsvRow("leti", LETI_ARCH, "host-litert-cpu-1t", 0.1 + 0.2, ""),
        CsvRow("fbnet", "k3_e6,k5_e1_g2,skip", "sd855-gpu", 1e-3, "mine"),
        {"space": "nb101", "arch": "[[0,1],[0,0]]|input,output", "target": "sd855-cpu", "latency_ms": "4.5"},
    ]
    path = tmp_path / "sub" / "out.csv"
    assert write_measurement_csv(path, rows) == 4
    back = list(read_measurement_csv(path))
    assert [(r.space, r.arch, r.target, r.latency_ms, r.source) for r in back] == [
        ("nasbench201", NB201, "pixel3-tflite-cpu", 17.238100000000003, "HELP"),
        ("leti", LETI_ARCH, "host-litert-cpu-1t", 0.1 + 0.2, ""),
        ("fbnet", "k3_e6,k5_e1_g2,skip", "sd855-gpu", 1e-3, "mine"),
        ("nasbench101", "[[0,1],[0,0]]|input,output", "sd855-cpu", 4.5, ""),
    ]
    assert [r.line for r in back] == [2, 3, 4, 5]
    assert path.read_text().startswith(HEADER)


def test_writer_refuses_rows_the_reader_would_refuse(tmp_path):
    with pytest.raises(LetiError, match=r"^row 1, column latency_ms:"):
        write_measurement_csv(
            tmp_path / "x.csv", [("nb201", NB201, "a-cpu", 1.0), ("nb201", NB201, "a-cpu", -2)]
        )
    assert not (tmp_path / "x.csv").exists()


def test_header_order_extra_columns_bom_and_blank_lines(tmp_path):
    text = (
        "\ufeffnote,latency_ms,target,arch,space\n\nx,1.5,sd855-cpu,abc,nb201\n\n y ,2.5,sd855-cpu,def,leti\n"
    )
    rows = list(read_measurement_csv(write(tmp_path, text)))
    assert [(r.space, r.arch, r.latency_ms, r.source, r.line) for r in rows] == [
        ("nasbench201", "abc", 1.5, "", 3),
        ("leti", "def", 2.5, "", 5),
    ]


def test_line_numbers_follow_multiline_quoted_fields(tmp_path):
    arch = '{"a":\n 1,\n "b": 2}'
    text = HEADER + f'leti,"{arch.replace(chr(34), chr(34) * 2)}",x-cpu,1.0,s\nleti,abc,x-cpu,oops,s\n'
    with pytest.raises(LetiError, match=r"^line 5, column latency_ms: 'oops' is not a positive number$"):
        list(read_measurement_csv(write(tmp_path, text)))


GOOD = f"nasbench201,{NB201},pixel3-tflite-cpu,3.5,src\n"
MALFORMED = [
    (
        "nasbench201,abc,pixel3-tflite-cpu,abc,s\n",
        "line 3, column latency_ms: 'abc' is not a positive number",
    ),
    ("nasbench201,abc,pixel3-tflite-cpu,0,s\n", "line 3, column latency_ms: '0' is not a positive number"),
    ("nasbench201,abc,pixel3-tflite-cpu,-1.5,s\n", "line 3, column latency_ms: '-1.5'"),
    ("nasbench201,abc,pixel3-tflite-cpu,nan,s\n", "line 3, column latency_ms: 'nan'"),
    ("nasbench201,abc,pixel3-tflite-cpu,inf,s\n", "line 3, column latency_ms: 'inf'"),
    ("nasbench201,abc,pixel3-tflite-cpu,,s\n", "line 3, column latency_ms: '' is not a positive number"),
    ("nb999,abc,pixel3-tflite-cpu,1.0,s\n", "line 3, column space: 'nb999' is not a known space"),
    ("nasbench201,,pixel3-tflite-cpu,1.0,s\n", "line 3, column arch: is empty"),
    ('nasbench201,"  ",pixel3-tflite-cpu,1.0,s\n', "line 3, column arch: is empty"),
    ("nasbench201,abc,Pixel 3,1.0,s\n", "line 3, column target: 'Pixel 3' is not a valid target name"),
    ("nasbench201,abc,,1.0,s\n", "line 3, column target: must be a non-empty string"),
    ('leti,{"a": 1, "b": 2},x-cpu,1.0,s\n', "line 3, column 6: 6 fields but the header has 5"),
    ("nasbench201,abc,pixel3-tflite-cpu\n", "line 3, column latency_ms: missing"),
]


@pytest.mark.parametrize(
    ("row", "message"), MALFORMED, ids=[m.split(":")[0] + " " + m.split(":")[1][:12] for _, m in MALFORMED]
)
def test_malformed_rows_name_line_and_column(tmp_path, row, message):
    path = write(tmp_path, HEADER + GOOD + row + GOOD)
    rows = read_measurement_csv(path)
    assert next(rows).line == 2  # rows before the bad one are fine
    with pytest.raises(LetiError) as e:
        next(rows)
    assert str(e.value).startswith(message)
    assert e.value.field.startswith("line 3, column ")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("space,arch,target,source\nnb201,a,x-cpu,s\n", "line 1, column latency_ms: missing from the header"),
        ("space,arch,arch,target,latency_ms\n", "line 1, column arch: appears twice"),
        ("Space;Arch;Target;Latency\n", "line 1, column space: missing from the header"),
    ],
)
def test_bad_files(tmp_path, text, message):
    with pytest.raises(LetiError, match=message):
        list(read_measurement_csv(write(tmp_path, text)))


def test_header_only_and_missing_file(tmp_path):
    assert list(read_measurement_csv(write(tmp_path, HEADER))) == []
    with pytest.raises(LetiError, match="cannot read .*nope.csv"):
        list(read_measurement_csv(tmp_path / "nope.csv"))
    (tmp_path / "bin.csv").write_bytes(HEADER.encode() + b"nb201,\xff\xfe,x-cpu,1,s\n")
    with pytest.raises(LetiError, match="not UTF-8"):
        list(read_measurement_csv(tmp_path / "bin.csv"))


# -- import ----------------------------------------------------------------------------------------------


def test_import_is_idempotent_and_counts(tmp_path, store):
    dead = NB201.replace("avg_pool_3x3~1", "none~1")
    rows = [
        ("nb201", NB201, "pixel3-tflite-cpu", 3.0, "paper"),
        (
            "nb201",
            NB201,
            "pixel3-tflite-cpu",
            4.0,
            "paper",
        ),  # same arch, another value: a conflict, first kept
        ("nb201", NB201, "raspi4-tflite-cpu", 9.0, "paper"),
        ("nb201", dead, "pixel3-tflite-cpu", 2.0, ""),  # no source: the file name
        ("leti", LETI_ARCH, "pixel3-tflite-cpu", 5.0, "paper"),
    ]
    path = tmp_path / "m.csv"
    write_measurement_csv(path, rows)
    calls: list[tuple[str, str]] = []
    progress: list[tuple[int, int]] = []

    def parse(space, text):
        calls.append((space, text))
        return standin_parse(space, text)

    rep = import_csv(store, path, parse, progress=lambda done, total: progress.append((done, total)))
    counts = (rep.rows, rep.archs, rep.archs_new, rep.targets_new, rep.measurements_new, rep.duplicates)
    assert counts == (5, 3, 3, 2, 4, 0) and rep.conflicts == 1
    assert len(calls) == len(set(calls)) == 3  # each distinct arch parsed once
    assert progress[-1] == (5, 5)
    assert "5 rows" in rep.summary()

    df = store.measurements(target="pixel3-tflite-cpu")
    first = standin_parse("nasbench201", NB201).arch_id
    assert df.set_index("arch_id").loc[first, "latency_ms"] == 3.0
    assert set(df["settings_key"]) == {"import"}
    assert df.set_index("arch_id").loc[standin_parse("nasbench201", dead).arch_id, "source"] == "m.csv"
    assert store.get_target("raspi4-tflite-cpu").device == ""  # name only

    again = import_csv(store, path, standin_parse)
    assert (again.archs_new, again.targets_new, again.measurements_new, again.duplicates) == (0, 0, 0, 4)
    assert again.conflicts == 1 and "1 conflicts (kept the stored values" in again.summary()
    st = store.stats()
    assert st["measurements"] == 4 and st["archs"] == 3
    assert st["per_target"] == {"pixel3-tflite-cpu": 3, "raspi4-tflite-cpu": 1}
    assert st["per_target_space"]["pixel3-tflite-cpu"] == {"leti": 1, "nasbench201": 2}


def test_invalid_arch_is_reported_with_its_line_and_nothing_is_written(tmp_path, store):
    path = write(tmp_path, HEADER + GOOD + "nasbench201,|bogus~0|,pixel3-tflite-cpu,1.0,s\n")

    def parse(space, text):
        if "bogus" in text:
            raise ArchError("unknown op 'bogus'", "ops[0]")
        return standin_parse(space, text)

    with pytest.raises(ArchError) as e:
        import_csv(store, path, parse)
    assert str(e.value) == "line 3, column arch: ops[0]: unknown op 'bogus'"
    assert store.stats()["archs"] == 0 and store.stats()["measurements"] == 0


def test_import_of_15625_rows(tmp_path, store):
    """The whole NB201 space in one file (its speed is printed by benchmarks/bench_store.py, not tested)."""
    path = tmp_path / "big.csv"
    write_measurement_csv(
        path, [("nb201", f"|arch{i}~0|", "pixel3-tflite-cpu", 1.0 + i / 7, "gen") for i in range(15_625)]
    )
    rep = import_csv(store, path, standin_parse)
    assert rep.measurements_new == 15_625 and store.stats()["measurements"] == 15_625


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent: no real measurement files to import")
def test_import_every_shared_measurement_file(tmp_path):
    files = sorted(DATA.glob("*.csv"))
    if not files:
        pytest.skip(f"no *.csv files in {DATA}")
    with Store.open(tmp_path / "real.db") as store:
        expected: dict[str, int] = {}
        for f in files:
            rep = import_csv(store, f, standin_parse)
            n_lines = sum(1 for line in f.read_text().splitlines()[1:] if line.strip())
            assert rep.rows == n_lines > 0
            assert rep.measurements_new + rep.duplicates == rep.rows
            target = f.stem.split("__", 1)[1]
            expected[target] = expected.get(target, 0) + rep.measurements_new
            assert import_csv(store, f, standin_parse).measurements_new == 0
        st = store.stats()
        assert st["per_target"] == expected
        assert st["measurements"] == sum(expected.values())
        assert set(store.measurements()["space"]) == {"nasbench201"}

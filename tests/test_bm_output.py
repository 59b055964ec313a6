"""The benchmark_model parser on verbatim output of real benchmark_model versions.

Samples (tests/data/benchmark_model/, each file starts with a '# source:' comment line):

* tf2_1_readme_op_profiling.txt — TensorFlow's own benchmark README, op-profiling example
  https://github.com/tensorflow/tensorflow/blob/00ad26894f23060591ef791e10d77eb1e0c19437/tensorflow/lite/tools/benchmark/README.md
* tf_nightly_2021_mi11_cpu.txt, tf_nightly_2021_mi11_nnapi_failed.txt — Xiaomi Mi11 runs
  https://github.com/lp6m/yolov5s_android/blob/827d8874d92cfba47094261f0098eb0b2d4280ea/benchmark/benchmark.md
* tf2_8_riscv64_op_profiling.txt — full output with --enable_op_profiling=true (TF Lite 2.8)
  https://github.com/NobuoTsukamoto/meta-tensorflow-lite/blob/f4c6491d28834322563a5ed5f8d51d5d9b0f28d7/doc/tensorflow-lite-benchmark.md
* tf2_20_ti_am62x_cpu.txt — TF Lite 2.20 with INFO: prefixes and p5/median/p95 (TI Processor SDK docs)
  https://github.com/TexasInstruments/processor-sdk-doc/blob/b04bc774e6d79ff4e9b2805cf150025f8082b716/source/linux/Foundational_Components/Machine_Learning/tflite.rst

Expected numbers below are read off those files by eye, not produced by the parser.
"""

from pathlib import Path

import pytest

from leti.device_runner.bm_output import BenchmarkFailedError, parse, to_measurement
from leti.errors import LetiError

DATA = Path(__file__).parent / "data" / "benchmark_model"


def sample(name: str) -> str:
    text = (DATA / name).read_text()
    assert text.startswith("# source: https://github.com/")
    return text


def test_every_sample_cites_its_source():
    files = sorted(DATA.glob("*.txt"))
    assert len(files) >= 5
    for path in files:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# source: https://github.com/") and "/blob/" in first


def test_tf2_8_full_output_with_op_profile():
    raw = sample("tf2_8_riscv64_op_profiling.txt")
    out = parse(raw)
    assert out.summary_format == "modern"
    assert out.init_us == 17187 and out.first_us == 3512391
    assert out.warmup_avg_us == pytest.approx(3.51239e6)
    assert out.inference_avg_us == pytest.approx(2.95034e6)
    assert out.runs.count == 50 and out.runs.min == 2727568 and out.runs.max == 3189954
    assert out.runs.std == 109798
    assert out.warmup is not None and out.warmup.count == 1 and out.warmup.curr == 3512391
    assert out.memory_mb == {"init_rss_delta_mb": 4.21094, "overall_rss_delta_mb": 46.0859}
    assert out.model_size_mb == pytest.approx(16.9008)
    assert out.num_threads == 4 and out.graph == "./mobilenet_v1_1.0_224.tflite"
    # Only the regular-run table, not the initialization profile (AllocateTensors).
    ops = out.op_profile
    assert ops is not None and len(ops) == 31
    assert all(op.node_type != "AllocateTensors" for op in ops)
    first, last = ops[0], ops[-1]
    assert (first.node_type, first.name, first.node_index) == (
        "CONV_2D",
        "MobilenetV1/MobilenetV1/Conv2d_0/Relu6",
        0,
    )
    assert first.avg_ms == pytest.approx(60.957) and first.percent == pytest.approx(2.066)
    assert first.first_ms == pytest.approx(87.754) and first.times_called == 1
    assert (last.node_type, last.node_index, last.avg_ms) == ("SOFTMAX", 30, pytest.approx(0.233))
    assert sum(op.percent for op in ops) == pytest.approx(100.0, abs=0.05)
    assert {op.node_type for op in ops} == {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "SQUEEZE",
        "SOFTMAX",
    }


def test_tf2_8_to_measurement_is_in_ms_and_keeps_raw():
    raw = sample("tf2_8_riscv64_op_profiling.txt")
    m = to_measurement(parse(raw), raw, model_bytes=16900800)
    assert m.mean_ms == pytest.approx(2950.34)
    assert m.min_ms == pytest.approx(2727.568) and m.max_ms == pytest.approx(3189.954)
    assert m.std_ms == pytest.approx(109.798)
    assert m.init_ms == pytest.approx(17.187) and m.first_ms == pytest.approx(3512.391)
    assert m.warmup_ms == pytest.approx(3512.39)
    assert m.n_runs == 50 and m.raw == raw and m.raw_unit == "us" and m.model_bytes == 16900800
    # This version prints no median: the mean stands in, and the record says so.
    assert m.median_ms == m.mean_ms and m.versions["percentiles"] == "approximate"
    assert m.min_ms <= m.median_ms <= m.p90_ms <= m.max_ms
    assert len(m.op_profile) == 31 and m.op_profile[0]["avg_ms"] == pytest.approx(60.957)
    assert m.memory["overall_rss_delta_mb"] == pytest.approx(46.0859)


def test_tf2_20_info_prefixed_output_with_percentiles():
    raw = sample("tf2_20_ti_am62x_cpu.txt")
    out = parse(raw)
    assert out.runs.count == 50 and out.runs.median == 1239807 and out.runs.p95 == 1247415
    assert out.runs.avg == pytest.approx(1.24027e6) and out.runs.first == 1249964
    assert out.warmup.count == 1 and out.warmup.curr == 1357602
    assert out.init_us == 5579 and out.first_us == 1357602
    assert out.op_profile is None
    assert out.graph == "/usr/share/oob-demo-assets/models/ssd_mobilenet_v2_coco.tflite"
    m = to_measurement(out, raw)
    assert m.median_ms == pytest.approx(1239.807) and m.p90_ms == pytest.approx(1247.415)
    assert m.mean_ms == pytest.approx(1240.27) and m.versions["percentiles"] == "reported"
    assert m.memory == {
        "init_rss_delta_mb": 6.36328,
        "overall_rss_delta_mb": 109.832,
        "model_file_mb": 67.3128,
    }


def test_2021_nightly_summary_and_memory_delta():
    raw = sample("tf_nightly_2021_mi11_cpu.txt")
    out = parse(raw)
    assert out.runs.count == 50 and out.runs.avg == 220000 and out.warmup is None
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us) == (
        1430,
        247583,
        222136,
        220000,
    )
    m = to_measurement(out, raw)
    assert (m.mean_ms, m.min_ms, m.max_ms, m.std_ms) == pytest.approx((220.0, 206.675, 231.957, 6.795))


def test_tf2_1_legacy_summary_with_profile_only_timings():
    raw = sample("tf2_1_readme_op_profiling.txt")
    out = parse(raw)
    assert out.summary_format == "profile-only"
    assert out.inference_avg_us == pytest.approx(79760.9)
    assert out.init_us == 38467 and out.warmup_avg_us == 83235
    # No bare count= lines in this excerpt: the profiler's "Timings (microseconds)" line describes the runs.
    assert out.runs.count == 50 and out.runs.min == 77385 and out.runs.max == 88213
    assert len(out.op_profile) == 31 and out.op_profile[0].node_index is None
    assert out.op_profile[-1].name == "MobilenetV1/Predictions/Softmax"
    m = to_measurement(out, raw)
    assert m.n_runs == 50 and m.mean_ms == pytest.approx(79.7609)


def test_failed_run_raises_benchmark_failed():
    with pytest.raises(BenchmarkFailedError) as err:
        parse(sample("tf_nightly_2021_mi11_nnapi_failed.txt"))
    assert err.value.field == "benchmark_model.output"
    assert "Benchmarking failed" in str(err.value)


def test_truncated_output_names_the_missing_summary():
    raw = sample("tf2_8_riscv64_op_profiling.txt")
    cut = raw[: raw.index("Inference timings in us")]
    with pytest.raises(LetiError) as err:
        parse(cut)
    assert "Inference timings" in str(err.value) and "truncated" in str(err.value)
    assert err.value.field == "benchmark_model.output"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   \n",
        "Segmentation fault\n",
        "\x00\x01\x02binary junk",
        "/system/bin/sh: x: inaccessible or not found\n",
    ],
)
def test_garbage_raises_leti_error(garbage):
    with pytest.raises(LetiError) as err:
        parse(garbage)
    assert err.value.field == "benchmark_model.output"


def test_summary_without_run_statistics_is_rejected():
    raw = sample("tf_nightly_2021_mi11_cpu.txt")
    no_counts = "\n".join(line for line in raw.splitlines() if not line.startswith("count="))
    with pytest.raises(LetiError, match="run statistics"):
        parse(no_counts)


def test_logcat_prefixed_lines_are_read():
    # The benchmark APK logs through logcat; the same report then carries logcat's prefix.
    raw = sample("tf_nightly_2021_mi11_cpu.txt")
    logcat = "\n".join(f"06-01 12:00:00.000  1234  1234 I tflite  : {line}" for line in raw.splitlines()[2:])
    out = parse(logcat)
    assert out.inference_avg_us == 220000 and out.runs.count == 50


def test_bad_op_profile_row_is_an_error_naming_the_table():
    raw = sample("tf2_8_riscv64_op_profiling.txt")
    broken = raw.replace("\t   60.957\t", "\t   sixty\t", 1)
    with pytest.raises(LetiError) as err:
        parse(broken)
    assert err.value.field == "benchmark_model.op_profile"


def test_a_delegate_warning_in_a_successful_run_is_not_a_failure():
    raw = sample("tf_nightly_2021_mi11_cpu.txt")
    warned = "WARNING: Failed to apply the default TensorFlow Lite delegate indexed at 0.\n" + raw
    assert parse(warned).inference_avg_us == 220000

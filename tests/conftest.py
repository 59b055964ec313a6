"""Fixtures shared by the tests: a private LETI_HOME for every test, a guard that fails any test touching the real
~/.leti, and the ADB runner and loopback device."""

import os
import sys

import pytest

from leti.device_runner.adb_keys import ensure_key

pytest_plugins = ["tests.postgres_fixtures"]  # pg_server, pg_url

# ---- the real ~/.leti is out of bounds -----------------------------------------------------------------------------
# A test that passed only because the developer's ~/.leti held a trained predictor failed on a fresh machine (issue
# 11). An audit hook refuses every open, listing, creation or removal under the real ~/.leti in the test process,
# and the test that tried fails even if the code under test swallowed the error. (Subprocesses inherit the
# per-test LETI_HOME.)
REAL_LETI = os.path.abspath(os.path.expanduser("~/.leti"))
_WATCHED = frozenset({"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.replace", "os.remove",
                      "os.rmdir", "os.chmod", "os.truncate", "os.symlink", "os.link", "os.utime", "shutil.rmtree",
                      "sqlite3.connect"})  # fmt: skip
TOUCHED: list[str] = []


def _under_real_leti(arg) -> str | None:
    if not isinstance(arg, str | bytes | os.PathLike):
        return None
    try:
        p = os.path.abspath(os.fsdecode(arg))
    except (TypeError, ValueError):
        return None
    return p if p == REAL_LETI or p.startswith(REAL_LETI + os.sep) else None


def _audit(event: str, args: tuple) -> None:
    if event not in _WATCHED:
        return
    for arg in args[:2]:  # rename and replace name two paths
        p = _under_real_leti(arg)
        if p:
            TOUCHED.append(f"{event} {p}")
            raise PermissionError(
                f"a test touched the real {REAL_LETI} ({event} {p}); use the per-test LETI_HOME"
            )


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _private_leti_home(tmp_path_factory, monkeypatch):
    """Every test gets its own LETI_HOME, so no test reads or writes the real ~/.leti or depends on test order."""
    monkeypatch.setenv("LETI_HOME", str(tmp_path_factory.mktemp("leti_home")))
    # nor the pretrained zoo shipped in the package, unless a test asks for it (monkeypatch.delenv("LETI_ZOO"))
    monkeypatch.setenv("LETI_ZOO", "off")
    TOUCHED.clear()
    yield
    if TOUCHED:
        touched = TOUCHED[0]
        TOUCHED.clear()
        pytest.fail(f"this test touched the real ~/.leti ({touched}); tests must use the per-test LETI_HOME")


@pytest.fixture(scope="session")
def key_path(tmp_path_factory):
    return ensure_key(tmp_path_factory.mktemp("adbkeys") / "adbkey")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> bytes:
    """A 1-conv Keras model converted to .tflite (cached for the session)."""
    cached = tmp_path_factory.getbasetemp() / "leti_tiny_conv.tflite"
    if not cached.exists():
        import tensorflow as tf

        tf.keras.utils.set_random_seed(0)
        model = tf.keras.Sequential(
            [
                tf.keras.Input((32, 32, 3), batch_size=1),
                tf.keras.layers.Conv2D(16, 3, activation="relu"),
                tf.keras.layers.GlobalAveragePooling2D(),
                tf.keras.layers.Dense(4),
            ]
        )
        cached.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return cached.read_bytes()

"""Fixtures shared by the tests: a private LETI_HOME for every test, and the ADB runner and loopback device."""

import pytest

from leti.device_runner.adb_keys import ensure_key


@pytest.fixture(autouse=True)
def _private_leti_home(tmp_path_factory, monkeypatch):
    """Every test gets its own LETI_HOME, so no test reads or writes the real ~/.leti or depends on test order."""
    monkeypatch.setenv("LETI_HOME", str(tmp_path_factory.mktemp("leti_home")))
    # nor the pretrained zoo shipped in the package, unless a test asks for it (monkeypatch.delenv("LETI_ZOO"))
    monkeypatch.setenv("LETI_ZOO", "off")


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

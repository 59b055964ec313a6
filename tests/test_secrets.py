"""Secrets and file modes (issue 11): $LETI_HOME is created 0700, and the ADB private key is 0600 from its first
byte, written through a descriptor opened with that mode, never as a 0644 file chmod-ed afterwards."""

from __future__ import annotations

import os
import stat
import sys

from leti.device_runner.adb_keys import ensure_key, load_signer


def test_a_new_home_is_private(tmp_path, monkeypatch):
    """$LETI_HOME is created 0700 by whatever writes there first: it holds the ADB private key."""
    from leti.datasets.store import Store
    from leti.predictors import registry
    from leti.space import sample

    for i, write in enumerate((
        lambda: Store.open().close(),
        lambda: registry.save_trained(registry.make("flops").fit([a.to_graph() for a, _ in sample("nb201", 4)],
                                                                  [1.0, 2.0, 3.0, 4.0]), "host-litert-cpu-1t"),
        lambda: __import__("leti.device_runner.adb_keys", fromlist=["x"]).ensure_key(),
    )):  # fmt: skip
        home = tmp_path / f"h{i}" / "deeper" / "home"
        monkeypatch.setenv("LETI_HOME", str(home))
        old = os.umask(0o022)
        try:
            write()
        finally:
            os.umask(old)
        assert stat.S_IMODE(home.stat().st_mode) == 0o700, i


def test_adb_private_key_is_0600_from_its_first_byte(tmp_path, monkeypatch):
    """With umask 0 a file opened the default way is 0666; the key must be 0600 the moment it exists. Every open
    of the private key file is recorded (audit events): none may come from ``open()``, whose mode is the default."""
    key = tmp_path / "keys" / "adbkey"
    opened: list[tuple] = []
    real_open = os.open

    def recording_open(path, flags, mode=0o777, *a, **k):
        fd = real_open(path, flags, mode, *a, **k)
        if flags & os.O_CREAT:
            opened.append((os.fspath(path), stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    events: list[tuple] = []

    def audit(event, args):
        if (
            event == "open"
            and args
            and isinstance(args[0], str)
            and os.path.basename(args[0]).startswith(".adbkey")
        ):
            events.append(args)

    sys.addaudithook(audit)  # (cannot be removed; it only records names starting .adbkey)
    monkeypatch.setattr(os, "open", recording_open)
    old = os.umask(0)
    try:
        ensure_key(key)
    finally:
        os.umask(old)
    private = [(p, m) for p, m in opened if not p.endswith(".pub")]
    assert private and all(m == 0o600 for _, m in private), opened
    writes = [e for e in events if not e[0].endswith(".pub") and (e[1] is None or "w" in str(e[1]))]
    assert writes and all(e[1] is None for e in writes), writes  # os.open (mode None), never open(path, "wb")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in key.parent.iterdir()) == ["adbkey", "adbkey.lock", "adbkey.pub"]
    assert load_signer(key).Sign(b"x" * 20)  # a working key

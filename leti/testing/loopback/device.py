"""``LoopbackAdbDevice``: the pretend phone's server on 127.0.0.1, its state and logs."""

from __future__ import annotations

import posixpath
import random
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from leti.device_runner.adb_keys import public_key_from_android
from leti.errors import DeviceError
from leti.testing.loopback.connection import Connection
from leti.testing.loopback.fs import DeviceFS
from leti.testing.loopback.profile import DeviceProfile, Faults
from leti.testing.loopback.shell import ShellRecord


class LoopbackAdbDevice:
    """A pretend Android device serving the ADB protocol on ``host`` (an ephemeral port by default).

    ``authorized_keys`` are public key files' contents (``adbkey.pub``) the device trusts; with
    ``accept_new_keys`` it also trusts any key a client offers (as if the user tapped "Allow").
    """

    def __init__(
        self,
        profile: DeviceProfile | None = None,
        *,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        require_auth: bool = True,
        accept_new_keys: bool = True,
        authorized_keys: Iterable[bytes | str] = (),
        max_payload: int = 256 * 1024,
        seed: int = 0,
    ):
        self.profile = profile or DeviceProfile()
        self.faults = faults or Faults()
        self.require_auth = require_auth
        self.accept_new_keys = accept_new_keys
        self.max_payload = max_payload
        self.seed = seed
        self.shell_log: list[ShellRecord] = []
        self.argv_log: list[tuple[str, ...]] = []
        self.events: list[str] = []
        self.benchmark_runs: list[dict] = []
        self.connections = 0
        self.peak_streams = 0  # most streams open at once on one connection
        self._host, self._port = host, port
        self._key_texts = [k.encode() if isinstance(k, str) else bytes(k) for k in authorized_keys]
        self._keys: list = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: list[Connection] = []
        self._root: Path | None = None
        self._fs: DeviceFS | None = None

    # -- lifecycle
    def start(self) -> LoopbackAdbDevice:
        if self._sock is not None:
            return self
        self._keys = [public_key_from_android(k) for k in self._key_texts]
        self._root = Path(tempfile.mkdtemp(prefix="leti-loopback-adb-"))
        self._fs = DeviceFS(self._root, self._virtual_read)
        self._build_tree()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        sock.listen(8)
        sock.settimeout(0.05)
        self._sock = sock
        self._port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"loopback-adbd:{self._port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        sock.close()
        for conn in list(self._conns):
            conn.abort()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> LoopbackAdbDevice:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def serial(self) -> str:
        if self._sock is None:
            raise DeviceError("loopback device is not started", "serial")
        return f"{self._host}:{self._port}"

    @property
    def root(self) -> Path:
        """The host directory that holds the device's file system."""
        if self._root is None:
            raise DeviceError("loopback device is not started", "root")
        return self._root

    def host_path(self, device_path: str) -> Path:
        """Where ``device_path`` lives on the host."""
        if self._fs is None:
            raise DeviceError("loopback device is not started", "root")
        return self._fs.host(device_path)

    def executed(self, program: str) -> list[tuple[str, ...]]:
        """Every argv run so far whose program (basename of argv[0]) is ``program``."""
        return [argv for argv in self.argv_log if posixpath.basename(argv[0]) == program]

    def drop_connections(self) -> None:
        """Cut every open connection now (as if the cable were pulled)."""
        for conn in list(self._conns):
            conn.abort()

    # -- internals
    def _accept_loop(self) -> None:
        while self._sock is not None:
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, client)
            with self._lock:
                self._conns.append(conn)
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        try:
            conn.serve()
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)

    def _token(self) -> bytes:
        with self._lock:
            return bytes(self._rng.getrandbits(8) for _ in range(20))

    def _authorized_keys(self) -> list:
        with self._lock:
            return list(self._keys)

    def _add_key(self, blob: bytes) -> bool:
        try:
            key = public_key_from_android(blob)
        except DeviceError:
            return False
        with self._lock:
            self._keys.append(key)
        return True

    def _build_tree(self) -> None:
        root, p = self._root, self.profile
        for d in ("data/local/tmp", "system/bin", "sdcard", "proc"):
            (root / d).mkdir(parents=True, exist_ok=True)
        ncpu = len(p.cpu_max_khz)
        cpu = root / "sys/devices/system/cpu"
        for i, khz in enumerate(p.cpu_max_khz):
            (cpu / f"cpu{i}/cpufreq").mkdir(parents=True)
            (cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq").write_text(f"{khz}\n")
        (cpu / "possible").write_text(f"0-{ncpu - 1}\n")
        for i, (kind, _) in enumerate(p.thermal_zones):
            zone = root / f"sys/class/thermal/thermal_zone{i}"
            zone.mkdir(parents=True)
            (zone / "type").write_text(kind + "\n")
            (zone / "temp").write_text("0\n")  # the value is computed on read
        battery = root / "sys/class/power_supply/battery"
        battery.mkdir(parents=True)
        for name in ("capacity", "temp", "status"):
            (battery / name).write_text("0\n")

    def _battery_level(self) -> int:
        if self.faults.take("low_battery"):
            self.events.append("low_battery")
            return int(self.faults.low_battery_level)
        return int(self.profile.battery_level)

    def _zone_temp(self, index: int) -> int:
        base = self.profile.thermal_zones[index][1]
        f = self.faults
        with f._lock:
            if index != f.hot_zone or f.hot_c is None:
                return base
            temp = f.hot_c * 1000
            if f.hot_cool_s:
                frac = max(0.0, 1.0 - (time.monotonic() - f._hot_since) / f.hot_cool_s)
                temp = base + (temp - base) * frac
                if frac == 0.0:
                    f.hot_c = None
            if f.hot_reads > 0:
                f.hot_reads -= 1
                if f.hot_reads == 0:
                    f.hot_c = None
            self.events.append("hot")
            return int(max(temp, base))

    def _virtual_read(self, dpath: str) -> bytes | None:
        m = re.fullmatch(r"/sys/class/thermal/thermal_zone(\d+)/temp", dpath)
        if m and int(m[1]) < len(self.profile.thermal_zones):
            return f"{self._zone_temp(int(m[1]))}\n".encode()
        if dpath == "/sys/class/power_supply/battery/capacity":
            return f"{self._battery_level()}\n".encode()
        if dpath == "/sys/class/power_supply/battery/temp":
            return f"{self.profile.battery_temp_dc}\n".encode()
        if dpath == "/sys/class/power_supply/battery/status":
            return b"Discharging\n"
        return None

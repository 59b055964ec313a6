"""What the loopback phone reports about itself (``DeviceProfile``) and how it misbehaves on purpose
(``Faults``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

ALWAYS = -1


@dataclass
class DeviceProfile:
    """What the pretend phone reports about itself. Temperatures in m°C, battery temp in 0.1 °C."""

    model: str = "Pixel 4"
    manufacturer: str = "Google"
    device: str = "flame"
    serialno: str = "LOOPBACK0001"
    soc_model: str = "SM8150"
    board_platform: str = "msmnile"
    abi: str = "arm64-v8a"
    android_version: str = "11"
    sdk: int = 30
    cpu_max_khz: tuple[int, ...] = (1785600,) * 4 + (2419200,) * 3 + (2841600,)
    thermal_zones: tuple[tuple[str, int], ...] = (
        ("cpu-1-0-usr", 38500),
        ("gpu-usr", 36000),
        ("battery", 29000),
    )
    battery_level: int = 85
    battery_temp_dc: int = 290
    gpu: bool = True  # accept --use_gpu (emulated on the host CPU)
    nnapi: bool = True  # accept --use_nnapi (emulated on the host CPU)

    def props(self) -> dict[str, str]:
        return {
            "ro.product.model": self.model,
            "ro.product.manufacturer": self.manufacturer,
            "ro.product.device": self.device,
            "ro.product.name": self.device,
            "ro.serialno": self.serialno,
            "ro.soc.model": self.soc_model,
            "ro.board.platform": self.board_platform,
            "ro.hardware": self.board_platform,
            "ro.product.cpu.abi": self.abi,
            "ro.product.cpu.abilist": self.abi,
            "ro.build.version.release": self.android_version,
            "ro.build.version.sdk": str(self.sdk),
            "ro.build.type": "user",
        }


@dataclass
class Faults:
    """Switches that make the device misbehave. Counts: 0 off, n for the next n times, ALWAYS for ever."""

    drop_mid_push: int = 0  # cut the connection after the first DATA block of a push
    hang_mid_push: int = 0  # stop answering after the first DATA block of a push (until the client goes away)
    drop_mid_run: int = 0  # cut the connection while benchmark_model runs
    hang: int = 0  # accept a shell command but never answer it
    hang_match: str = ""  # only hang commands containing this text ("" = any)
    garbage: int = 0  # benchmark_model prints garbage instead of its report
    low_battery: int = 0  # battery capacity reads that report low_battery_level
    low_battery_level: int = 5
    hot_c: float | None = None  # thermal zone ``hot_zone`` reports this temperature (°C)...
    hot_zone: int = 0
    hot_reads: int = ALWAYS  # ...for this many reads of it (then back to normal)
    hot_cool_s: float | None = None  # ...or cooling linearly back to normal over this many s (see overheat())
    _hot_since: float = field(default=0.0, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def take(self, name: str) -> bool:
        """Consume one occurrence of fault ``name``; True when it fires."""
        with self._lock:
            left = int(getattr(self, name))
            if left == 0:
                return False
            if left > 0:
                setattr(self, name, left - 1)
            return True

    def overheat(self, temp_c: float = 70.0, *, reads: int = ALWAYS, cool_s: float | None = None) -> None:
        """Report ``temp_c`` on the hot zone for ``reads`` reads, or cooling down over ``cool_s`` seconds."""
        with self._lock:
            self.hot_c, self.hot_reads, self.hot_cool_s = float(temp_c), int(reads), cool_s
            self._hot_since = time.monotonic()

"""A pretend Android phone on 127.0.0.1 that speaks the real ADB wire protocol.

``LoopbackAdbDevice`` lets leti's ADB runner, and the unmodified ``adb-shell`` client it uses, be
tested end to end without a phone: CNXN/AUTH handshake, OPEN/OKAY/WRTE/CLSE streams, the ``sync:``
service (SEND/DATA/DONE, RECV, STAT, LIST, QUIT) and a ``shell:`` service with a small POSIX shell.

The shell parses command lines the way ``sh`` does (quotes, backslashes, ``$VAR``, ``$(…)``,
backticks, globs, ``;`` ``&&`` ``||`` ``|`` and redirections) and runs only a few commands itself
(``getprop``, ``cat``, ``grep``, ``echo``, ``ls``, ``mkdir``, ``rm``, ``chmod``, ``touch``, ``taskset``,
``dumpsys battery``). It never runs anything on the host. Every argv it executes is logged, so a
test can tell a quoted hostile string (one inert argument) from an injection (extra commands).

The device's file system is a temporary directory; like the ``shell`` user on a phone, only
``/data/local/tmp`` is writable. An executable ELF file whose machine matches the device ABI runs as
``benchmark_model``: it loads the pushed ``.tflite`` with LiteRT on the host, times real
invocations and prints them in the format of recent ``benchmark_model`` versions. With
``--enable_op_profiling=true`` the per-operator split of the measured time is an *estimate* from
each operator's arithmetic cost (LiteRT's Python API exposes no per-op timer); the totals are real.

Faults (``device.faults``) make it misbehave on purpose: drop the connection mid-push or mid-run,
hang (never answer a command, or stall mid-push), print garbage instead of benchmark output, run hot, or report a low
battery. Counters are one-shot when set to ``True``/``1``, ``n`` for n times, ``ALWAYS`` for ever.
"""

from leti.testing.loopback.benchmark_model import make_fake_elf
from leti.testing.loopback.device import LoopbackAdbDevice
from leti.testing.loopback.profile import ALWAYS, DeviceProfile, Faults
from leti.testing.loopback.shell import ShellRecord

__all__ = ["ALWAYS", "DeviceProfile", "Faults", "LoopbackAdbDevice", "ShellRecord", "make_fake_elf"]

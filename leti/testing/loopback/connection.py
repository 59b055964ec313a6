"""One ADB client connection to the loopback phone: the CNXN/AUTH handshake, streams, and the ``shell:`` and
``sync:`` services."""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import queue
import socket
import struct
import threading
import time

from leti.device_runner.adb_keys import verify_token
from leti.testing.loopback.fs import DeviceFS
from leti.testing.loopback.shell import SH, Shell, ShellRecord
from leti.testing.loopback.wire import (
    A_VERSION,
    AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    CMDS,
    HEADER,
    SYNC,
    Dropped,
    pack,
)


class _Stream:
    def __init__(self, local_id: int, remote_id: int):
        self.id = local_id
        self.remote = remote_id
        self.okay = threading.Event()
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.closed = False


class Connection:
    """One client connection: handshake, then packets dispatched to per-stream service threads.

    ``device`` is the ``LoopbackAdbDevice`` that accepted it (not imported here: the device imports this
    module).
    """

    def __init__(self, device, sock: socket.socket):
        self.dev = device
        self.sock = sock
        self.alive = True
        self.client_maxdata = 4096
        self._wlock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1

    # -- raw packets
    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Dropped("client closed the connection")
            buf += chunk
        return bytes(buf)

    def read_packet(self) -> tuple[bytes, int, int, bytes]:
        word, arg0, arg1, length, check, magic = HEADER.unpack(self._recv(HEADER.size))
        cmd = struct.pack("<I", word)
        if cmd not in CMDS or magic != word ^ 0xFFFFFFFF:
            raise Dropped(f"bad packet header {cmd!r}")
        data = self._recv(length) if length else b""
        if sum(data) & 0xFFFFFFFF != check:
            raise Dropped("bad packet checksum")
        return cmd, arg0, arg1, data

    def send(self, cmd: bytes, arg0: int, arg1: int, data: bytes = b"") -> None:
        if not self.alive:
            raise Dropped("connection closed")
        with self._wlock:
            try:
                self.sock.sendall(pack(cmd, arg0, arg1, data))
            except OSError as exc:
                self.alive = False
                raise Dropped(str(exc)) from exc

    def abort(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for st in list(self._streams.values()):
            st.inbox.put(None)
            st.okay.set()

    # -- streams
    def write(self, st: _Stream, data: bytes) -> None:
        step = max(1, min(self.client_maxdata, self.dev.max_payload))
        for off in range(0, len(data), step):
            st.okay.clear()
            self.send(b"WRTE", st.id, st.remote, data[off : off + step])
            # Like adbd, wait for the client's OKAY before sending more on this stream.
            while not st.okay.wait(0.2):
                if not self.alive or st.closed:
                    raise Dropped("stream closed while writing")
            if not self.alive or st.closed:
                raise Dropped("stream closed while writing")

    def close_stream(self, st: _Stream) -> None:
        if not st.closed:
            st.closed = True
            self.send(b"CLSE", st.id, st.remote)

    # -- main loop
    def serve(self) -> None:
        try:
            self._handshake()
            while self.alive:
                self._dispatch(*self.read_packet())
        except (Dropped, OSError, struct.error):
            pass
        finally:
            self.abort()

    def _handshake(self) -> None:
        while True:
            cmd, _arg0, maxdata, _data = self.read_packet()
            if cmd == b"CNXN":
                break
        self.client_maxdata = max(256, min(maxdata, 1 << 20))
        if self.dev.require_auth:
            token = self.dev._token()
            self.send(b"AUTH", AUTH_TOKEN, 0, token)
            while True:
                cmd, arg0, _arg1, data = self.read_packet()
                if cmd != b"AUTH":
                    continue
                if arg0 == AUTH_SIGNATURE:
                    if any(verify_token(key, token, data) for key in self.dev._authorized_keys()):
                        self.dev.events.append("auth:signature")
                        break
                    self.dev.events.append("auth:bad-signature")
                    token = self.dev._token()
                    self.send(b"AUTH", AUTH_TOKEN, 0, token)
                elif arg0 == AUTH_RSAPUBLICKEY:
                    if self.dev.accept_new_keys and self.dev._add_key(data):
                        self.dev.events.append("auth:new-key")
                        break
                    # A real phone would show an "Allow USB debugging?" dialog; nobody taps it here.
                    self.dev.events.append("auth:rejected")
        p = self.dev.profile
        banner = (
            f"device::ro.product.name={p.device};ro.product.model={p.model};ro.product.device={p.device};"
        )
        self.send(b"CNXN", A_VERSION, self.dev.max_payload, banner.encode() + b"\0")

    def _dispatch(self, cmd: bytes, arg0: int, arg1: int, data: bytes) -> None:
        if cmd == b"OPEN":
            self._open(arg0, data.rstrip(b"\0").decode("utf-8", "replace"))
        elif cmd == b"OKAY":
            st = self._streams.get(arg1)
            if st is not None:
                st.okay.set()
        elif cmd == b"WRTE":
            st = self._streams.get(arg1)
            if st is None or st.closed:
                self.send(b"CLSE", arg1, arg0)
                return
            st.inbox.put(data)
            self.send(b"OKAY", st.id, st.remote)
        elif cmd == b"CLSE":
            st = self._streams.pop(arg1, None)
            if st is not None:
                if not st.closed:
                    st.closed = True
                    self.send(b"CLSE", st.id, st.remote)
                st.inbox.put(None)
                st.okay.set()

    def _open(self, remote_id: int, destination: str) -> None:
        service, _, arg = destination.partition(":")
        if service in ("shell", "exec") and arg:
            if (not self.dev.faults.hang_match or self.dev.faults.hang_match in arg) and self.dev.faults.take(
                "hang"
            ):
                self.dev.events.append("hang")
                return  # never answer: the client waits until its own timeout
            target = self._shell
        elif destination == "sync:":
            target = self._sync
        else:
            self.send(b"CLSE", 0, remote_id)
            return
        st = _Stream(self._next_id, remote_id)
        self._next_id += 1
        self._streams[st.id] = st
        open_now = sum(1 for s in self._streams.values() if not s.closed)
        self.dev.peak_streams = max(self.dev.peak_streams, open_now)
        self.send(b"OKAY", st.id, remote_id)
        threading.Thread(target=self._service, args=(target, st, arg), daemon=True).start()

    def _service(self, target, st: _Stream, arg: str) -> None:
        try:
            target(st, arg)
            self.close_stream(st)
        except Dropped:
            pass
        except Exception as exc:  # a bug here must not leave the client waiting for ever
            try:
                self.write(st, f"{SH}: loopback device error: {exc!r}\n".encode())
                self.close_stream(st)
            except Dropped:
                pass

    def _shell(self, st: _Stream, command: str) -> None:
        record = ShellRecord(command)
        self.dev.shell_log.append(record)
        chunks: list[str] = []

        def emit(text: str) -> None:
            # Batch small writes into one WRTE per line ending, as a pty would.
            chunks.append(text)
            if "\n" in text:
                payload = "".join(chunks).encode()
                chunks.clear()
                self.write(st, payload)

        record.exit_code = Shell(self.dev, record, self).run(command, emit, emit)
        if chunks:
            self.write(st, "".join(chunks).encode())

    def _sync(self, st: _Stream, _arg: str) -> None:
        buf = bytearray()

        def need(n: int) -> bytes:
            while len(buf) < n:
                data = st.inbox.get()
                if data is None:
                    raise Dropped("sync stream closed")
                buf.extend(data)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        def reply(ident: bytes, payload: bytes = b"", size: int | None = None) -> None:
            self.write(st, SYNC.pack(ident, len(payload) if size is None else size) + payload)

        fs = self.dev._fs
        while True:
            ident, length = SYNC.unpack(need(8))
            if ident == b"QUIT":
                return
            if ident not in (b"STAT", b"LIST", b"SEND", b"RECV"):
                reply(b"FAIL", f"unknown sync command {ident!r}".encode())
                return
            path = need(length).decode("utf-8", "replace")
            if ident == b"STAT":
                host = fs.host(path)
                if host.exists():
                    s = host.stat()
                    self.write(st, struct.pack("<4sIII", b"STAT", s.st_mode, s.st_size, int(s.st_mtime)))
                else:
                    self.write(st, struct.pack("<4sIII", b"STAT", 0, 0, 0))
            elif ident == b"LIST":
                host = fs.host(path)
                if host.is_dir():
                    for name in [".", ".."] + sorted(os.listdir(host)):
                        s = (host / name).stat()
                        raw = name.encode()
                        entry = struct.pack(
                            "<4sIIII", b"DENT", s.st_mode, s.st_size, int(s.st_mtime), len(raw)
                        )
                        self.write(st, entry + raw)
                self.write(st, struct.pack("<4sIIII", b"DONE", 0, 0, 0, 0))
            elif ident == b"RECV":
                try:
                    data = fs.read(path)
                except OSError:
                    reply(b"FAIL", b"remote object does not exist")
                    continue
                for off in range(0, len(data), 64 * 1024):
                    reply(b"DATA", data[off : off + 64 * 1024])
                reply(b"DONE", size=0)
            else:
                self._receive_file(fs, path, need, reply)

    def _receive_file(self, fs: DeviceFS, spec: str, need, reply) -> None:
        dpath, _, mode_text = spec.rpartition(",")  # "path,mode"; a path may itself contain commas
        if not dpath:
            dpath, mode_text = spec, ""
        mode = int(mode_text) if mode_text.isdigit() else 0o100644
        data = io.BytesIO()
        first = True
        while True:
            ident, size = SYNC.unpack(need(8))
            if ident == b"DATA":
                data.write(need(size))
                if first and self.dev.faults.take("drop_mid_push"):
                    self.dev.events.append("drop_mid_push")
                    self.abort()
                    raise Dropped("drop_mid_push")
                if first and self.dev.faults.take("hang_mid_push"):
                    self.dev.events.append("hang_mid_push")
                    while self.alive and self.dev._sock is not None:  # the client is stuck mid-push
                        time.sleep(0.05)
                    raise Dropped("hang_mid_push")
                first = False
            elif ident == b"DONE":
                break
            else:
                reply(b"FAIL", f"unexpected {ident!r} during push".encode())
                return
        dpath = fs.norm(dpath)
        parent = posixpath.dirname(dpath)
        try:
            if not fs.writable(parent):
                raise PermissionError(dpath)
            fs.host(parent).mkdir(parents=True, exist_ok=True)  # adbd creates missing directories
            fs.write(dpath, data.getvalue(), mode=mode)
        except (PermissionError, IsADirectoryError, FileNotFoundError) as exc:
            reason = "Permission denied" if isinstance(exc, PermissionError) else "Is a directory"
            reply(b"FAIL", f"couldn't create file: {reason}".encode())
            return
        reply(b"OKAY", size=0)

"""ADB RSA keys: the host's key pair (``$LETI_HOME/adbkey`` + ``.pub``) and the device-side check.

The public key file uses Android's own format: base64 of a little-endian ``RSAPublicKey`` struct
(modulus size in words, n0inv, modulus, R^2, exponent) followed by `` user@host``. A device answers a
random 20-byte token with AUTH; the host signs it as if it were a SHA-1 digest (PKCS#1 v1.5).
"""

from __future__ import annotations

import base64
import contextlib
import os
import struct
import threading
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from leti.errors import DeviceError, LetiError
from leti.paths import ensure_home

_MODULUS_BYTES = 256  # Android only accepts 2048-bit keys
_STRUCT = struct.Struct(f"<II{_MODULUS_BYTES}s{_MODULUS_BYTES}sI")


_KEYGEN_LOCK = threading.Lock()  # flock does not exclude threads of one process


def default_key_path() -> Path:
    return ensure_home() / "adbkey"


def ensure_key(path: Path | str | None = None) -> Path:
    """Return the private key path, creating the pair with adb-shell's keygen if it is absent.

    Safe when several workers (threads or processes) of a farm start at once: creation happens under a file lock,
    and the pair is written aside and moved into place, so nobody ever reads a half-written key."""
    import fcntl

    key = Path(path) if path is not None else default_key_path()
    pub = key.with_name(key.name + ".pub")
    if key.is_file() and pub.is_file():
        return key
    try:
        key.parent.mkdir(parents=True, exist_ok=True)
        with _KEYGEN_LOCK, open(key.with_name(key.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if key.is_file() and pub.is_file():  # another worker made it while we waited
                return key
            if key.exists() != pub.exists():
                missing = pub if key.exists() else key
                raise LetiError(
                    f"{missing} is missing but its pair exists; remove both to regenerate", "adb_key"
                )
            tmp = key.with_name(f".{key.name}.{os.getpid()}.tmp")
            _write_key_pair(tmp)
            os.replace(tmp.with_name(tmp.name + ".pub"), pub)
            os.replace(tmp, key)
    except OSError as exc:
        raise LetiError(f"cannot create an ADB key at {key}: {exc.strerror or exc}", "adb_key") from exc
    return key


def _write_key_pair(tmp: Path) -> None:
    """A new 2048-bit pair at ``tmp`` and ``tmp.pub``. The private key is written through a descriptor opened with
    mode 0600 in its own directory: a private key readable by others, even for a moment, would let them drive the
    phones (adb-shell's keygen writes it with the default 0644 and leaves the chmod to the caller)."""
    from adb_shell.auth.keygen import write_public_keyfile
    from cryptography.hazmat.primitives import serialization

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover of a crash: O_EXCL below must create the file itself
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    write_public_keyfile(str(tmp), str(tmp) + ".pub")


def load_signer(path: Path | str | None = None):
    """An adb-shell signer for the key at ``path`` (created if absent)."""
    from adb_shell.auth.sign_cryptography import CryptographySigner

    key = ensure_key(path)
    try:
        return CryptographySigner(str(key))
    except (ValueError, TypeError, OSError) as exc:
        raise LetiError(f"cannot load ADB key {key}: {exc}", "adb_key") from exc


def public_key_from_android(blob: bytes | str) -> rsa.RSAPublicKey:
    """Decode an Android-format public key (the ``adbkey.pub`` text, with or without its comment)."""
    text = blob.decode("ascii", "replace") if isinstance(blob, bytes) else blob
    token = text.strip("\0").split()[0] if text.strip("\0").split() else ""
    try:
        raw = base64.b64decode(token, validate=True)
        words, _n0inv, modulus, _rr, exponent = _STRUCT.unpack(raw)
    except (ValueError, struct.error) as exc:
        raise DeviceError(f"malformed ADB public key: {exc}", "adb_key") from exc
    if words != _MODULUS_BYTES // 4:
        raise DeviceError(f"unsupported ADB key size: {words * 32} bits", "adb_key")
    n = int.from_bytes(modulus, "little")
    return rsa.RSAPublicNumbers(exponent, n).public_key()


def verify_token(public_key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the holder's signature of the AUTH ``token``."""
    try:
        public_key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    except (InvalidSignature, ValueError):
        return False
    return True

"""leti's error type: every bad input raises a LetiError whose message names the field."""

from __future__ import annotations

# Messages may quote user input (a bad arch, a file name); quoting is cut to this many characters, so that an error
# about a 100 MB arch is a line, not 100 MB, on a terminal, in a log or in an HTTP response.
MAX_REASON = 500
MAX_FIELD = 200


def excerpt(text, limit: int = MAX_REASON) -> str:
    """``text`` on one line, cut to about ``limit`` characters with a note saying how much was left out."""
    s = text if isinstance(text, str) else str(text)
    n = len(s)
    if n > 4 * limit:  # never split the whole of a huge string
        s = s[: 4 * limit] + " …"
    s = " ".join(s.split())
    if len(s) <= limit:
        return s
    return s[: limit - 20].rstrip() + f" … ({n:,} chars)"


class LetiError(Exception):
    """Bad input or an operation that cannot proceed.

    ``field`` names what was wrong (``"adjacency[2][1]"``, ``"layers[3].k"``, ``"line 7, column latency_ms"``);
    the message is a single line so the CLI can print it as is and HTTP can return it as a 4xx detail.
    """

    def __init__(self, message: str, field: str | None = None):
        self.field = excerpt(field, MAX_FIELD) if field is not None else None
        self.reason = excerpt(message)
        text = f"{self.field}: {self.reason}" if self.field else self.reason
        super().__init__(text)


class ArchError(LetiError):
    """An invalid architecture spec."""


class GraphError(LetiError):
    """A spec that is valid on its own but cannot be expanded (shape mismatch, unsupported combination)."""


class ModelFileError(LetiError):
    """A corrupt, empty or unsupported model file."""


class TargetError(LetiError):
    """An unknown or malformed target name."""


class StoreError(LetiError):
    """The measurement store cannot be opened or written."""


class PredictorError(LetiError):
    """A missing, corrupt or incompatible predictor."""


class TooLargeError(LetiError):
    """An input beyond a limit: a body, a batch, or a network too large to build (HTTP 413)."""


class DeviceError(LetiError):
    """A device that cannot be reached or that failed a command."""


class MissingExtraError(LetiError):
    """An optional package that this installation lacks (``pip install 'leti[<extra>]'`` adds it)."""


# optional top-level modules -> the extra of pyproject.toml that installs them
EXTRAS: dict[str, str] = {
    "tensorflow": "measure",
    "keras": "measure",
    "ai_edge_litert": "measure",
    "tensorly": "measure",
    "torch": "gcn",
    "torch_geometric": "gcn",
    "adb_shell": "farm",
    "cryptography": "farm",
    "psycopg": "farm",
    "onnx": "onnx",
    "onnxscript": "onnx",
}


def missing_extra(e: ImportError, what: str | None = None) -> MissingExtraError | None:
    """The one-line error for an ImportError of an optional package (None when it is not one)."""
    name = (getattr(e, "name", None) or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return None
    need = f"{what} needs" if what else "needs"
    return MissingExtraError(f"{need} the optional package {name!r}: pip install 'leti[{extra}]'", name)

"""The shipped weights: a reproducible .npz (fixed zip timestamps, sorted members) and
its SHA-256 checksum."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from exion.errors import ExionError

__all__ = ["DEFAULT_WEIGHTS", "WEIGHTS_SHA256", "WEIGHTS", "weights_path", "save_weights",
           "load_weights", "file_sha256"]

_DATA = Path(__file__).resolve().parent / "data"
DEFAULT_WEIGHTS = _DATA / "dit_digits.npz"

#: SHA-256 of ``data/dit_digits.npz`` as shipped (also in ``data/MODEL_CARD.md``).
WEIGHTS_SHA256 = "0795455f4285d03000b62970225187c09e9177a897e7d1ba1a44b74e2304e077"

#: model name -> (shipped file, SHA-256); the cards are ``data/MODEL_CARD*.md``.
WEIGHTS = {
    "digits16": (DEFAULT_WEIGHTS, WEIGHTS_SHA256),
    "digits64": (_DATA / "dit_digits64.npz",
                 "4c8af262a0a950408f4e0047b337ad8446625d32d87de8be5ffa8b8fac78445e"),
}


def weights_path(model: str = "digits16") -> Path:
    """The shipped weights file of ``model`` (``digits16`` or ``digits64``)."""
    if model not in WEIGHTS:
        raise ExionError(f"model must be one of {', '.join(WEIGHTS)}, got {model!r}")
    return WEIGHTS[model][0]


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_weights(path, arrays: dict[str, np.ndarray], meta: dict) -> str:
    """Write ``arrays`` as float16 (``meta`` as a JSON member) into a byte-reproducible
    .npz; return its SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members = {k: np.ascontiguousarray(v, dtype=np.float16) for k, v in arrays.items()}
    members["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(),
                                        dtype=np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            b = io.BytesIO()
            np.lib.format.write_array(b, members[name], allow_pickle=False)
            zf.writestr(info, b.getvalue())
    path.write_bytes(buf.getvalue())
    return file_sha256(path)


def load_weights(path=None, check: bool = True, model: str = "digits16"
                 ) -> tuple[dict[str, np.ndarray], dict]:
    """``(weights as float64, meta)`` of ``path`` (default: the shipped file of ``model``);
    with ``check`` a shipped file's SHA-256 must match :data:`WEIGHTS`."""
    path = Path(weights_path(model) if path is None else path)
    if not path.is_file():
        raise ExionError(f"weights file {str(path)!r} not found (train with "
                         f"`python -m exion.workloads.train --model {model}`)")
    # digits16's checksum is read at call time (WEIGHTS_SHA256 may be patched by tests)
    for name, (shipped, sha) in dict(WEIGHTS, digits16=(DEFAULT_WEIGHTS,
                                                        WEIGHTS_SHA256)).items():
        if check and path.resolve() == shipped and file_sha256(path) != sha:
            raise ExionError(f"weights file {str(path)!r} has SHA-256 {file_sha256(path)}, "
                             f"expected {sha} (re-train {name} or restore it)")
    with np.load(path, allow_pickle=False) as z:
        w = {k: z[k].astype(np.float64) for k in z.files if k != "__meta__"}
        meta = json.loads(bytes(z["__meta__"]).decode()) if "__meta__" in z.files else {}
    return w, meta

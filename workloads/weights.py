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

__all__ = ["DEFAULT_WEIGHTS", "WEIGHTS_SHA256", "save_weights", "load_weights", "file_sha256"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "data" / "dit_digits.npz"

#: SHA-256 of ``data/dit_digits.npz`` as shipped (also in ``data/MODEL_CARD.md``).
WEIGHTS_SHA256 = "0795455f4285d03000b62970225187c09e9177a897e7d1ba1a44b74e2304e077"


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


def load_weights(path=None, check: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """``(weights as float64, meta)``; with ``check`` the shipped file's SHA-256 must match
    :data:`WEIGHTS_SHA256`."""
    path = Path(DEFAULT_WEIGHTS if path is None else path)
    if not path.is_file():
        raise ExionError(f"weights file {str(path)!r} not found (train with "
                         f"`python -m exion.workloads.train`)")
    if check and path.resolve() == DEFAULT_WEIGHTS and file_sha256(path) != WEIGHTS_SHA256:
        raise ExionError(f"weights file {str(path)!r} has SHA-256 {file_sha256(path)}, "
                         f"expected {WEIGHTS_SHA256} (re-train or restore it)")
    with np.load(path, allow_pickle=False) as z:
        w = {k: z[k].astype(np.float64) for k in z.files if k != "__meta__"}
        meta = json.loads(bytes(z["__meta__"]).decode()) if "__meta__" in z.files else {}
    return w, meta

"""Helpers shared by CLI commands: config and array loading with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exion.config import Config, get_config
from exion.errors import ExionError


def add_config_arg(parser, default: str = "toy") -> None:
    parser.add_argument("--config", default=default, metavar="NAME|FILE",
                        help=f"preset name (toy, exion16) or TOML file (default: {default})")


def load_cfg(arg: str) -> Config:
    return get_config(arg)


def load_npy(path: str | Path, what: str, ndim: int | None = None,
             dtype_kind: str | None = None) -> np.ndarray:
    """Load a .npy file; errors name the option, the file and the shape problem."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ExionError(f"{what}: file {str(path)!r} does not exist") from None
    except (OSError, ValueError) as e:
        raise ExionError(f"{what}: cannot read {str(path)!r} as a .npy array: {e}") from None
    if ndim is not None and arr.ndim != ndim:
        raise ExionError(f"{what}: {str(path)!r} has shape {arr.shape}, expected a "
                         f"{ndim}-D array")
    if dtype_kind is not None and arr.dtype.kind not in dtype_kind:
        raise ExionError(f"{what}: {str(path)!r} has dtype {arr.dtype}, expected "
                         f"{'integers' if 'i' in dtype_kind else dtype_kind}")
    return arr


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path

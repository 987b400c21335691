"""The option blocks every command shares, one per concern, and the loaders behind them.

A command adds an option with one call here instead of its own copy, so the flag, its
metavar, its help text and the checks on its value are the same everywhere:

* config  -- :func:`add_config` / :func:`load_cfg`: ``--config NAME|FILE`` (presets from
  :data:`exion.config.PRESETS`, or a TOML file).
* seed    -- :func:`add_seed` / :func:`seed_of`: ``--seed N``; without it a random seed,
  printed (``EXION_SEED=N`` fixes it).
* waves   -- :func:`add_waves`: ``--waves`` (FST waveform into the run's own folder).
* report  -- :func:`add_report`: ``--report R.json`` (RTL runs) or ``--json OUT.json``
  (golden figures), and :func:`write_json`.
* masks   -- :func:`add_mask` / :func:`load_mask`: ``--mask M.npy``, a 2-D boolean or 0/1
  integer output mask.
* arrays  -- :func:`load_npy`: any ``.npy`` input with one-line errors naming the option.
* K-splits -- :func:`add_k_chunk` / :func:`k_chunk_arg`: ``--k-chunk auto|WORDS`` (gemm engine).

Bad values raise :class:`~exion.errors.ExionError`; ``exion.gen.cli.main`` prints it as one
line ``exion: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from exion.config import PRESETS, Config, get_config
from exion.errors import ExionError
from exion.paths import write_json

__all__ = ["add_config", "load_cfg", "add_seed", "seed_of", "add_waves", "add_report",
           "add_mask", "load_mask", "load_npy", "write_json", "progress", "check_output"]


# -- config --------------------------------------------------------------------------------
def add_config(parser, default: str = "toy") -> None:
    """``--config NAME|FILE``: a preset of :data:`exion.config.PRESETS` or a TOML file."""
    # "%(default)s" (not the value itself): argparse's ArgumentDefaultsHelpFormatter then
    # does not print the default a second time.
    parser.add_argument("--config", default=default, metavar="NAME|FILE",
                        help=f"preset name ({', '.join(PRESETS)}) or TOML file "
                             f"(default: %(default)s)")


def load_cfg(arg: str) -> Config:
    return get_config(arg)


# -- seed ----------------------------------------------------------------------------------
def add_seed(parser, default: int | None = None, help: str | None = None) -> None:
    """``--seed N``. ``default=None``: a random seed, printed (see :func:`seed_of`)."""
    if help is None:
        help = ("random seed (default: random, printed; EXION_SEED=N fixes it)"
                if default is None else "random seed (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=default, help=help)


def seed_of(args) -> int:
    """``--seed`` if given, else ``$EXION_SEED``, else a fresh random seed."""
    if args.seed is not None:
        return args.seed
    from exion.sim.runner import new_seed
    return new_seed()


# -- waves ---------------------------------------------------------------------------------
def add_waves(parser) -> None:
    parser.add_argument("--waves", action="store_true",
                        help="write an FST waveform into the run's own folder under build/ "
                             "(also EXION_WAVES=1)")


# -- report / json -------------------------------------------------------------------------
def add_report(parser, flag: str = "--report", default_path: str | None = None) -> None:
    """``--report R.json`` or ``--json OUT.json``: where to write the figures as JSON.

    ``default_path``: the file written when the option is not given (shown in the help);
    without it nothing is written unless asked.
    """
    metavar = "R.json" if flag == "--report" else "OUT.json"
    help = ("write the figures as JSON" if default_path is None else
            f"where to write the figures (default: {default_path})")
    parser.add_argument(flag, default=None, metavar=metavar, help=help)


# -- masks ---------------------------------------------------------------------------------
MASK_HELP = ("2-D boolean (or 0/1 integer) .npy array, the M x N output mask "
             "(1 = output must be computed)")


def add_mask(parser, required: bool = True, absent: str = "") -> None:
    """``--mask M.npy``; an optional one says what its absence means (``absent``)."""
    help = MASK_HELP + (f"; without it: {absent}" if absent else "")
    parser.add_argument("--mask", required=required, default=None, metavar="M.npy", help=help)


def load_mask(path: str, option: str = "--mask", shape: tuple | None = None,
              shape_from: str = "") -> np.ndarray:
    """A 2-D boolean mask from ``path`` (0/1 integers accepted); ``shape``, if given, is the
    (M, N) it must have (``shape_from`` says where that comes from, for the message)."""
    arr = load_npy(path, option, ndim=2)
    if shape is not None and arr.shape != tuple(shape):
        raise ExionError(f"{option} {path} has shape {arr.shape}, expected (M, N) = "
                         f"{tuple(shape)}" + (f" from {shape_from}" if shape_from else ""))
    if arr.dtype.kind != "b":
        if arr.dtype.kind not in "iu" or (arr.size and not np.all((arr == 0) | (arr == 1))):
            raise ExionError(f"{option}: {path!r} must hold boolean (0/1) values, got dtype "
                             f"{arr.dtype}" + (" with other values" if arr.dtype.kind in "iu"
                                               else ""))
        arr = arr != 0
    return arr


# -- arrays --------------------------------------------------------------------------------
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


# -- progress ------------------------------------------------------------------------------
def add_k_chunk(parser, extra: str = "") -> None:
    """``--k-chunk auto|WORDS``: the gemm engine's K-splits (``golden.cycles.engine_chunks``;
    ``extra`` ends the help with what the command does beyond that)."""
    parser.add_argument("--k-chunk", type=k_chunk_arg, default=None, metavar="auto|WORDS",
                        help="gemm engine K-splits (docs/gemm.md, 'K-splits'): pieces of at "
                             "most WORDS L-words, each a run adding into the OMEM the "
                             "earlier left; auto = the piece the cycle model finds fastest "
                             "for this mask, dataflow and bandwidth; default: the fewest "
                             "pieces IMEM allows (one when K fits)" + extra)


def k_chunk_arg(text: str):
    """``--k-chunk``: ``auto`` or a positive integer (L-words per K-split of the gemm
    engine's host tiling, ``golden.cycles.engine_chunks``); the config's IMEM bound is
    checked where the config is known."""
    import argparse
    if text == "auto":
        return "auto"
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid: give 'auto' or a positive "
                                         f"integer (L-words per K-split)")
    return v


def check_output(path, option: str) -> None:
    """Fail before any work if output file ``path`` (of ``option``) cannot be written: it is
    a folder, or its nearest existing folder is not writable. Creates nothing."""
    p = Path(path)
    if p.is_dir():
        raise ExionError(f"{option} {str(p)!r} is a folder; give a file name")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ExionError(f"{option} {str(p)!r} cannot be written: {str(parent)!r} is not a "
                         "writable folder")


def progress(msg: str) -> None:
    """Progress lines of long steps (generation, Verilation, synthesis) go to stderr."""
    print(f"[exion] {msg}", file=sys.stderr, flush=True)

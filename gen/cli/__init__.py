"""The ``exion`` command line (entry point ``exion = "exion.gen.cli:main"``).

One module per command group, each with a ``register(subparsers)`` function, listed in
:data:`COMMAND_MODULES` (a new group is one more entry there):

* ``gen``, ``lint``            -- :mod:`exion.gen.cli.gen`
* ``demo``                     -- :mod:`exion.gen.cli.demo`
* ``golden ...``               -- :mod:`exion.gen.cli.golden` (golden-model figures, no RTL)
* ``sim ...``                  -- :mod:`exion.gen.cli.sim` (Verilated RTL runs checked against
  golden)
* ``synth``, ``pnr``           -- :mod:`exion.gen.cli.fpga` (Yosys / nextpnr FPGA flow)
* ``accuracy``, ``trace``      -- :mod:`exion.gen.cli.workload` (tiny DiT)
* ``evaluate``                 -- :mod:`exion.gen.cli.evaluate` (system model, seven workloads)
* ``generate``                 -- :mod:`exion.gen.cli.dsc` (a digit through the DSC core)
* ``regress``, ``sweep``       -- :mod:`exion.gen.cli.regress` (RTL regressions, config sweeps on Dask)
* ``formal``                   -- :mod:`exion.gen.cli.formal` (SymbiYosys proofs, mutants)

Options every command shares (config, seed, waves, report/json, masks) come from one block
each in :mod:`exion.gen.cli.options`. The CLI is the only part of ``exion.gen`` that uses
``exion.sim`` (lazily, inside the commands that simulate); ``exion.sim`` never imports it.

Bad input (unknown config, invalid field, unreadable file, wrong array shape) prints one line
``exion: error: ...`` naming the problem and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from exion import PRESETS, __version__
from exion.errors import ExionError

# Command groups, in the order `exion --help` lists them: modules of this package.
COMMAND_MODULES = ["gen", "demo", "golden", "sim", "fpga", "workload", "evaluate", "dsc",
                   "regress", "formal"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exion",
        description=(
            "Generator for the EXION diffusion-model accelerator: Amaranth RTL, NumPy golden "
            "model, Verilator simulation checked bit-exactly against golden.\n\n"
            f"Configs: a preset name ({', '.join(PRESETS)}) or a TOML file (see configs/ "
            "and docs/config.md)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'exion COMMAND --help' for the options of each command.")
    parser.add_argument("--version", action="version", version=f"exion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ExionError as e:
        print(f"exion: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # an output that could not be written (a full disk, a lost folder)
        where = f"{e.filename!r}: " if e.filename else ""
        print(f"exion: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("exion: interrupted", file=sys.stderr)
        return 130

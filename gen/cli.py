"""The ``exion`` command line.

Subcommands live in their own modules, each with a ``register(subparsers)`` function:

* ``gen``, ``lint``, ``demo``  -- ``exion.gen.cli_gen``
* ``golden ...``               -- ``exion.gen.cli_golden`` (golden-model figures, no RTL)
* ``sim ...``                  -- ``exion.gen.cli_sim`` (Verilated RTL runs checked against golden)
* ``synth``, ``pnr``           -- ``exion.gen.cli_fpga`` (Yosys / nextpnr FPGA flow)
* ``accuracy``                 -- ``exion.gen.cli_workload`` (tiny DiT accuracy table)

Bad input (unknown config, invalid field, unreadable file, wrong array shape) prints one line
``exion: error: ...`` naming the problem and exits with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from exion import __version__
from exion.errors import ExionError

SUBCOMMAND_MODULES = [
    "exion.gen.cli_gen",
    "exion.gen.cli_golden",
    "exion.gen.cli_sim",
    "exion.gen.cli_fpga",
    "exion.gen.cli_workload",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exion",
        description=(
            "Generator for the EXION diffusion-model accelerator: Amaranth RTL, NumPy golden "
            "model, Verilator simulation checked bit-exactly against golden.\n\n"
            "Configs: a preset name (toy, exion16) or a TOML file (see configs/ and "
            "docs/config.md)."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'exion COMMAND --help' for the options of each command.")
    parser.add_argument("--version", action="version", version=f"exion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ExionError as e:
        print(f"exion: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("exion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

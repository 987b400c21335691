"""``exion golden ...``: golden-model figures without RTL.

Each sub-subcommand lives in its own module with ``register(golden_subparsers)``.
"""

from __future__ import annotations

import importlib

# Modules of this package, each with ``register(golden_subparsers)``.
GOLDEN_MODULES = [
    "golden_conmerge",   # conmerge, cycles
    "golden_predict",    # predict, ffnr
    "golden_block",      # block (dataflow model, docs/dataflow.md)
]


def register(sub) -> None:
    p = sub.add_parser(
        "golden", help="golden-model figures (ConMerge, FFN-Reuse, eager prediction, cycles)",
        description="Run the NumPy golden model on masks or operands and print the figures "
                    "the hardware will be held to; every command also writes JSON.")
    gsub = p.add_subparsers(dest="golden_command", metavar="WHAT", required=True)
    for name in GOLDEN_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(gsub)

"""``exion golden ...``: golden-model figures without RTL.

Each sub-subcommand lives in its own module with ``register(golden_subparsers)``.
"""

from __future__ import annotations

import importlib

GOLDEN_MODULES = [
    "exion.gen.golden_conmerge_cmd",   # conmerge, cycles
    "exion.gen.golden_predict_cmd",    # predict, ffnr
]


def register(sub) -> None:
    p = sub.add_parser(
        "golden", help="golden-model figures (ConMerge, FFN-Reuse, eager prediction, cycles)",
        description="Run the NumPy golden model on masks or operands and print the figures "
                    "the hardware will be held to; every command also writes JSON.")
    gsub = p.add_subparsers(dest="golden_command", metavar="WHAT", required=True)
    for name in GOLDEN_MODULES:
        importlib.import_module(name).register(gsub)
    importlib.import_module("exion.gen.cmd_block").register_golden(gsub)  # block (issue 17)

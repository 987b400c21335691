"""``exion gen`` and ``exion lint``: Verilog of one block, and Verilator lint of the blocks."""

from __future__ import annotations

import argparse
from pathlib import Path

from exion.errors import ExionError

from .options import add_config, load_cfg


def register(sub) -> None:
    from exion.gen.verilog import TOPS
    tops = "\n".join(f"  {name:8s} {desc}" for name, (_, desc) in TOPS.items())

    p = sub.add_parser(
        "gen", help="generate Verilog + JSON manifest for one block",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate the Verilog of one block for a config, plus a JSON manifest "
                    "(config, derived values, config hash, latency, ports), a FuseSoC "
                    "core file and (DSC tops) a C register header beside it.\n\n"
                    f"Tops:\n{tops}")
    add_config(p)
    p.add_argument("--top", required=True, choices=list(TOPS), help="block to generate")
    p.add_argument("--out", default="build/gen", metavar="DIR",
                   help="output folder (default: build/gen); gets exion_<top>.v and .json, "
                        "a FuseSoC exion_<top>.core and, for a top with registers, "
                        "exion_<top>_regs.h")
    p.add_argument("--lint", action="store_true",
                   help="also run verilator --lint-only -Wall on the result")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("lint", help="verilator --lint-only -Wall on generated blocks",
                       description="Generate each block (into a temporary build folder) and "
                                   "lint it; exit 1 on any warning.")
    add_config(p)
    p.add_argument("--top", default="all", choices=["all", *TOPS],
                   help="block to lint (default: all)")
    p.set_defaults(func=cmd_lint)


def cmd_gen(args) -> int:
    from exion.gen.ip import write_ip_files
    from exion.gen.verilog import generate, lint, sources
    cfg = load_cfg(args.config)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ExionError(f"--out {str(out)!r} exists and is not a folder")
    g = generate(cfg, args.top, out, reuse=False)
    print(f"wrote {g.verilog} and {g.manifest} (config {cfg.name}, hash {cfg.hash}, "
          f"{g.seconds:.2f} s)")
    for model in sources(g.verilog)[1:]:
        print(f"wrote {model} (simulation model of a vendor cell the Verilog instantiates; "
              f"simulate and lint it with the Verilog, synthesis uses the real cell)")
    for path in write_ip_files(cfg, g):
        what = "FuseSoC core file" if path.suffix == ".core" else "C register header"
        print(f"wrote {path} ({what})")
    if args.lint:
        problems = lint(g.verilog, f"exion_{args.top}")
        if problems:
            print("\n".join(problems))
            return 1
        print("lint: clean (verilator --lint-only -Wall)")
    return 0


def cmd_lint(args) -> int:
    from exion.gen.verilog import TOPS, generate_shared, lint
    cfg = load_cfg(args.config)
    tops = list(TOPS) if args.top == "all" else [args.top]
    bad = 0
    for top in tops:
        g = generate_shared(cfg, top)
        problems = lint(g.verilog, f"exion_{top}")
        print(f"{top:8s} {cfg.name:10s} {'clean' if not problems else 'WARNINGS'}")
        for line in problems:
            print(f"  {line}")
        bad += bool(problems)
    return 1 if bad else 0

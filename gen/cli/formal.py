"""``exion formal``: prove the RTL's properties with SymbiYosys (``docs/formal.md``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from exion.errors import ExionError

from .options import add_report, progress


def register(sub) -> None:
    p = sub.add_parser(
        "formal", help="prove the CAU, EPRE selector, SDUE and gemm properties (SymbiYosys)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the property harnesses of exion.sim.formal with SymbiYosys (yowasp-sby, "
            "smtbmc engine on Yices 2) on a formal-sized config, check that each proof's "
            "cover task reaches its checks within the depth, and that every mutant (a "
            "deliberately broken design) makes its property fail. Prints one line per run "
            "and exits 1 if a proof fails or a mutant passes. `exion formal --list` lists "
            "the proofs with their tier, mode and depth (docs/formal.md has the table)."),
        epilog="Example: exion formal --proof cau --no-mutants")
    p.add_argument("--list", action="store_true", help="list the proofs and exit")
    p.add_argument("--proof", action="append", metavar="NAME",
                   help="run only this proof (repeatable; default: every fast proof, with "
                        "--long every proof)")
    p.add_argument("--long", action="store_true", help="also the long proofs")
    p.add_argument("--no-mutants", dest="mutants", action="store_false",
                   help="skip the mutation runs")
    p.add_argument("--no-cover", dest="cover", action="store_false",
                   help="skip the cover (depth reaches the checks) runs")
    p.add_argument("--timeout", type=float, default=1800.0, metavar="S",
                   help="seconds allowed per SymbiYosys run (default: 1800)")
    p.add_argument("--out", default="build/formal", metavar="DIR",
                   help="work folder: one subfolder per run with top.il, task.sby, sby.log "
                        "and any counterexample trace, and formal.json, the report unless "
                        "--report is given (default: build/formal)")
    add_report(p)
    p.set_defaults(func=cmd_formal)


def cmd_formal(args) -> int:
    from exion.sim.formal.proofs import PROOFS, run_mutation, run_proof
    from exion.sim.formal.sby import tools_missing
    if args.list:
        for p in PROOFS.values():
            print(f"{p.name:15s} {p.tier:4s} {p.mode} depth {p.depth:3d}  {p.block}: {p.note}"
                  + (f"; mutants {', '.join(p.mutants)}" if p.mutants else ""))
        return 0
    if args.timeout <= 0:
        raise ExionError(f"--timeout = {args.timeout} is invalid: must be > 0 seconds")
    unknown = [n for n in args.proof or [] if n not in PROOFS]
    if unknown:
        raise ExionError(f"--proof {unknown[0]!r} is not a proof: choose from "
                         f"{', '.join(PROOFS)}")
    missing = tools_missing()
    if missing:
        raise ExionError(f"formal: missing tool(s) {', '.join(missing)}: run `make venv`")
    names = args.proof or [n for n, p in PROOFS.items() if args.long or p.tier == "fast"]
    out = Path(args.out)
    rows, bad = [], 0
    for name in names:
        p = PROOFS[name]
        runs = [("proof", lambda n=name: run_proof(n, out, timeout=args.timeout), "PASS")]
        if args.cover and p.cover_depth:
            runs.append(("cover", lambda n=name: run_proof(n, out, timeout=args.timeout,
                                                           cover=True), "PASS"))
        if args.mutants:
            runs += [(f"mutant {mu} ({g})",
                      lambda n=name, mu=mu: run_mutation(n, mu, out, timeout=args.timeout),
                      "FAIL") for mu, g in p.mutants.items()]
        for what, run, want in runs:
            progress(f"formal: {name} {what} ...")
            r = run()
            ok = r.status == want
            bad += not ok
            where = f" at {', '.join(sorted(set(r.failed)))} step {r.step}" if r.failed else ""
            print(f"{'ok ' if ok else 'BAD'} {name:15s} {what:26s} {r.mode:5s} depth "
                  f"{r.depth:3d} {r.status:7s} {r.seconds:6.1f} s{where}")
            rows.append({**r.as_dict(), "proof": name, "run": what, "expected": want,
                         "ok": ok})
    path = Path(args.report) if args.report else out / "formal.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": rows, "bad": bad}, indent=2))
    print(f"{len(rows) - bad} ok, {bad} bad; report {path}")
    return 1 if bad else 0

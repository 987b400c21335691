"""What a user waits for on the first ``make demo``: generation and Verilator build of a top,
before and after the generator's shortcuts (issue 21 item 4).

For one config and top it measures, each in a fresh process (CPU seconds of the process and
its children, and wall seconds; the machine may be shared, so CPU is the figure to compare):

* ``gen-original``: Amaranth's own memory-init emission, Verilog as Yosys writes it;
* ``gen-fast``: :func:`exion.gen.fastemit.fast_meminit` + :func:`~exion.gen.fastemit.fold_zero_init`
  (what ``exion gen`` does);
* ``build-Os`` / ``build-O0`` (with ``--build``): the Verilator build of the fast Verilog at
  the default C++ level and at the demo's ``-O0``.

Prints a table and writes ``build/bench/perf_demo.json``::

    python bench/perf_demo.py --config exion16 --top gemm --build
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exion.paths import write_json

_GEN = r"""
import json, sys, time, resource
from amaranth.back import verilog
from exion.config import get_config
from exion.gen.verilog import TOPS, _port_signals
from exion.gen.fastemit import fast_meminit, fold_zero_init
cfg, top, mode, out = get_config(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
comp = TOPS[top][0](cfg)
ports = [p[2] for p in _port_signals(comp)]
if mode == "fast":
    with fast_meminit():
        text = verilog.convert(comp, name="exion_" + top, ports=ports, emit_src=False,
                               strip_internal_attrs=True)
    text, folded = fold_zero_init(text)
else:
    text = verilog.convert(comp, name="exion_" + top, ports=ports, emit_src=False,
                           strip_internal_attrs=True)
    folded = 0
open(out, "w").write(text)
print(json.dumps({"bytes": len(text), "lines": text.count("\n"), "folded": folded}))
"""


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str], env=None) -> tuple[float, float, str]:
    c0, t0 = _child_cpu(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return time.perf_counter() - t0, _child_cpu() - c0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="exion16")
    ap.add_argument("--top", default="gemm")
    ap.add_argument("--build", action="store_true", help="also time the Verilator builds")
    ap.add_argument("--json", default="build/bench/perf_demo.json")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("original", "fast"):
            vpath = Path(tmp) / f"{mode}.v"
            wall, cpu, out = _timed([sys.executable, "-c", _GEN, args.config, args.top, mode,
                                     str(vpath)])
            rows.append({"step": f"gen-{mode}", "wall_s": wall, "cpu_s": cpu,
                         **json.loads(out.strip().splitlines()[-1])})
            print(f"{rows[-1]['step']:>13}: {wall:7.1f} s wall {cpu:7.1f} s CPU, "
                  f"{rows[-1]['bytes'] / 1e6:.1f} MB Verilog", flush=True)
        if args.build:
            for opt in ("-Os", "-O0"):
                env = dict(os.environ, EXION_BUILD=str(Path(tmp) / f"cache{opt}"),
                           EXION_CXX_OPT=opt)
                code = ("from exion.config import get_config; from exion.sim.runner import "
                        f"rtl_build; b = rtl_build(get_config({args.config!r}), {args.top!r}); "
                        "print(b.gen_seconds, b.build_seconds)")
                wall, cpu, out = _timed([sys.executable, "-c", code], env=env)
                gen_s, build_s = map(float, out.split()[-2:])
                rows.append({"step": f"build{opt}", "wall_s": build_s,
                             "cpu_s": None, "gen_and_build_wall_s": wall,
                             "gen_and_build_cpu_s": cpu})
                print(f"{rows[-1]['step']:>13}: {build_s:7.1f} s wall (Verilator + g++), "
                      f"gen + build {wall:.1f} s wall {cpu:.1f} s CPU", flush=True)
    report = {"config": args.config, "top": args.top, "load_avg": os.getloadavg(),
              "rows": rows}
    out = write_json(args.json, report)
    print(f"load average {os.getloadavg()[0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

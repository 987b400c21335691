"""cocotb testbench: stream masks through the CAU and record every pass it emits.

The pytest side (:mod:`exion.sim.cau_rtl`) pickles the cases (mask, sort) to
``EXION_PARAMS["cases"]`` and compares the decoded passes with golden ``conmerge``; this bench
only drives the hardware, one coroutine step per clock cycle:

* input: the beats of :func:`~exion.sim.cau_rtl.mask_beats` (packed with the CAU's own
  layout), with idle cycles (valid low) at probability ``EXION_PARAMS["gaps"]``;
* output: ready low at probability ``EXION_PARAMS["backpressure"]``; every transfer is
  unpacked and kept with the cycle it happened in;
* per case it also counts the cycles stage B and stage C were ``active``.

Each case starts on an idle CAU (the previous case drained), so its cycle counts are its own.
"""

from __future__ import annotations

import pickle

import cocotb
from cocotb.triggers import FallingEdge

from exion.hw.cau import cau_pass_layout, mask_layout
from exion.sim.tb_common import (Stopwatch, bench_config, manifest, params, rng, start,
                                    write_report)
from exion.sim.cau_rtl import mask_beats
from exion.sim.payload import pack, unpack


@cocotb.test()
async def cau_cases(dut):
    cfg = bench_config()
    const = manifest()["constants"]
    P, NMAX = const["cols_per_cycle"], const["max_cols"]
    in_layout = mask_layout(cfg, P, const["sort"] == "runtime")
    out_layout = cau_pass_layout(cfg, NMAX)
    p = params()
    gen = rng()
    gaps, bp = float(p.get("gaps", 0.0)), float(p.get("backpressure", 0.0))
    with open(p["cases"], "rb") as fh:
        cases = pickle.load(fh)
    await start(dut)
    dut.mask__valid.value = 0
    dut.out__ready.value = 0
    watch = Stopwatch()
    outputs, total = [], 0
    for mask, sort, *ways in cases:    # (mask, sort[, run-time merge ways])
        if const["sort"] != "runtime" and sort != const["sort"]:
            raise ValueError(f"case sort {sort!r} needs a CAU generated with sort='runtime' "
                             f"or {sort!r}; this one has {const['sort']!r}")
        beats = [pack(in_layout, b) for b in mask_beats(cfg, mask, P, sort == "none",
                                                          const["sort"] == "runtime", *ways)]
        i, cyc, passes, pcyc = 0, 0, [], []
        b_act = c_act = 0
        while True:
            offer = i < len(beats) and (gaps == 0.0 or gen.random() >= gaps)
            dut.mask__valid.value = int(offer)
            if offer:
                dut.mask__payload.value = beats[i]
            rdy = int(bp == 0.0 or gen.random() >= bp)
            dut.out__ready.value = rdy
            in_rdy = int(dut.mask__ready.value)
            out_valid = int(dut.out__valid.value)
            raw = int(dut.out__payload.value) if out_valid and rdy else 0
            active = int(dut.active.value)
            if i >= len(beats) and not int(dut.busy.value):
                break
            await FallingEdge(dut.clk)
            cyc += 1
            b_act += (active >> 1) & 1
            c_act += (active >> 2) & 1
            if offer and in_rdy:
                i += 1
            if out_valid and rdy:
                passes.append(unpack(out_layout, raw))
                pcyc.append(cyc)
        total += cyc
        outputs.append({"passes": passes, "pass_cycles": pcyc, "cycles": cyc,
                        "stage_cycles": {"B": b_act, "C": c_act}})
    assert not int(dut.overflow.value), "CAU overflow: a block wider than max_cols"
    with open(p["results"], "wb") as fh:
        pickle.dump(outputs, fh)
    write_report({"block": "cau", "config": cfg.name, "cases": len(cases), "cycles": total,
                  "seconds": watch.seconds(),
                  "passes": sum(len(o["passes"]) for o in outputs), "passed": True})

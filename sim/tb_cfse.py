"""cocotb bench: the CFSE's three units (GELU, softmax, layer norm) on pickled jobs.

The pytest / CLI side (:mod:`exion.sim.cfse_rtl`) prepares each job (the input beats as an
array of L-lane rows, the unit's control values, gamma / beta words) and compares the
results with golden; this bench only drives the hardware, per job:

1. set the unit's run-time registers (GELU mode and requant constants, row length, eps) and
   write gamma / beta words (layer norm);
2. every cycle: offer the next input beat (or, with probability ``gaps``, an idle cycle) and
   drive the output's ``ready`` (low with probability ``stall``); after the inputs settle
   (ReadOnly), record the transfers of both streams;
   (a restreamed long row is in the beats three times, ``out_beats`` counts its outputs);
3. stop when every output beat has arrived; ``cycles`` = cycle of the last output transfer -
   cycle of the first input transfer + 1.

Timing randomness comes from the NumPy generator seeded with ``cocotb.RANDOM_SEED``.
"""

from __future__ import annotations

import pickle

import cocotb
from amaranth import signed
from amaranth.lib import data
from cocotb.triggers import FallingEdge, ReadOnly

from exion.hw.cfse import fx_vector, gb_layout, gelu_par_layout
from exion.sim.tb_common import Stopwatch, bench_config, manifest, params, rng, start, write_report
from exion.sim.payload import pack, unpack

PORTS = {"gelu": ("gelu__inp", "gelu__out"), "softmax": ("softmax__x", "softmax__y"),
         "layernorm": ("layernorm__x", "layernorm__y")}


def _layouts(cfg, fn):
    L = cfg.lanes
    if fn == "gelu":
        return data.ArrayLayout(signed(max(cfg.acc_width, 16)), L), fx_vector(L)
    return fx_vector(L), fx_vector(L, signed_=fn != "softmax")


async def _setup(dut, cfg, job):
    fn = job["fn"]
    if fn == "gelu":
        dut.gelu__par.value = pack(gelu_par_layout(), job["par"])
    elif fn == "softmax":
        dut.softmax__n.value = job["n"]
    else:
        dut.layernorm__n.value = job["n"]
        dut.layernorm__eps.value = job["eps"]
        gb = gb_layout(cfg.lanes, manifest()["constants"]["layernorm"]["n_lim"])
        dut.layernorm__gb__valid.value = 1
        for addr, (g, b) in enumerate(zip(job["gamma"], job["beta"])):
            dut.layernorm__gb__payload.value = pack(gb, {"addr": addr, "gamma": g.tolist(),
                                                         "beta": b.tolist()})
            await FallingEdge(dut.clk)
        dut.layernorm__gb__valid.value = 0


async def run_job(dut, cfg, job, gen):
    fn = job["fn"]
    in_l, out_l = _layouts(cfg, fn)
    ip, op = PORTS[fn]
    i_valid, i_payload, i_ready = (getattr(dut, f"{ip}__{s}") for s in ("valid", "payload",
                                                                        "ready"))
    o_valid, o_payload, o_ready = (getattr(dut, f"{op}__{s}") for s in ("valid", "payload",
                                                                       "ready"))
    await _setup(dut, cfg, job)
    beats = [pack(in_l, b.tolist()) for b in job["beats"]]
    gaps, stall = float(job.get("gaps", 0.0)), float(job.get("stall", 0.0))
    outs, k, cyc, first, last = [], 0, 0, None, None
    want = int(job.get("out_beats", len(beats)))      # restreamed rows: 3 beats in per out
    limit = 50 * (len(beats) + 1) + 10_000
    while len(outs) < want:
        offer = k < len(beats) and not (gaps and gen.random() < gaps)
        i_valid.value = int(offer)
        if offer:
            i_payload.value = beats[k]
        o_ready.value = int(not (stall and gen.random() < stall))
        await ReadOnly()
        if offer and int(i_ready.value):
            first = cyc if first is None else first
            k += 1
        if int(o_valid.value) and int(o_ready.value):
            outs.append(o_payload.value.to_unsigned())
            last = cyc
        await FallingEdge(dut.clk)
        cyc += 1
        assert cyc < limit, f"job {job['name']}: no progress after {cyc} cycles " \
                            f"({k} of {len(beats)} beats in, {len(outs)} out)"
    i_valid.value = 0
    o_ready.value = 1
    return {"y": [unpack(out_l, raw) for raw in outs], "cycles": last - first + 1}


@cocotb.test()
async def cfse_jobs(dut):
    cfg = bench_config()
    p = params()
    gen = rng()
    with open(p["jobs"], "rb") as fh:
        jobs = pickle.load(fh)
    await start(dut)
    for ip, op in PORTS.values():
        getattr(dut, f"{ip}__valid").value = 0
        getattr(dut, f"{op}__ready").value = 1
    dut.layernorm__gb__valid.value = 0
    watch = Stopwatch()
    results = []
    for job in jobs:
        results.append(await run_job(dut, cfg, job, gen))
    with open(p["results"], "wb") as fh:
        pickle.dump(results, fh)
    write_report({"block": "cfse", "config": cfg.name, "jobs": len(jobs),
                  "cycles": [r["cycles"] for r in results], "seconds": watch.seconds(),
                  "passed": True})

"""cocotb bench: runs programs of FFN-Reuse commands; records outputs, cycles, results.

The pytest side (:mod:`exion.sim.ffnr_rtl`) builds the programs (one per case: a single-tile
DENSE / MASK / DELTA / YSTORE / YLOAD, or a tiled layer CLEAR, HIST per tile, THRESH, STORE +
MASK (+ DELTA) per tile), packs every command and beat with the layouts of ``hw/ffnr.py``
and pickles them to ``EXION_PARAMS["cases"]``; this bench only drives the hardware, one step
per clock cycle, and returns raw payloads (the host unpacks and compares with the golden
model). A step is ``(cmd, beats, inp, out, read)``: the packed command, the packed beats it
takes on ``inp`` (``h`` or ``y``), the output port it collects (``mask``, ``delta``,
``y_out`` or None), and whether to read the histogram and threshold after it. Input streams
(``cmd``, ``h``, ``y``) idle at probability ``gaps``; the collected output's ready is low at
probability ``backpressure``. Each command's cycles run from its transfer to idle.
"""

from __future__ import annotations

import pickle

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from exion.sim.tb_common import (Stopwatch, bench_config, manifest, params, rng, start,
                                    write_report)


async def command(dut, gen, cmd: int, beats: list[int], out: str | None, gaps: float,
                  bp: float, inp: str = "h"):
    """Offer ``cmd``, then ``beats`` on ``inp``; collect ``out`` until the unit is idle.
    Returns (raw output payloads, cycles from the command's transfer to idle)."""
    i, sent, got, cyc = 0, False, [], 0
    while True:
        offer_c = not sent and (gaps == 0.0 or gen.random() >= gaps)
        dut.cmd__valid.value = int(offer_c)
        if offer_c:
            dut.cmd__payload.value = cmd
        offer_h = sent and i < len(beats) and (gaps == 0.0 or gen.random() >= gaps)
        for port in ("h", "y"):
            getattr(dut, f"{port}__valid").value = int(offer_h and port == inp)
        if offer_h:
            getattr(dut, f"{inp}__payload").value = beats[i]
        rdy = int(bp == 0.0 or gen.random() >= bp)
        for port in ("mask", "delta", "y_out"):
            getattr(dut, f"{port}__ready").value = rdy if out == port else 0
        await ReadOnly()
        c_rdy, h_rdy = int(dut.cmd__ready.value), int(getattr(dut, f"{inp}__ready").value)
        o_val = int(getattr(dut, f"{out}__valid").value) if out else 0
        raw = int(getattr(dut, f"{out}__payload").value) if o_val and rdy else 0
        if sent and i >= len(beats) and not int(dut.busy.value):
            await FallingEdge(dut.clk)
            return got, cyc
        await FallingEdge(dut.clk)
        if sent:
            cyc += 1
        if offer_c and c_rdy:
            sent, cyc = True, 1
        if offer_h and h_rdy:
            i += 1
        if o_val and rdy:
            got.append(raw)


async def read_results(dut, bins: int) -> dict:
    """The histogram through ``hist_addr`` (one bin per cycle) and the threshold outputs."""
    hist = []
    for b in range(bins):
        dut.hist_addr.value = b
        await ReadOnly()
        hist.append(int(dut.hist_data.value))
        await FallingEdge(dut.clk)
    return {"hist": hist, "theta": int(dut.theta.value), "theta_bin": int(dut.theta_bin.value),
            "ones": int(dut.ones.value), "total": int(dut.total.value)}


@cocotb.test()
async def ffnr_cases(dut):
    cfg = bench_config()
    bins = manifest()["constants"]["bins"]
    p = params()
    gen = rng()
    gaps, bp = float(p.get("gaps", 0.0)), float(p.get("backpressure", 0.0))
    with open(p["cases"], "rb") as fh:
        programs = pickle.load(fh)
    await start(dut)
    for port in ("cmd", "h", "y"):
        getattr(dut, f"{port}__valid").value = 0
    dut.hist_addr.value = 0
    watch = Stopwatch()
    outputs, total = [], 0
    for prog in programs:
        steps = []
        for cmd, beats, inp, out, read in prog:
            got, cyc = await command(dut, gen, cmd, beats, out, gaps, bp, inp=inp)
            step = {"out": got, "cycles": cyc, "error": int(dut.error.value)}
            if read:
                step["results"] = await read_results(dut, bins)
            total += cyc
            steps.append(step)
        outputs.append(steps)
    with open(p["results"], "wb") as fh:
        pickle.dump(outputs, fh)
    write_report({"block": "ffnr", "config": cfg.name, "cases": len(programs), "cycles": total,
                  "seconds": watch.seconds(), "passed": True})

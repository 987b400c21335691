"""cocotb bench: FFN-Reuse cases through the unit; record histogram, theta, mask and delta.

The pytest side (:mod:`exion.sim.ffnr_rtl`) pickles the cases ``(H, s_code, H' or None)`` to
``EXION_PARAMS["cases"]`` and compares with the golden model; this bench only drives the
hardware, one step per clock cycle. Per case: DENSE (command, then H beats), the histogram
read through ``hist_addr``, MASK (mask beats collected), DELTA with H' if given, and YSTORE
then YLOAD with Y_d if given. Input
streams (``cmd``, ``h``, ``y``) idle at probability ``gaps``; ``mask`` / ``delta`` / ``y_out`` ready is low at
probability ``backpressure``. Each command's cycles run from its transfer to idle.
"""

from __future__ import annotations

import pickle

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from exion.hw.cau import mask_layout
from exion.hw.ffnr import FfnrSizes, beat_layout, cmd_layout, delta_layout, y_layout
from exion.sim.tb_common import (Stopwatch, bench_config, manifest, params, rng, start,
                                    write_report)
from exion.sim.ffnr_rtl import (OP_DELTA, OP_DENSE, OP_MASK, OP_YLOAD, OP_YSTORE, cmd_fields,
                                h_beats)
from exion.sim.payload import pack, unpack


async def command(dut, gen, cmd: int, beats: list[int], out: str | None, out_layout,
                  gaps: float, bp: float, inp: str = "h"):
    """Offer ``cmd``, then ``beats`` on ``inp``; collect ``out`` until the unit is idle.
    Returns (unpacked output payloads, cycles from the command's transfer to idle)."""
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
            got.append(unpack(out_layout, raw))


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
    const = manifest()["constants"]
    sz = FfnrSizes(cfg, t_max=const["t_max"], n_max=const["n_max"], cols_per_cycle=const["P"],
                   mant_bits=const["mant_bits"], s_digits=const["s_digits"])
    c_lay, h_lay = cmd_layout(sz), beat_layout(cfg)
    m_lay, d_lay, y_lay = mask_layout(cfg, sz.P, True), delta_layout(cfg), y_layout(cfg)
    p = params()
    gen = rng()
    gaps, bp = float(p.get("gaps", 0.0)), float(p.get("backpressure", 0.0))
    with open(p["cases"], "rb") as fh:
        cases = pickle.load(fh)
    await start(dut)
    for port in ("cmd", "h", "y"):
        getattr(dut, f"{port}__valid").value = 0
    dut.hist_addr.value = 0
    watch = Stopwatch()
    outputs, total = [], 0
    for h, code, h_sparse, y_d in cases:
        T, N = h.shape
        beats = [pack(h_lay, b) for b in h_beats(cfg, h)]
        cyc = {}
        _, cyc["dense"] = await command(dut, gen, pack(c_lay, cmd_fields(OP_DENSE, T, N, code)),
                                        beats, None, None, gaps, bp)
        assert not int(dut.error.value), f"DENSE refused (T={T}, N={N}, s_code={code})"
        res = await read_results(dut, sz.bins)
        res["mask"], cyc["mask"] = await command(dut, gen, pack(c_lay, cmd_fields(OP_MASK)),
                                                 [], "mask", m_lay, gaps, bp)
        res["delta"] = None
        if h_sparse is not None:
            hb = [pack(h_lay, b) for b in h_beats(cfg, h_sparse)]
            res["delta"], cyc["delta"] = await command(
                dut, gen, pack(c_lay, cmd_fields(OP_DELTA)), hb, "delta", d_lay, gaps, bp)
        res["y"] = None
        if y_d is not None:
            yb = [pack(y_lay, b) for b in h_beats(cfg, y_d)]
            _, cyc["ystore"] = await command(
                dut, gen, pack(c_lay, cmd_fields(OP_YSTORE, T, d=y_d.shape[1])), yb, None,
                None, gaps, bp, inp="y")
            assert not int(dut.error.value), f"YSTORE refused (T={T}, D={y_d.shape[1]})"
            res["y"], cyc["yload"] = await command(dut, gen, pack(c_lay, cmd_fields(OP_YLOAD)),
                                                   [], "y_out", y_lay, gaps, bp)
        res["cycles"] = cyc
        total += sum(cyc.values())
        outputs.append(res)
    with open(p["results"], "wb") as fh:
        pickle.dump(outputs, fh)
    write_report({"block": "ffnr", "config": cfg.name, "cases": len(cases), "cycles": total,
                  "seconds": watch.seconds(), "passed": True})

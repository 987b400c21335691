"""cocotb testbench: output-sparse products through the ``gemm`` top (CAU -> fetch -> SDUE).

The pytest side (:mod:`exion.sim.gemm_rtl`) cuts every product into tiles and pickles them
to ``EXION_PARAMS["cases"]``; per tile this bench

1. writes IMEM, GMEM and OMEM (the host's loads; A, B and the previous output),
2. sets ``setup`` and streams the tile's mask beats (with ``EXION_PARAMS["gaps"]``: random
   idle cycles, valid low), then waits for ``busy`` to fall,
3. reads OMEM back and records the busy cycles and passes the RTL counted.

No ConMerge vectors or descriptors come from the host: the engine derives them from the mask.
"""

from __future__ import annotations

import pickle

import cocotb
import numpy as np
from amaranth import signed
from amaranth.lib import data
from cocotb.triggers import FallingEdge

from exion.hw.cau import mask_layout
from exion.hw.gemm import flow_layout, kidx_layout, setup_layout
from exion.sim.tb_common import Stopwatch, bench_config, manifest, pack_words, params, rng, \
    send, start, unpack_signed, wait_idle, write_report
from exion.sim.payload import pack


@cocotb.test()
async def gemm_tiles(dut):
    cfg = bench_config()
    const = manifest()["constants"]
    p = params()
    gen = rng()
    R, W, A = cfg.rows, cfg.width, cfg.acc_width
    beat_layout = mask_layout(cfg, const["cols_per_cycle"], True)
    su_layout = setup_layout(cfg, const["max_regions"])
    fl_layout = flow_layout(cfg)
    omem_layout = data.ArrayLayout(signed(A), R)
    gaps = float(p.get("gaps", 0.0))
    with open(p["cases"], "rb") as fh:
        plans = pickle.load(fh)
    await start(dut)
    for sig in (dut.imem_w__en, dut.gmem_w__en, dut.omem_w__en, dut.mask__valid,
                dut.kidx_w__en):
        sig.value = 0
    kidx_layout_ = kidx_layout(cfg)
    watch = Stopwatch()
    outs, total = [], 0
    for tiles in plans:
        omems, cycles, passes, stalls, moved = [], [], [], [], []
        for t in tiles:
            # 1. host loads
            for addr, words in sorted(t.imem.items()):
                dut.imem_w__en.value = (1 << R) - 1
                dut.imem_w__addr.value = addr
                dut.imem_w__data.value = pack_words(words, W)
                await FallingEdge(dut.clk)
            dut.imem_w__en.value = 0
            for addr, word in sorted(t.gmem.items()):
                dut.gmem_w__en.value = 1
                dut.gmem_w__addr.value = addr
                dut.gmem_w__data.value = pack_words(word, W)
                await FallingEdge(dut.clk)
            dut.gmem_w__en.value = 0
            for addr, entries in sorted(getattr(t, "kidx", {}).items()):
                dut.kidx_w__en.value = 1
                dut.kidx_w__addr.value = addr
                dut.kidx_w__data.value = pack(kidx_layout_, entries)
                await FallingEdge(dut.clk)
            dut.kidx_w__en.value = 0
            # a later K-split adds into the OMEM the previous run left (not written)
            for addr in range(0 if getattr(t, "keep_omem", False) else t.omem.shape[0]):
                dut.omem_w__en.value = (1 << R) - 1
                dut.omem_w__addr.value = addr
                dut.omem_w__data.value = pack(omem_layout, [int(v) for v in t.omem[addr]])
                await FallingEdge(dut.clk)
            dut.omem_w__en.value = 0
            dut.setup.value = pack(su_layout, t.setup)
            dut.flow.value = pack(fl_layout, {"col_group": 0, "gb_bytes": 0, "nblocks": 1,
                                              "gcols": 0, "ngroups": 0, "gather": 0, "striped": 0,
                                              **(t.flow or {})})
            await FallingEdge(dut.clk)
            # 2. the mask
            c0, p0 = int(dut.cycles.value), int(dut.passes.value)
            s0, w0 = int(dut.stalls.value), int(dut.wwords.value)
            for beat in t.beats:
                while gaps and gen.random() < gaps:
                    dut.mask__valid.value = 0
                    await FallingEdge(dut.clk)
                await send(dut, "mask", pack(beat_layout, beat))
            dut.mask__valid.value = 0
            await wait_idle(dut)
            assert not int(dut.overflow.value), "CAU overflow: a block wider than max_cols"
            cycles.append(int(dut.cycles.value) - c0)
            passes.append(int(dut.passes.value) - p0)
            stalls.append(int(dut.stalls.value) - s0)
            moved.append(int(dut.wwords.value) - w0)
            # 3. read back
            n = t.omem.shape[0]
            om = np.zeros((n, R), np.int64)
            dut.omem_r__addr.value = 0
            await FallingEdge(dut.clk)
            for addr in range(n):
                if addr + 1 < n:
                    dut.omem_r__addr.value = addr + 1
                om[addr] = unpack_signed(int(dut.omem_r__data.value), R, A)
                await FallingEdge(dut.clk)
            omems.append(om)
        total += sum(cycles)
        outs.append({"omem": omems, "cycles": cycles, "passes": passes, "stalls": stalls,
                     "words": moved})
    with open(p["results"], "wb") as fh:
        pickle.dump(outs, fh)
    write_report({"block": "gemm", "config": cfg.name, "products": len(plans),
                  "busy_cycles": total, "seconds": watch.seconds(), "passed": True})

"""cocotb testbench: run SDUE programs (memory images + pass descriptors) and read OMEM back.

The pytest side (:mod:`exion.sim.sdue_rtl`) builds the programs with
:func:`exion.sim.program.build_program`, pickles them to ``EXION_PARAMS["programs"]`` and
compares the outputs with golden; this bench only drives the hardware:

1. write each batch's IMEM and WMEM words (all banks of a memory in parallel) and preload
   the OMEM regions with the running result (the previous outputs, or the partial sums of
   earlier batches when a row block's K-splits span batches);
2. push the batch's descriptors back to back (the driver never leaves a gap, so the
   measured cycles are the engine's own) and wait for ``busy`` to fall;
3. read the OMEM regions back. Per batch it records the busy cycles counted by the RTL.

With ``EXION_PARAMS["gaps"]`` the driver inserts random idle cycles between descriptors
(valid low) to check that nothing depends on back-to-back arrival; cycles are then not
compared with the model.
"""

from __future__ import annotations

import pickle
import time

import cocotb
from amaranth import signed
from amaranth.lib import data
from cocotb.triggers import FallingEdge

from exion.hw.dpu import operand_layout
from exion.hw.sdue import pass_layout
from exion.sim.tb_common import Stopwatch, bench_config, pack_words, params, rng, send, start, \
    unpack_signed, wait_idle, write_report
from exion.sim.payload import pack


@cocotb.test()
async def sdue_programs(dut):
    cfg = bench_config()
    p = params()
    gen = rng()
    R, C, W, A = cfg.rows, cfg.cols, cfg.width, cfg.acc_width
    desc_layout = pass_layout(cfg)
    omem_w_layout = data.ArrayLayout(signed(A), R)
    assert operand_layout(cfg).size == W * cfg.lanes
    with open(p["programs"], "rb") as fh:
        programs = pickle.load(fh)
    gaps = bool(p.get("gaps", False))
    await start(dut)
    for sig in (dut.imem_w__en, dut.wmem_w__en, dut.omem_w__en, dut.desc__valid):
        sig.value = 0
    watch = Stopwatch()
    outputs, total_cycles = [], 0
    for prog in programs:
        result = prog.prev.copy()
        batch_cycles, compute_seconds = [], 0.0
        for batch in prog.batches:
            # 1. memory images
            for addr, words in sorted(batch.imem.items()):
                dut.imem_w__en.value = (1 << R) - 1
                dut.imem_w__addr.value = addr
                dut.imem_w__data.value = pack_words(words, W)
                await FallingEdge(dut.clk)
            dut.imem_w__en.value = 0
            for addr, words in sorted(batch.wmem.items()):
                dut.wmem_w__en.value = (1 << C) - 1
                dut.wmem_w__addr.value = addr
                dut.wmem_w__data.value = pack_words(words, W)
                await FallingEdge(dut.clk)
            dut.wmem_w__en.value = 0
            for blk, base in batch.regions.items():
                rows = prog.rows[blk]
                en = sum(1 << r for r in range(R) if rows[r] >= 0)
                for j in range(prog.N):
                    # the running result: prev, or partial sums of earlier batches (a row
                    # block's K-splits may span batches)
                    vals = [int(result[rows[r], j]) if rows[r] >= 0 else 0 for r in range(R)]
                    dut.omem_w__en.value = en
                    dut.omem_w__addr.value = base + j
                    dut.omem_w__data.value = pack(omem_w_layout, vals)
                    await FallingEdge(dut.clk)
            dut.omem_w__en.value = 0
            await FallingEdge(dut.clk)
            # 2. descriptors
            c0 = int(dut.cycles.value)
            t0 = time.perf_counter()
            for d in batch.descs:
                if gaps:
                    for _ in range(int(gen.integers(0, 4))):
                        dut.desc__valid.value = 0
                        await FallingEdge(dut.clk)
                await send(dut, "desc", pack(desc_layout, d))
            dut.desc__valid.value = 0
            await wait_idle(dut)
            batch_cycles.append(int(dut.cycles.value) - c0)
            compute_seconds += time.perf_counter() - t0
            # 3. read back
            for blk, base in batch.regions.items():
                rows = prog.rows[blk]
                dut.omem_r__addr.value = base
                await FallingEdge(dut.clk)
                for j in range(prog.N):
                    if j + 1 < prog.N:
                        dut.omem_r__addr.value = base + j + 1
                    vals = unpack_signed(int(dut.omem_r__data.value), R, A)
                    for r in range(R):
                        if rows[r] >= 0:
                            result[rows[r], j] = vals[r]
                    await FallingEdge(dut.clk)
        total_cycles += sum(batch_cycles)
        outputs.append({"result": result, "batch_cycles": batch_cycles,
                        "compute_seconds": compute_seconds})
    with open(p["results"], "wb") as fh:
        pickle.dump(outputs, fh)
    secs = watch.seconds()
    write_report({"block": "sdue", "config": cfg.name, "programs": len(programs),
                  "busy_cycles": total_cycles, "seconds": secs, "passed": True})

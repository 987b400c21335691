"""cocotb testbench: EPRE predictions (memory images + run descriptors), read-outs pickled back.

The pytest side (:mod:`exion.sim.epre_rtl`) prepares the jobs with ``prepare`` (golden model,
memory images, run descriptor), pickles them to ``EXION_PARAMS["jobs"]`` and compares the
decoded results with golden; this bench only drives the hardware, per job:

1. write X (all banks at once) and Wq^T / Wk^T words (exact keys: Wq^T, and the K rows into
   the Kh banks through ``kh_w``);
2. start the run and, every cycle until ``busy`` falls, collect the ``score`` tap (unless
   ``tap`` is false: long runs) and the ``mask`` rows (``ready`` always 1, or a seeded random
   pattern with ``backpressure``);
3. read ``cycles``, ``key_needed``, ``k_needed`` and the Qh / Kh banks through ``h_r``.
"""

from __future__ import annotations

import pickle

import cocotb
from amaranth.lib import data
from cocotb.triggers import FallingEdge, RisingEdge

from exion.hw.epre import EpreSizes, epre_word, mask_layout, run_layout, score_layout
from exion.sim.tb_common import Stopwatch, bench_config, manifest, params, rng, start, \
    write_report
from exion.sim.payload import pack, unpack


@cocotb.test()
async def epre_jobs(dut):
    cfg = bench_config()
    c = manifest()["constants"]
    s = EpreSizes(cfg, c["units"], c["n_max"], c["d_max"], c["dh_max"], c["selectors"],
                  "radix" if c.get("radix") else "insertion", c.get("ports"))
    p = params()
    gen = rng()
    U = s.units
    word = epre_word(cfg)
    with open(p["jobs"], "rb") as fh:
        jobs = pickle.load(fh)
    bp, tap = bool(p.get("backpressure")), bool(p.get("tap", True))
    await start(dut)
    for sig in (dut.x_w__en, dut.w_w__en, dut.kh_w__en, dut.run__valid):
        sig.value = 0
    dut.mask__ready.value = 1
    x_layout = h_layout = data.ArrayLayout(word, U)
    m_layout, sc_layout, r_layout = mask_layout(s), score_layout(cfg, s), run_layout(cfg, s)
    watch = Stopwatch()
    outs, total = [], 0
    for job in jobs:
        dut.x_w__en.value = (1 << U) - 1
        for addr in range(job.x_words.shape[0]):
            dut.x_w__addr.value = addr
            dut.x_w__data.value = pack(x_layout, job.x_words[addr].tolist())
            await FallingEdge(dut.clk)
        dut.x_w__en.value = 0
        dut.w_w__en.value = 1
        for addr, w in zip(job.w_addrs, job.w_words):
            dut.w_w__addr.value = int(addr)
            dut.w_w__data.value = pack(word, w.tolist())
            await FallingEdge(dut.clk)
        dut.w_w__en.value = 0
        if job.kh_words is not None:        # exact keys (k_given): a word
            for addr in range(job.kh_words.shape[0]):       # a bank at a time
                dut.kh_w__addr.value = addr
                for u in range(U):
                    dut.kh_w__en.value = 1 << u
                    dut.kh_w__data.value = pack(word, job.kh_words[addr][u].tolist())
                    await FallingEdge(dut.clk)
            dut.kh_w__en.value = 0
        dut.run__payload.value = pack(r_layout, job.run)
        dut.run__valid.value = 1
        await FallingEdge(dut.clk)          # idle: ready is 1, the run is taken
        dut.run__valid.value = 0
        raw = {"scores": [], "masks": []}
        if tap or bp:
            while True:
                ready = int(gen.integers(0, 2)) if bp else 1
                dut.mask__ready.value = ready
                if tap and int(dut.score__valid.value):
                    v = unpack(sc_layout, dut.score__payload.value.to_unsigned())
                    raw["scores"].append((v["group"], v["key"], v["scores"]))
                if ready and int(dut.mask__valid.value):
                    v = unpack(m_layout, dut.mask__payload.value.to_unsigned())
                    raw["masks"].append((v["row"], v["dominant"], v["mask"]))
                busy = int(dut.busy.value)
                await FallingEdge(dut.clk)
                if not busy and not int(dut.busy.value):
                    break
        else:  # fast: wake only on mask beats
            dut.mask__ready.value = 1
            while True:
                await RisingEdge(dut.mask__valid)
                await FallingEdge(dut.clk)
                while int(dut.mask__valid.value):
                    v = unpack(m_layout, dut.mask__payload.value.to_unsigned())
                    raw["masks"].append((v["row"], v["dominant"], v["mask"]))
                    await FallingEdge(dut.clk)
                if len(raw["masks"]) == job.n_q:
                    break
            while int(dut.busy.value):
                await FallingEdge(dut.clk)
        dut.mask__ready.value = 1
        raw["cycles"] = int(dut.cycles.value)
        raw["key_needed"] = dut.key_needed.value.to_unsigned()
        raw["k_needed"] = dut.k_needed.value.to_unsigned()
        for kind in ("qh", "kh"):
            dut.h_r__k.value = int(kind == "kh")
            words = []
            n_addr = max(job.q_groups if kind == "qh" else job.k_groups, 1) * job.h_words
            for addr in range(n_addr):
                dut.h_r__addr.value = addr
                await FallingEdge(dut.clk)
                words.append(unpack(h_layout, dut.h_r__data.value.to_unsigned()))
            raw[f"{kind}_words"] = words
        total += raw["cycles"]
        outs.append(raw)
    with open(p["results"], "wb") as fh:
        pickle.dump(outs, fh)
    write_report({"block": "epre", "config": cfg.name, "jobs": len(jobs), "busy_cycles": total,
                  "cycles": [o["cycles"] for o in outs], "seconds": watch.seconds(),
                  "passed": True})

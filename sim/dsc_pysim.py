"""``pysim_dsc``: a descriptor program through ``hw.dsc.DscCore`` in Amaranth's own simulator.

For bus widths no Verilator build exists for (the ``dsc_core`` top is built with the
config's bus, 64 bits): the memory model has ``sim/tb_dsc.py``'s timing without stalls
(commands taken at once, read data from the cycle after the command, a write response the
cycle after a burst's last beat), so cycles compare with ``golden/dsc_cycles.py`` as the
Verilated runs do. Fast enough for programs of a few hundred cycles (a few seconds, most of
it elaboration); not for GEMM programs.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from exion.config import Config
from exion.errors import ExionError

from .dsc_program import DscProgram

__all__ = ["pysim_dsc"]


def pysim_dsc(cfg: Config, prog: DscProgram, max_cycles: int = 200_000) -> dict:
    """Run ``prog`` once; returns ``{"image", "cycles", "error", "stages", "engine"}`` (as
    :func:`exion.sim.dsc_rtl.rtl_dsc` per run)."""
    from amaranth.sim import Simulator

    from exion.hw.dsc import DscCore
    D = prog.bus_bits
    BB = D // 8
    dut = DscCore(cfg, bus_bits=D)
    mem = np.concatenate([np.array(prog.image, np.uint8), np.zeros(BB, np.uint8)])
    res: dict = {}

    async def bench(ctx):
        m = dut.mem
        for sig in (m.rd_cmd.ready, m.wr_cmd.ready, m.wr_data.ready):
            ctx.set(sig, 1)
        ctx.set(dut.prog_base, prog.prog_base)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        rd, wcmd, wdata, resp = deque(), deque(), deque(), deque()
        stages, last, n = [], None, 0
        engine, last_eng = [], 0
        while True:
            if rd:
                addr, left = rd[0]
                ctx.set(m.rd_data.valid, 1)
                ctx.set(m.rd_data.payload.data,
                        int.from_bytes(mem[addr:addr + BB].tobytes(), "little"))
                ctx.set(m.rd_data.payload.last, int(left == 1))
                if ctx.get(m.rd_data.ready):
                    rd.popleft()
                    if left > 1:
                        rd.appendleft((addr + BB, left - 1))
            else:
                ctx.set(m.rd_data.valid, 0)
            ctx.set(m.wr_resp.valid, int(bool(resp)))
            if resp and ctx.get(m.wr_resp.ready):
                resp.popleft()
            if ctx.get(m.wr_data.valid):
                wdata.append(ctx.get(m.wr_data.payload.data))
            bursts = 0
            while wdata and wcmd:
                addr, left = wcmd.popleft()
                mem[addr:addr + BB] = np.frombuffer(int(wdata.popleft()).to_bytes(BB, "little"),
                                                    np.uint8)
                if left > 1:
                    wcmd.appendleft((addr + BB, left - 1))
                else:
                    bursts += 1
            if ctx.get(m.rd_cmd.valid):
                rd.append((ctx.get(m.rd_cmd.payload.addr), ctx.get(m.rd_cmd.payload.len) + 1))
            if ctx.get(m.wr_cmd.valid):
                wcmd.append((ctx.get(m.wr_cmd.payload.addr), ctx.get(m.wr_cmd.payload.len) + 1))
            resp.extend([1] * bursts)
            await ctx.tick()
            n += 1
            s = ctx.get(dut.stage)
            if s != last:
                stages.append((s, ctx.get(dut.cycles)))
                last = s
            e = ctx.get(dut.engine)
            if e != last_eng:
                engine.append((e, ctx.get(dut.cycles)))
                last_eng = e
            if ctx.get(dut.done):
                break
            if n >= max_cycles:
                raise ExionError(f"pysim_dsc: no done after {n} cycles")
        res.update(cycles=ctx.get(dut.cycles), error=ctx.get(dut.error), stages=stages,
                   engine=engine)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return {"image": mem[:len(prog.image)], **res}

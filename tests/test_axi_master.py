"""The AXI4 master's stages in the Amaranth simulator (fast; no Verilator).

``BurstSplitter`` against a naive reference split (one burst per page crossing, lengths
summing to the command) over directed and seeded random commands with random back-pressure
on its output; ``DscTop`` checks the core it wraps, with messages.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from exion import PRESETS
from exion.hw import axi_master
from exion.hw.axi_master import BurstSplitter
from exion.hw.dsc_top import DscTop
from exion.hw.memcopy_core import MemcopyCore


def reference_split(addr: int, beats: int, nbytes: int) -> list[tuple[int, int, bool]]:
    """(addr, beats, last) of each INCR burst: cut where the next byte starts a 4 KiB page."""
    out, cur = [], []
    for i in range(beats):
        a = addr + i * nbytes
        if cur and a % 4096 == 0:
            out.append(cur)
            cur = []
        cur.append(a)
    out.append(cur)
    return [(b[0], len(b), k == len(out) - 1) for k, b in enumerate(out)]


def run_splitter(cmds, data_bits: int, seed: int = 1) -> list[tuple[int, int, bool]]:
    dut = BurstSplitter(data_bits=data_bits, addr_bits=32)
    rng = np.random.default_rng(seed)
    got = []
    want_total = sum(len(reference_split(a, n, data_bits // 8)) for a, n in cmds)

    async def producer(ctx):
        for addr, beats in cmds:
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.cmd.payload, {"addr": addr, "len": beats - 1})
            await ctx.tick().until(dut.cmd.ready)
            ctx.set(dut.cmd.valid, 0)
            for _ in range(int(rng.integers(0, 3))):
                await ctx.tick()

    async def consumer(ctx):
        held = None
        while len(got) < want_total:
            ready = int(rng.random() < 0.6)
            ctx.set(dut.burst.ready, ready)
            await ctx.delay(1e-9)
            valid = ctx.get(dut.burst.valid)
            p = ctx.get(dut.burst.payload)
            now = (p.addr, p.len + 1, bool(p.last))
            if held is not None:
                assert valid and now == held, f"burst {held} changed to {now} while waiting"
            if valid and ready:
                got.append(now)
            held = now if valid and not ready else None
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(1e-6 * (want_total * 20 + len(cmds) * 10 + 100))
    return got


@pytest.mark.parametrize("data_bits", [32, 64, 512])
def test_burst_splitter_matches_reference(data_bits):
    b = data_bits // 8
    rng = np.random.default_rng(data_bits)
    cmds = [(0, 1), (4096 - b, 1), (4096 - b, 2), (8192 - 5 * b, 256), (3 * 4096, 256),
            (5 * 4096 + 7 * b, 200)]
    for _ in range(20):
        cmds.append((int(rng.integers(0, 1 << 20)) // b * b, int(rng.integers(1, 257))))
    got = run_splitter(cmds, data_bits)
    want = [burst for a, n in cmds for burst in reference_split(a, n, b)]
    assert got == want


def test_splitter_without_the_4k_rule_fails(monkeypatch):
    """Mutation: a page of 64 KiB (no 4 KiB cut) must disagree with the reference."""
    monkeypatch.setattr(axi_master, "BOUNDARY", 1 << 16)
    cmds = [(4096 - 8, 2)]
    assert run_splitter(cmds, 64) != reference_split(4096 - 8, 2, 8)


def test_dsc_top_checks_its_core():
    class NoMem(wiring.Component):
        def __init__(self):
            super().__init__({"start": wiring.In(1)})

        def elaborate(self, platform):
            return Module()

    core = NoMem()
    with pytest.raises(ValueError, match=r"exactly one Out member on mem_master_signature, "
                                         r"found \[\]"):
        DscTop(PRESETS["toy"], core)
    Fragment.get(core, None)


@pytest.mark.parametrize("data_bits,addr_bits", [(32, 40), (128, 64)])
def test_dsc_top_takes_widths_from_the_core(data_bits, addr_bits):
    top = DscTop(PRESETS["toy"], MemcopyCore(data_bits=data_bits, addr_bits=addr_bits))
    assert (top.data_bits, top.addr_bits) == (data_bits, addr_bits)
    assert len(top.m_axi_wdata) == data_bits and len(top.m_axi_araddr) == addr_bits
    assert top.constants()["registers"]["PROG_BASE_HI"] == 0x24
    Fragment.get(top, None)   # elaborates: the register fields fit the core's widths

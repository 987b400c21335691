"""cocotb testbench of the DSC bus shell (``axi_shell`` top: ``DscTop`` around the
``MemcopyCore`` test fixture), with cocotbext-axi's ``AxiLiteMaster`` and ``AxiRam``.

Cases (``EXION_PARAMS["cases"]``; each is also its own cocotb test):

* ``regs``: every register's reset value from the table (``exion.regmap``), write/read-back
  of every writable field with random values and random byte strobes, DECERR on unmapped
  offsets, SLVERR (and no change) on writes to read-only registers, W1C of STATUS.DONE, irq.
* ``dma``: directed (1 beat, 256-beat commands, commands across 4 KiB boundaries, a 4 KiB
  aligned block) and seeded random copies; the destination must equal the source + 1 per
  16-bit lane, the bytes around it untouched, PASSES the command count, ERROR zero.
* ``errors``: SLVERR on one read beat, then on one write, must reach ERROR bit 0 / bit 1.

Every run randomizes ready/valid on all ten AXI channels (cocotbext-axi pause generators,
``EXION_PARAMS["stall"]`` = probability of a paused cycle) and runs protocol checkers on
both ports: a valid stays high until ready, and the payload stays stable meanwhile; every
AR/AW burst is INCR, of the bus size, and inside one 4 KiB page. Any violation fails.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.triggers import FallingEdge, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, AxiResp

from exion.regmap import ERROR_BITS, dsc_registers, register

from . import tb_common as tc

RAM_SIZE = 1 << 20
LITE_CHANNELS = {"aw": ["awaddr", "awprot"], "w": ["wdata", "wstrb"], "b": ["bresp"],
                 "ar": ["araddr", "arprot"], "r": ["rdata", "rresp"]}
AXI_CHANNELS = {
    "aw": ["awid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot"],
    "w": ["wdata", "wstrb", "wlast"], "b": ["bid", "bresp"],
    "ar": ["arid", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot"],
    "r": ["rid", "rdata", "rresp", "rlast"]}


class Shell:
    """The DUT with its bus models, stall generators and protocol checkers."""

    def __init__(self, dut):
        self.dut = dut
        man = tc.manifest()
        self.cfg = tc.bench_config()
        consts = man["constants"]
        self.data_bits, self.addr_bits = consts["data_bits"], consts["addr_bits"]
        self.bytes = self.data_bits // 8
        self.regs = dsc_registers(self.cfg, data_bits=self.data_bits, addr_bits=self.addr_bits)
        self.rng = tc.rng()
        self.params = tc.params()
        self.lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=RAM_SIZE)
        self.bursts: list[tuple[str, int, int]] = []
        self.errors: list[str] = []
        self.bad_read: set[int] = set()
        self.bad_write: set[int] = set()
        self._hook_errors()

    def _hook_errors(self) -> None:
        rd, wr = self.ram.read_if._read, self.ram.write_if._write

        async def read(address, length):
            if address in self.bad_read:
                raise OSError(f"injected read error at {address:#x}")
            return await rd(address, length)

        async def write(address, data):
            if address in self.bad_write:
                raise OSError(f"injected write error at {address:#x}")
            return await wr(address, data)

        self.ram.read_if._read, self.ram.write_if._write = read, write

    def set_stalls(self, p: float) -> None:
        """Pause each channel of both models on a random fraction ``p`` of cycles."""
        seed = int(self.rng.integers(1 << 31))

        def gen(k):
            r = random.Random(seed + k)
            while True:
                yield r.random() < p

        chans = [self.lite.write_if.aw_channel, self.lite.write_if.w_channel,
                 self.lite.write_if.b_channel, self.lite.read_if.ar_channel,
                 self.lite.read_if.r_channel, self.ram.write_if.aw_channel,
                 self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                 self.ram.read_if.ar_channel, self.ram.read_if.r_channel]
        for k, ch in enumerate(chans):
            if p > 0:
                ch.set_pause_generator(gen(k))
            else:
                ch.clear_pause_generator()

    def start_checkers(self) -> None:
        for prefix, chans in (("s_axil", LITE_CHANNELS), ("m_axi", AXI_CHANNELS)):
            for ch, payload in chans.items():
                cocotb.start_soon(self._check_channel(prefix, ch, payload))

    async def _check_channel(self, prefix: str, ch: str, payload: list[str]) -> None:
        dut = self.dut
        valid = getattr(dut, f"{prefix}_{ch}valid")
        ready = getattr(dut, f"{prefix}_{ch}ready")
        sigs = [getattr(dut, f"{prefix}_{n}") for n in payload]
        held = None   # payload of a beat offered and not taken at the last edge
        while True:
            await FallingEdge(dut.clk)
            if int(dut.rst.value):
                held = None
                continue
            v, r = int(valid.value), int(ready.value)
            now = [int(s.value) for s in sigs]
            if held is not None:
                if not v:
                    self._fail(f"{prefix}_{ch}valid fell before {prefix}_{ch}ready")
                elif now != held:
                    self._fail(f"{prefix} {ch} payload changed while valid and not ready: "
                               f"{dict(zip(payload, held))} -> {dict(zip(payload, now))}")
            if v and r and prefix == "m_axi" and ch in ("aw", "ar"):
                self._burst(ch, dict(zip(payload, now)))
            held = now if v and not r else None

    def _burst(self, ch: str, f: dict) -> None:
        addr, beats = f[f"{ch}addr"], f[f"{ch}len"] + 1
        self.bursts.append((ch, addr, beats))
        if f[f"{ch}burst"] != 1 or (1 << f[f"{ch}size"]) != self.bytes:
            self._fail(f"{ch} burst at {addr:#x}: burst type {f[f'{ch}burst']}, size "
                       f"{f[f'{ch}size']} (want INCR, {self.bytes} bytes)")
        if (addr & 0xFFF) + beats * self.bytes > 0x1000:
            self._fail(f"{ch} burst at {addr:#x} of {beats} beats crosses a 4 KiB boundary")

    def _fail(self, msg: str) -> None:
        self.errors.append(msg)
        raise AssertionError(f"AXI protocol: {msg}")

    async def read(self, name: str) -> int:
        resp = await self.lite.read(register(self.regs, name).offset, 4)
        assert resp.resp == AxiResp.OKAY, f"read of {name}: {resp.resp}"
        return int.from_bytes(resp.data, "little")

    async def write(self, name: str, value: int) -> None:
        resp = await self.lite.write(register(self.regs, name).offset, value.to_bytes(4, "little"))
        assert resp.resp == AxiResp.OKAY, f"write of {name}: {resp.resp}"


async def setup(dut) -> Shell:
    sh = Shell(dut)
    await tc.start(dut)
    sh.set_stalls(float(sh.params.get("stall", 0.3)))
    sh.start_checkers()
    for _ in range(3):
        await RisingEdge(dut.clk)
    return sh


# ---- regs -----------------------------------------------------------------------------------
async def case_regs(sh: Shell) -> dict:
    regs = sh.regs
    for r in regs:                                   # reset values, every register
        got = await sh.read(r.name)
        assert got == r.reset, f"{r.name} resets to {got:#x}, table says {r.reset:#x}"
    writes = 0
    for r in regs:                                   # writable fields, random strobes
        rw = sum(f.mask for f in r.fields if f.access == "rw")
        if not rw:
            continue
        for _ in range(4):
            before = await sh.read(r.name)
            value = int(sh.rng.integers(1 << 32))
            lo = int(sh.rng.integers(4))
            hi = int(sh.rng.integers(lo, 4)) + 1     # bytes lo..hi-1 written
            data = value.to_bytes(4, "little")[lo:hi]
            resp = await sh.lite.write(r.offset + lo, data)
            assert resp.resp == AxiResp.OKAY, f"write of {r.name}: {resp.resp}"
            strobed = sum(0xFF << (8 * b) for b in range(lo, hi))
            keep = rw & strobed
            want = (before & ~keep) | (value & keep)
            got = await sh.read(r.name)
            assert got == want, (f"{r.name}: wrote {value:#010x} to bytes {lo}..{hi - 1} over "
                                 f"{before:#010x}, read {got:#010x}, want {want:#010x}")
            writes += 1
    mapped = {r.offset for r in regs}
    unmapped = sorted({int(a) & ~3 for a in sh.rng.integers(0, 0x1000, 12)} - mapped)
    for off in unmapped + [0xFFC]:                  # DECERR both ways
        if off in mapped:
            continue
        resp = await sh.lite.read(off, 4)
        assert resp.resp == AxiResp.DECERR, f"read of unmapped {off:#x}: {resp.resp}"
        assert int.from_bytes(resp.data, "little") == 0
        wresp = await sh.lite.write(off, b"\xff\xff\xff\xff")
        assert wresp.resp == AxiResp.DECERR, f"write to unmapped {off:#x}: {wresp.resp}"
    for r in regs:                                   # SLVERR on read-only registers
        if r.writable:
            continue
        before = await sh.read(r.name)
        wresp = await sh.lite.write(r.offset, b"\xa5\xa5\xa5\xa5")
        assert wresp.resp == AxiResp.SLVERR, f"write to read-only {r.name}: {wresp.resp}"
        assert await sh.read(r.name) == before, f"{r.name} changed by a refused write"
    # START with 0 beats: DONE sticky, irq, W1C (a write of 0 to DONE keeps it)
    await sh.write("ITERATION", 0)
    await sh.write("IRQ_EN", 1)
    await sh.write("CTRL", 1)
    await wait_done(sh)
    assert int(sh.dut.irq.value) == 1, "irq low with DONE and IRQ_EN.DONE set"
    assert await sh.read("CTRL") == 0, "CTRL.START must read 0"
    await sh.write("STATUS", 0)
    assert (await sh.read("STATUS")) & 2, "writing 0 to STATUS.DONE cleared it"
    resp = await sh.lite.write(register(regs, "STATUS").offset, b"\x00")
    assert resp.resp == AxiResp.OKAY
    await sh.write("STATUS", 2)
    assert (await sh.read("STATUS")) & 2 == 0, "W1C of STATUS.DONE failed"
    await RisingEdge(sh.dut.clk)
    assert int(sh.dut.irq.value) == 0, "irq stays high after DONE was cleared"
    return {"registers": len(regs), "field_writes": writes, "unmapped": len(unmapped)}


async def wait_done(sh: Shell, polls: int = 3000) -> int:
    """Poll STATUS until DONE; fail at once if a protocol checker fired."""
    for _ in range(polls):
        assert not sh.errors, sh.errors[0]
        status = await sh.read("STATUS")
        if status & 2:
            assert not status & 1, "DONE set while BUSY"
            return status
    raise AssertionError(f"no DONE within {polls} STATUS polls")


# ---- dma ------------------------------------------------------------------------------------
def plus_one(data: bytes) -> bytes:
    """The fixture's transform: +1 (mod 2**16) on every little-endian 16-bit lane."""
    words = [(int.from_bytes(data[i:i + 2], "little") + 1) & 0xFFFF
             for i in range(0, len(data), 2)]
    return b"".join(w.to_bytes(2, "little") for w in words)


async def copy(sh: Shell, src: int, beats: int, chunk: int) -> dict:
    """One run of the fixture: ``beats`` beats from ``src`` in commands of ``chunk``."""
    nbytes = beats * sh.bytes
    dst = src + nbytes
    guard = 64
    lo, hi = max(0, src - guard), min(RAM_SIZE, dst + nbytes + guard)
    sh.ram.write(lo, bytes(sh.rng.integers(0, 256, hi - lo, dtype="uint8")))
    before = sh.ram.read(lo, hi - lo)
    first = len(sh.bursts)
    await sh.write("PROG_BASE", src)
    await sh.write("ITERATION", beats)
    await sh.write("REUSE_N", chunk & 0xFF)
    await sh.write("CTRL", 1)
    await wait_done(sh)
    got = sh.ram.read(lo, hi - lo)
    want = before[:dst - lo] + plus_one(before[src - lo:dst - lo]) + before[dst + nbytes - lo:]
    if got != want:
        bad = [i for i in range(len(got)) if got[i] != want[i]]
        raise AssertionError(f"copy of {beats} beats {src:#x} -> {dst:#x} (commands of "
                             f"{chunk}): {len(bad)} wrong bytes, first at {lo + bad[0]:#x}")
    cmds = -(-beats // chunk) if beats else 0
    assert await sh.read("PASSES") == cmds, "PASSES is not the write-command count"
    assert await sh.read("ERROR") == 0, f"ERROR {await sh.read('ERROR'):#x} on a clean copy"
    cycles = await sh.read("CYCLES")
    assert beats == 0 or cycles >= beats, f"CYCLES {cycles} < {beats} beats"
    await sh.write("STATUS", 2)
    new = sh.bursts[first:]
    for ch in ("ar", "aw"):
        moved = sum(b for c, _, b in new if c == ch)
        assert moved == beats, f"{ch} bursts carried {moved} beats, want {beats}"
    return {"src": src, "beats": beats, "chunk": chunk, "cycles": cycles,
            "commands": cmds, "ar_bursts": sum(c == "ar" for c, _, _ in new),
            "aw_bursts": sum(c == "aw" for c, _, _ in new)}


def dma_cases(sh: Shell) -> list[tuple[int, int, int]]:
    """(src, beats, chunk): directed edge cases, then seeded random ones."""
    b = sh.bytes
    page = 0x1000
    cases = [
        (0x100, 1, 1),                          # one beat
        (0x2000, 256, 256),                     # one full 256-beat command
        (page * 3 - 5 * b, 12, 12),             # a command across a 4 KiB boundary
        (page * 5 - b, 2, 2),                   # last beat of a page + first of the next
        (page * 6, page // b, 256),             # exactly one page
        (page * 8 + 8 * b, 300, 256),           # 256 + 44 beats
        (page * 10 - 16 * b, 256, 256),         # a 256-beat command across a boundary
        (page * 9 - 100 * b, 200, 7),           # odd command length across a boundary
    ]
    most = min(400, RAM_SIZE // (4 * b))
    for _ in range(int(sh.params.get("n_random", 6))):
        beats = int(sh.rng.integers(1, most))
        chunk = int(sh.rng.choice([1, 2, 3, 16, 255, 256, int(sh.rng.integers(1, 257))]))
        span = 2 * beats * b
        src = int(sh.rng.integers(64, RAM_SIZE - span - 64)) // b * b
        cases.append((src, beats, chunk))
    return cases


async def case_dma(sh: Shell) -> dict:
    runs = [await copy(sh, *c) for c in dma_cases(sh)]
    return {"runs": runs, "beats": sum(r["beats"] for r in runs)}


# ---- errors ---------------------------------------------------------------------------------
async def case_errors(sh: Shell) -> dict:
    b = sh.bytes
    out = {}
    for bit, which in ((0, "read"), (1, "write")):
        src, beats = 0x3000 - 4 * b, 16
        bad = (src + 5 * b) if which == "read" else (src + beats * b + 9 * b)
        (sh.bad_read if which == "read" else sh.bad_write).add(bad)
        await sh.write("PROG_BASE", src)
        await sh.write("ITERATION", beats)
        await sh.write("REUSE_N", 8)
        await sh.write("CTRL", 1)
        await wait_done(sh)
        sh.bad_read.clear()
        sh.bad_write.clear()
        err = await sh.read("ERROR")
        name = ERROR_BITS[bit][0]
        assert err == 1 << bit, f"{which} SLVERR: ERROR {err:#x}, want only {name}"
        assert (await sh.read("STATUS")) & 4, "STATUS.ERROR not set"
        out[which] = err
    # the next clean run clears ERROR
    out["clean"] = (await copy(sh, 0x5000, 8, 4))["beats"]
    return out


CASES = {"regs": case_regs, "dma": case_dma, "errors": case_errors}


async def run_case(dut, name: str) -> None:
    wanted = tc.params().get("cases", list(CASES))
    if name not in wanted:
        return
    sh = await setup(dut)
    result = await CASES[name](sh)
    assert not sh.errors, sh.errors
    report = {}
    path = os.environ.get("EXION_REPORT")
    if path and os.path.exists(path):
        with open(path) as fh:
            report = json.load(fh)
        report.pop("seed", None)
    report[name] = result
    tc.write_report(report)


@cocotb.test()
async def regs(dut):
    await run_case(dut, "regs")


@cocotb.test()
async def dma(dut):
    await run_case(dut, "dma")


@cocotb.test()
async def errors(dut):
    await run_case(dut, "errors")

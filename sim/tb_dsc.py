"""cocotb testbench: descriptor programs through the ``dsc_core`` top (hw/dsc.py).

The pytest side (:mod:`exion.sim.dsc_rtl`) pickles a list of runs, each a host memory
image (uint8, loaded into the memory model in bulk: a backdoor load) and a program base.
Per run this bench pulses ``start`` and serves the memory port until ``done``:

* ``rd_cmd`` / ``wr_cmd`` commands are queued; read beats are returned in order, starting
  the cycle after their command was taken; write beats are paired with the write commands
  in order and a response is returned the cycle after a burst's last beat;
* with ``EXION_PARAMS["stall"] = p > 0`` every ready and valid the memory drives is low
  with probability p in each cycle (random back-pressure and gaps); with p = 0 the memory
  never stalls (the timing ``golden/dsc_cycles.py`` models). A run may carry its own
  ``stall``. With ``EXION_PARAMS["harness"]`` the memory is the Verilog model of
  :mod:`exion.sim.dsc_harness`, which draws its stalls itself (seeded from the bench's
  generator). With ``EXION_PARAMS["ext"]`` the build is that model's, its ``ext`` input
  high: the core's port is on the wrapper's ports and this bench serves it (one build for
  both memories).

It records the core's ``cycles``, ``passes``, ``error``, the cycle at which ``stage``
changed (the host numbers descriptors in ``stage``) and the ``(value, cycle)`` changes of
``engine`` (an overlapped GEMM's background time), and pickles the final memory images.
"""

from __future__ import annotations

import pickle
from collections import deque

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from exion.sim.tb_common import CLOCK_NS, Stopwatch, bench_config, manifest, params, rng, \
    start, write_report


class _Memory:
    """Byte-addressed host memory serving the core's burst port."""

    def __init__(self, dut, image: np.ndarray, bus_bits: int, stall: float, gen):
        self.dut = dut
        self.mem = np.array(image, dtype=np.uint8, copy=True)
        self.bb = bus_bits // 8
        self.D = bus_bits
        self.stall = stall
        self.gen = gen
        self.rd = deque()       # (addr, beats left) of accepted read commands
        self.wcmd = deque()     # (addr, beats left) of accepted write commands
        self.wdata = deque()    # write beats not yet paired with a command
        self.resp = deque()     # pending write responses (count)
        self.bad = []

    def _go(self) -> bool:
        return not (self.stall and self.gen.random() < self.stall)

    def _read(self, addr: int) -> int:
        if addr + self.bb > self.mem.size:
            self.bad.append(addr)
            return 0
        return int.from_bytes(self.mem[addr:addr + self.bb].tobytes(), "little")

    def step(self) -> None:
        """One cycle at the falling edge: decide this cycle's valid / ready, and account
        the transfers they make at the next rising edge."""
        d = self.dut
        # read data (from commands taken at earlier edges)
        if self.rd and self._go():
            addr, left = self.rd[0]
            d.mem__rd_data__valid.value = 1
            d.mem__rd_data__payload.value = self._read(addr) | (int(left == 1) << self.D)
            if int(d.mem__rd_data__ready.value):
                if left == 1:
                    self.rd.popleft()
                else:
                    self.rd[0] = (addr + self.bb, left - 1)
        else:
            d.mem__rd_data__valid.value = 0
        # write responses
        if self.resp and self._go():
            d.mem__wr_resp__valid.value = 1
            d.mem__wr_resp__payload.value = 0
            if int(d.mem__wr_resp__ready.value):
                self.resp.popleft()
        else:
            d.mem__wr_resp__valid.value = 0
        # write data
        ready = self._go()
        d.mem__wr_data__ready.value = int(ready)
        done_bursts = 0
        if ready and int(d.mem__wr_data__valid.value):
            raw = int(d.mem__wr_data__payload.value)
            self.wdata.append(raw & ((1 << self.D) - 1))
        while self.wdata and self.wcmd:
            addr, left = self.wcmd[0]
            beat = self.wdata.popleft()
            self.mem[addr:addr + self.bb] = np.frombuffer(
                beat.to_bytes(self.bb, "little"), np.uint8)
            if left == 1:
                self.wcmd.popleft()
                done_bursts += 1
            else:
                self.wcmd[0] = (addr + self.bb, left - 1)
        # commands (taken at the coming edge; their data flows from the next cycle)
        ready = self._go()
        d.mem__rd_cmd__ready.value = int(ready)
        if ready and int(d.mem__rd_cmd__valid.value):
            p = int(d.mem__rd_cmd__payload.value)
            self.rd.append((p & 0xFFFFFFFF, (p >> 32) + 1))
        ready = self._go()
        d.mem__wr_cmd__ready.value = int(ready)
        if ready and int(d.mem__wr_cmd__valid.value):
            p = int(d.mem__wr_cmd__payload.value)
            self.wcmd.append((p & 0xFFFFFFFF, (p >> 32) + 1))
        self.resp.extend([1] * done_bursts)


def stall_code(p: float) -> int:
    """The Verilog memory's ``stall_p`` for a stall probability ``p``: ``round(p * 65536)``,
    at most 65535 (a handshake then goes once in 65536 cycles)."""
    return min(65535, max(0, round(float(p) * 65536)))


async def _harness_run(dut, run: dict, bus_bits: int, max_cycles: int, stall: float = 0.0,
                       gen=None) -> dict:
    """One run on the ``exion_dsc_memsim`` wrapper (:mod:`exion.sim.dsc_harness`): the
    memory model is Verilog, so Python only loads the image, pulses ``start`` and waits.
    ``stall`` > 0: the model's random stalls, seeded from ``gen``."""
    from exion.sim.dsc_harness import from_hex, to_hex
    image = np.asarray(run["image"], np.uint8)
    words = -(-image.size // (bus_bits // 8))
    with open("dsc_image.hex", "w") as fh:
        fh.write(to_hex(image, bus_bits))
    dut.image_words.value = words
    dut.stall_p.value = stall_code(stall)
    dut.stall_seed.value = int(gen.integers(1, 1 << 32)) if stall and gen is not None else 1
    dut.load.value = 1
    await FallingEdge(dut.clk)
    dut.load.value = 0
    dut.prog_base.value = run["prog_base"]
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    try:
        await with_timeout(RisingEdge(dut.done), max_cycles * CLOCK_NS, "ns")
    except SimTimeoutError:
        raise AssertionError(f"no done after {max_cycles} cycles (stage {int(dut.stage.value)}, "
                             f"overflow {int(dut.overflow.value)}, bad {int(dut.bad.value)})")
    out = {"cycles": int(dut.cycles.value), "passes": int(dut.passes.value),
           "error": int(dut.error.value), "busy": int(dut.busy.value)}
    await FallingEdge(dut.clk)
    dut.dump.value = 1
    await FallingEdge(dut.clk)
    dut.dump.value = 0
    await FallingEdge(dut.clk)     # the dump happens in that edge's evaluation, after this wake
    assert not int(dut.bad.value), "reads outside the image"
    assert not int(dut.overflow.value), "the memory model's queues overflowed"
    with open("dsc_dump.hex") as fh:
        out["image"] = from_hex(fh.read(), image.size, bus_bits)
    with open("dsc_stages.txt") as fh:
        recs = [ln.split() for ln in fh if ln.strip()]
    out["stages"] = [tuple(int(v) for v in r) for r in recs if r[0] != "E"]
    out["engine"] = [tuple(int(v) for v in r[1:]) for r in recs if r[0] == "E"]
    return out


async def _serve(dut, p: dict, bus_bits: int, max_cycles: int, watch) -> None:
    """Session mode (:class:`exion.sim.dsc_rtl.DscSession`): run each list of programs the
    host sends, send back its results, until it sends ``None``."""
    from multiprocessing.connection import Client
    conn = Client(p["serve"], "AF_UNIX", authkey=p["authkey"].encode())
    total = n = 0
    try:
        while (runs := conn.recv()) is not None:
            outs = [await _harness_run(dut, run, bus_bits, max_cycles) for run in runs]
            total += sum(o["cycles"] for o in outs)
            n += len(outs)
            conn.send(outs)
    finally:
        conn.close()
    write_report({"block": "dsc_core", "config": bench_config().name, "runs": n,
                  "busy_cycles": total, "seconds": watch.seconds(), "passed": True})


@cocotb.test()
async def dsc_programs(dut):
    cfg = bench_config()
    const = manifest()["constants"]
    p = params()
    gen = rng()
    stall = float(p.get("stall", 0.0))
    max_cycles = int(p.get("max_cycles", 5_000_000))
    runs = []
    if "serve" not in p:
        with open(p["cases"], "rb") as fh:
            runs = pickle.load(fh)
    fast = bool(p.get("harness"))
    ext = bool(p.get("ext"))        # the Verilog model's build, its port served from here
    await start(dut)
    drive = ((dut.load, dut.dump) if fast or ext else ()) + (
        () if fast else (dut.mem__rd_cmd__ready, dut.mem__rd_data__valid,
                         dut.mem__wr_cmd__ready, dut.mem__wr_data__ready,
                         dut.mem__wr_resp__valid))
    for sig in (dut.start, *drive):
        sig.value = 0
    dut.iteration.value = 0
    dut.reuse_n.value = 0
    dut.mode.value = 0
    if fast or ext:
        dut.stall_p.value = 0
        dut.stall_seed.value = 1
        dut.ext.value = int(ext)
    watch = Stopwatch()
    if "serve" in p:
        await _serve(dut, p, const["bus_bits"], max_cycles, watch)
        return
    outs = []
    total = 0
    for run in runs:
        if fast:
            outs.append(await _harness_run(dut, run, const["bus_bits"], max_cycles,
                                           run.get("stall", stall), gen))
            total += outs[-1]["cycles"]
            continue
        memory = _Memory(dut, run["image"], const["bus_bits"], run.get("stall", stall), gen)
        dut.prog_base.value = run["prog_base"]
        dut.start.value = 1
        await FallingEdge(dut.clk)
        dut.start.value = 0
        stages, last_stage, n = [], None, 0
        engine, last_eng = [], 0
        while True:
            memory.step()
            await FallingEdge(dut.clk)
            n += 1
            s = int(dut.stage.value)
            if s != last_stage:
                stages.append((s, int(dut.cycles.value)))
                last_stage = s
            e = int(dut.engine.value)
            if e != last_eng:
                engine.append((e, int(dut.cycles.value)))
                last_eng = e
            if int(dut.done.value):
                break
            assert n < max_cycles, f"no done after {n} cycles"
        assert not memory.bad, f"reads outside the image at {memory.bad[:3]}"
        cyc = int(dut.cycles.value)
        total += cyc
        outs.append({"image": memory.mem, "cycles": cyc, "passes": int(dut.passes.value),
                     "error": int(dut.error.value), "stages": stages, "engine": engine,
                     "busy": int(dut.busy.value)})
    with open(p["results"], "wb") as fh:
        pickle.dump(outs, fh)
    write_report({"block": "dsc_core", "config": cfg.name, "runs": len(runs),
                  "busy_cycles": total, "seconds": watch.seconds(), "passed": True})

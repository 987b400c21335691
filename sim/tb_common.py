"""Shared pieces of every cocotb testbench (runs inside the simulator's Python).

A bench learns everything from the environment that :func:`exion.sim.runner.run_bench` sets:
``EXION_MANIFEST`` (the generated top's JSON: config and constants), ``EXION_PARAMS`` (JSON
parameters of this run) and ``EXION_REPORT`` (where to write the JSON report). Its NumPy
generator is seeded from ``cocotb.RANDOM_SEED`` so a failing run is reproducible.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

from exion.config import Config

CLOCK_NS = 10


def manifest() -> dict:
    with open(os.environ["EXION_MANIFEST"]) as fh:
        return json.load(fh)


def bench_config() -> Config:
    return Config(**manifest()["config"])


def params() -> dict:
    return json.loads(os.environ.get("EXION_PARAMS", "{}"))


def rng() -> np.random.Generator:
    return np.random.default_rng(cocotb.RANDOM_SEED)


def write_report(data: dict) -> None:
    path = os.environ.get("EXION_REPORT")
    if path:
        data = {"seed": int(os.environ.get("COCOTB_RANDOM_SEED", cocotb.RANDOM_SEED)), **data}
        with open(path, "w") as fh:
            json.dump(data, fh, indent=2, default=_json_default)


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


async def start(dut, reset_cycles: int = 2) -> None:
    """Start the clock, pulse ``rst`` and return at a falling edge (the drive point)."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, reset_cycles)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


class Stopwatch:
    """Wall time and simulated cycles of a bench, for the cycles-per-second figure."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


def pack_words(words, lane_bits: int) -> int:
    """Pack signed ints (any shape, e.g. (banks, L)) into a flattened nested ArrayLayout of
    ``signed(lane_bits)``: element 0 in the low bits."""
    mask = (1 << lane_bits) - 1
    out = 0
    flat = np.asarray(words).reshape(-1)
    for i in range(flat.size - 1, -1, -1):
        out = (out << lane_bits) | (int(flat[i]) & mask)
    return out


def unpack_signed(raw: int, n: int, bits: int) -> list[int]:
    """``n`` signed ``bits``-bit fields of ``raw``, field 0 in the low bits."""
    out, mask, half = [], (1 << bits) - 1, 1 << (bits - 1)
    for _ in range(n):
        v = raw & mask
        out.append(v - (1 << bits) if v & half else v)
        raw >>= bits
    return out


async def send(dut, stream: str, payload: int) -> None:
    """Offer one transfer on stream port ``stream`` (valid high, payload) and return at the
    falling edge after the clock edge that took it; valid stays high (the caller lowers it)."""
    getattr(dut, f"{stream}__valid").value = 1
    getattr(dut, f"{stream}__payload").value = payload
    while True:
        ready = int(getattr(dut, f"{stream}__ready").value)
        await FallingEdge(dut.clk)
        if ready:
            return


async def wait_idle(dut) -> None:
    """Wait until ``busy`` is low at a clock edge, then return at the next falling edge.

    Free-running (no per-cycle Python): it sleeps on ``busy`` falling, but a fall only counts
    once the time step has settled (``ReadOnly``) and ``busy`` is still low there. An
    event-driven simulator (Icarus) shows zero-time glitches: when one stage hands over to
    the next in the same clock edge, the combinational ``busy`` may drop and rise again
    within one time step, and a bare ``FallingEdge(busy)`` would return mid-product.
    """
    await ReadOnly()
    while int(dut.busy.value):
        await FallingEdge(dut.busy)
        await ReadOnly()
    await FallingEdge(dut.clk)
    assert not int(dut.busy.value)

"""cocotb testbench: the DPU against ``golden.dpu`` (both presets, directed and seeded random).

Driving style: one coroutine, one trigger per cycle. At each falling edge it samples the
registered outputs and drives the next input beat (sampled at the next rising edge).
Random idle gaps (``valid`` low) are inserted between beats.

Cases (``EXION_PARAMS["cases"]``): ``extremes`` -- all -2^(W-1), all 2^(W-1)-1, zeros,
alternating signs, each at the longest K the config allows (``k_max``) and at K = 1;
``random`` -- ``n_random`` dot products of random K in 1..``k_random_max`` with random data.
These two check against golden inside the bench (the DPU's first bench, kept as it was).

``rows`` -- the style every later bench uses: the (a, b) operand groups pickled by
:func:`exion.sim.dpu_rtl.rtl_dpu` (``EXION_PARAMS["rows"]``) are streamed with random idle
gaps of up to ``max_gap`` cycles, and the results go back to pytest
(``EXION_PARAMS["results"]``), which compares them with ``golden.dpu``.
"""

from __future__ import annotations

import pickle

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from exion.golden.dpu import dpu as golden_dpu
from exion.golden.dpu import dpu_beats
from exion.hw.dpu import dpu_beat_layout
from exion.sim.tb_common import Stopwatch, bench_config, params, rng, start, write_report
from exion.sim.payload import pack


def directed_cases(cfg):
    """(name, a, b) rows of the directed extremes."""
    lo, hi = cfg.wmin, cfg.wmax
    cases = []
    for k in (cfg.k_max, 1):
        alt = np.where(np.arange(k) % 2 == 0, hi, lo)
        cases += [
            (f"all_min_K{k}", np.full(k, lo), np.full(k, lo)),       # largest positive sum
            (f"all_max_K{k}", np.full(k, hi), np.full(k, hi)),
            (f"min_times_max_K{k}", np.full(k, lo), np.full(k, hi)),  # most negative sum
            (f"zeros_K{k}", np.zeros(k, int), np.zeros(k, int)),
            (f"alternating_K{k}", alt, -alt.clip(-hi, hi)),
        ]
    return cases


async def stream_dot_products(dut, cfg, rows_a, rows_b, gen, max_gap):
    """Drive each (a, b) row as one dot product; return (results, cycles)."""
    layout = dpu_beat_layout(cfg)
    beats, beat_last = [], []
    for a, b in zip(rows_a, rows_b):
        a3, b3 = dpu_beats(cfg, a[None, :], b[None, :])
        n = a3.shape[1]
        for w in range(n):
            beats.append(pack(layout, {"a": a3[0, w].tolist(), "b": b3[0, w].tolist(),
                                       "first": int(w == 0), "last": int(w == n - 1)}))
            beat_last.append(w == n - 1)
    gaps = gen.integers(0, max_gap + 1, size=len(beats)) if max_gap else np.zeros(len(beats))
    results, cycles = [], 0
    expected_count = len(rows_a)
    i, gap = 0, int(gaps[0]) if len(beats) else 0
    idle_tail = 0
    last_at = []  # cycle at which each dot product's `last` beat was offered
    while len(results) < expected_count:
        if dut.out__valid.value:
            # Every result arrives exactly dpu_latency cycles after its last beat.
            assert cycles == last_at[len(results)] + cfg.dpu_latency, (
                f"result {len(results)} at cycle {cycles}, last beat at "
                f"{last_at[len(results)]}: latency should be {cfg.dpu_latency}")
            results.append(dut.out__payload.value.to_signed())
        if i < len(beats) and gap == 0:
            dut.inp__valid.value = 1
            dut.inp__payload.value = beats[i]
            if beat_last[i]:
                last_at.append(cycles)
            i += 1
            gap = int(gaps[i]) if i < len(beats) else 0
        else:
            dut.inp__valid.value = 0
            gap = max(0, gap - 1)
            if i >= len(beats):
                idle_tail += 1
                assert idle_tail <= cfg.dpu_latency + 2, (
                    f"DPU produced {len(results)} of {expected_count} results")
        await FallingEdge(dut.clk)
        cycles += 1
    dut.inp__valid.value = 0
    return np.array(results, dtype=np.int64), cycles


@cocotb.test()
async def dpu_matches_golden(dut):
    cfg = bench_config()
    p = params()
    gen = rng()
    await start(dut)
    watch = Stopwatch()
    total_cycles, checked, case_names = 0, 0, []
    for case in p.get("cases", ["extremes", "random"]):
        if case == "extremes":
            named = directed_cases(cfg)
            for name, a, b in named:
                got, cyc = await stream_dot_products(dut, cfg, [a], [b], gen, 0)
                want = golden_dpu(cfg, a[None, :], b[None, :])
                np.testing.assert_array_equal(got, want, err_msg=f"case {name}")
                total_cycles += cyc
                checked += 1
                case_names.append(name)
        elif case == "random":
            n = int(p.get("n_random", 40))
            kmax = min(int(p.get("k_random_max", 8 * cfg.lanes)), cfg.k_max)
            ks = gen.integers(1, kmax + 1, size=n)
            # Rows of different K go as separate calls; gaps are random (0..3 idle cycles).
            for k in np.unique(ks):
                cnt = int(np.sum(ks == k))
                a = gen.integers(cfg.wmin, cfg.wmax + 1, size=(cnt, int(k)))
                b = gen.integers(cfg.wmin, cfg.wmax + 1, size=(cnt, int(k)))
                got, cyc = await stream_dot_products(dut, cfg, a, b, gen, 3)
                np.testing.assert_array_equal(got, golden_dpu(cfg, a, b),
                                              err_msg=f"random K={k}")
                total_cycles += cyc
                checked += cnt
            case_names.append(f"random x{n}")
        elif case == "rows":
            with open(p["rows"], "rb") as fh:
                groups = pickle.load(fh)
            outputs = []
            for a, b in groups:
                got, cyc = await stream_dot_products(dut, cfg, a, b, gen,
                                                     int(p.get("max_gap", 3)))
                outputs.append({"result": got, "cycles": cyc})
                total_cycles += cyc
                checked += len(a)
            with open(p["results"], "wb") as fh:
                pickle.dump(outputs, fh)
            case_names.append(f"rows x{len(groups)}")
        else:
            raise ValueError(f"unknown case {case!r}")
    secs = watch.seconds()
    write_report({"block": "dpu", "config": cfg.name, "dot_products": checked,
                  "cycles": total_cycles, "seconds": secs,
                  "cycles_per_second": total_cycles / secs if secs else None,
                  "cases": case_names, "passed": True})

"""DPU in the Amaranth simulator against golden.dpu (fast; no Verilator)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from exion import PRESETS
from exion.golden.dpu import dpu as golden_dpu
from exion.golden.dpu import dpu_beats
from exion.hw.dpu import DPU


def run_amaranth_dpu(cfg, a, b, gaps):
    """Stream rows of a/b through the DPU with idle gaps; return results in order."""
    dut = DPU(cfg)
    a3, b3 = dpu_beats(cfg, a, b)
    results = []

    async def tb(ctx):
        for n in range(a3.shape[0]):
            for w in range(a3.shape[1]):
                for _ in range(gaps[n, w]):
                    ctx.set(dut.inp.valid, 0)
                    await ctx.tick()
                    if ctx.get(dut.out.valid):
                        results.append(ctx.get(dut.out.payload))
                ctx.set(dut.inp.valid, 1)
                ctx.set(dut.inp.payload, {"a": list(a3[n, w]), "b": list(b3[n, w]),
                                          "first": int(w == 0),
                                          "last": int(w == a3.shape[1] - 1)})
                await ctx.tick()
                if ctx.get(dut.out.valid):
                    results.append(ctx.get(dut.out.payload))
        ctx.set(dut.inp.valid, 0)
        for _ in range(dut.latency + 2):
            await ctx.tick()
            if ctx.get(dut.out.valid):
                results.append(ctx.get(dut.out.payload))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return np.array(results, dtype=np.int64)


# (dpu_pipe_in, dpu_pipe_mul, dpu_pipe_tree_in, dpu_pipe_tree)
@pytest.mark.parametrize("pipes", [(False, True, False, True), (False, False, False, False),
                                   (False, True, False, False), (False, False, False, True),
                                   (True, True, True, True), (True, False, False, False),
                                   (False, False, True, False)],
                         ids=["pipe-mul-tree", "no-pipe", "pipe-mul", "pipe-tree",
                              "pipe-all", "pipe-in", "pipe-tree-in"])
def test_dpu_matches_golden(preset, pipes):
    cfg = preset.replace(dpu_pipe_in=pipes[0], dpu_pipe_mul=pipes[1],
                         dpu_pipe_tree_in=pipes[2], dpu_pipe_tree=pipes[3])
    seed = 1234
    rng = np.random.default_rng(seed)
    k = 3 * cfg.lanes + 1  # a partial last beat
    a = rng.integers(cfg.wmin, cfg.wmax + 1, size=(6, k))
    b = rng.integers(cfg.wmin, cfg.wmax + 1, size=(6, k))
    a[0], b[0] = cfg.wmin, cfg.wmin     # largest positive product everywhere
    a[1], b[1] = cfg.wmin, cfg.wmax     # most negative
    gaps = rng.integers(0, 3, size=(6, -(-k // cfg.lanes)))
    got = run_amaranth_dpu(cfg, a, b, gaps)
    np.testing.assert_array_equal(got, golden_dpu(cfg, a, b), err_msg=f"seed={seed}")


@pytest.mark.parametrize("pipes,expected", [
    ((False, True, False, True), 3), ((False, False, False, False), 1),
    ((False, True, False, False), 2), ((False, False, False, True), 2),
    ((True, True, True, True), 5), ((True, False, False, False), 2),
    ((False, False, True, False), 2)])
def test_dpu_latency_is_published(pipes, expected):
    """Measured cycles from the `last` beat to `out.valid` equal the published latency."""
    cfg = PRESETS["toy"].replace(dpu_pipe_in=pipes[0], dpu_pipe_mul=pipes[1],
                                 dpu_pipe_tree_in=pipes[2], dpu_pipe_tree=pipes[3])
    dut = DPU(cfg)
    seen = []

    async def tb(ctx):
        ctx.set(dut.inp.valid, 1)
        ctx.set(dut.inp.payload, {"a": [1] * cfg.lanes, "b": [2] * cfg.lanes,
                                  "first": 1, "last": 1})
        await ctx.tick()
        ctx.set(dut.inp.valid, 0)
        for cycle in range(1, 8):
            if ctx.get(dut.out.valid):
                seen.append((cycle, ctx.get(dut.out.payload)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert seen == [(expected, 2 * cfg.lanes)]
    assert dut.latency == cfg.dpu_latency == expected

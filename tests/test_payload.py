"""The shared payload packer against Amaranth's own view of the same layout."""

import numpy as np
from amaranth import Module, Signal
from amaranth.sim import Simulator

from exion import PRESETS
from exion.hw.dpu import dpu_beat_layout
from exion.sim.payload import pack, unpack


def test_pack_matches_amaranth_view():
    cfg = PRESETS["toy"]
    layout = dpu_beat_layout(cfg)
    sig = Signal(layout)
    rng = np.random.default_rng(7)
    values = [{"a": rng.integers(cfg.wmin, cfg.wmax + 1, cfg.lanes).tolist(),
               "b": rng.integers(cfg.wmin, cfg.wmax + 1, cfg.lanes).tolist(),
               "first": int(rng.integers(2)), "last": int(rng.integers(2))} for _ in range(20)]
    values.append({"a": [cfg.wmin] * cfg.lanes, "b": [cfg.wmax] * cfg.lanes,
                   "first": 1, "last": 1})
    seen = []

    async def tb(ctx):
        for v in values:
            ctx.set(sig, v)       # Amaranth packs the struct
            raw = ctx.get(sig.as_value())
            seen.append((raw, v))

    m = Module()
    m.d.comb += Signal().eq(sig.as_value()[0])
    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    for raw, v in seen:
        assert pack(layout, v) == raw
        assert unpack(layout, raw) == v

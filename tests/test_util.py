"""The gate-level arithmetic helpers of ``hw.util`` (issue 22: popcounts, small sums and
compares with constants as gates, not carry chains), exhaustively in the Amaranth simulator
against Python's integers."""

import itertools

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator


def _table(build, widths):
    """Every input combination of ``widths`` through the comb logic ``build(m, *inputs)``
    returns (a list of outputs); the outputs per combination."""
    ins = [Signal(w) for w in widths]
    m = Module()
    outs = build(m, *ins)
    sigs = [Signal(len(o) if hasattr(o, "__len__") else 1) for o in outs]
    m.d.comb += [s.eq(o) for s, o in zip(sigs, outs)]
    got = {}

    async def bench(ctx):
        for vals in itertools.product(*(range(1 << w) for w in widths)):
            for s, v in zip(ins, vals):
                ctx.set(s, v)
            got[vals] = [ctx.get(s) for s in sigs]

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8])
def test_popcount(n):
    from exion.hw.util import popcount
    got = _table(lambda m, a: [popcount(m, a)], [n])
    assert all(out[0] == bin(v).count("1") for (v,), out in got.items())


def test_add_and_lt_logic():
    from exion.hw.util import add_logic, lt_logic
    got = _table(lambda m, a, b: [add_logic(a, b), add_logic(a, b, m), lt_logic(a, b),
                                  lt_logic(b, a)], [3, 2])
    for (a, b), (s0, s1, lt, gt) in got.items():
        assert (s0, s1, lt, gt) == (a + b, a + b, int(a < b), int(b < a)), (a, b)


def test_ge_const():
    from exion.hw.util import ge_const
    ks = range(-1, 18)
    got = _table(lambda m, a: [ge_const(a, k) for k in ks], [4])
    for (a,), out in got.items():
        assert out == [int(a >= k) for k in ks], a

"""Dot-product unit (SPEC 4.1): L signed W x W multipliers, an adder tree, an A-bit accumulator."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from exion.config import Config

from .util import pipe_reg

__all__ = ["DPU", "operand_layout", "dpu_beat_layout"]


def operand_layout(cfg: Config) -> data.ArrayLayout:
    """One L-wide vector of signed W-bit operands (one memory word)."""
    return data.ArrayLayout(signed(cfg.width), cfg.lanes)


def dpu_beat_layout(cfg: Config) -> data.StructLayout:
    """One DPU input beat: operand vectors and the dot-product framing flags."""
    return data.StructLayout({
        "a": operand_layout(cfg),
        "b": operand_layout(cfg),
        "first": 1,  # this beat starts a new dot product (the accumulator restarts)
        "last": 1,   # this beat ends the dot product (its result is emitted)
    })


class DPU(wiring.Component):
    """Dot-product unit.

    Parameters
    ----------
    cfg : Config
        Uses ``lanes`` (L), ``width`` (W), ``acc_width`` (A), ``dpu_pipe_mul`` and
        ``dpu_pipe_tree``.

    Members
    -------
    inp : In(stream.Signature(dpu_beat_layout(cfg), always_ready=True))
        One beat per cycle when ``valid``: ``a``, ``b`` L-wide signed W-bit vectors,
        ``first`` (restart the accumulator with this beat), ``last`` (emit after this beat).
        A beat with ``first`` and ``last`` both set is a one-beat dot product.
    out : Out(stream.Signature(signed(A), always_ready=True))
        ``valid`` for one cycle, ``latency`` cycles after the beat that had ``last``;
        ``payload`` is sum(a*b) over the beats since ``first``, wrapped to A bits.

    Latency and throughput: ``latency = 1 + dpu_pipe_mul + dpu_pipe_tree`` cycles (the same as
    ``cfg.dpu_latency``); one beat per cycle, no back-pressure, idle cycles allowed anywhere
    (the product registers hold still while ``valid`` is low, so idle DPUs do not toggle).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        super().__init__({
            "inp": In(stream.Signature(dpu_beat_layout(cfg), always_ready=True)),
            "out": Out(stream.Signature(signed(cfg.acc_width), always_ready=True)),
        })

    @property
    def latency(self) -> int:
        return self.cfg.dpu_latency

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        beat = self.inp.payload

        def pipe(value, registered: bool, name: str, enable=None, control=False):
            """``value`` after an optional register stage (see ``pipe_reg``)."""
            return pipe_reg(m, value, name, enable, control) if registered else value

        # Stage 1: L products (2W bits). Registers load only on valid beats (no idle toggling).
        prods = [pipe(beat.a[i] * beat.b[i], cfg.dpu_pipe_mul, f"prod{i}", self.inp.valid)
                 for i in range(cfg.lanes)]
        valid1 = pipe(self.inp.valid, cfg.dpu_pipe_mul, "valid_mul", control=True)
        first1 = pipe(beat.first, cfg.dpu_pipe_mul, "first_mul", self.inp.valid)
        last1 = pipe(beat.last, cfg.dpu_pipe_mul, "last_mul", self.inp.valid)

        # Stage 2: balanced adder tree (each level widens by one bit).
        level = prods
        while len(level) > 1:
            pairs = [level[i] + level[i + 1] for i in range(0, len(level) - 1, 2)]
            level = pairs + ([level[-1]] if len(level) % 2 else [])
        total = pipe(level[0], cfg.dpu_pipe_tree, "tree_sum", valid1)
        valid2 = pipe(valid1, cfg.dpu_pipe_tree, "valid_tree", control=True)
        first2 = pipe(first1, cfg.dpu_pipe_tree, "first_tree", valid1)
        last2 = pipe(last1, cfg.dpu_pipe_tree, "last_tree", valid1)

        # Stage 3: the accumulator (wraps to A bits) and the result strobe.
        acc = Signal(signed(cfg.acc_width), name="acc", reset_less=True)
        with m.If(valid2):
            m.d.sync += acc.eq(Mux(first2, 0, acc) + total)
        m.d.sync += self.out.valid.eq(valid2 & last2)
        m.d.comb += self.out.payload.eq(acc)
        return m

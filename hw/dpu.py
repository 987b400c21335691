"""Dot-product unit (SPEC 4.1): L signed W x W multipliers, an adder tree, an A-bit accumulator."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from exion.config import Config

from .ecp5 import mult18x18d
from .util import black_box, pipe_reg

__all__ = ["DPU", "dpu_signature", "dpu_box", "operand_layout", "dpu_beat_layout"]


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


def dpu_signature(cfg: Config) -> wiring.Signature:
    """The DPU's ports (:class:`DPU`'s members)."""
    return wiring.Signature({
        "inp": In(stream.Signature(dpu_beat_layout(cfg), always_ready=True)),
        "out": Out(stream.Signature(signed(cfg.acc_width), always_ready=True)),
    })


def dpu_box(cfg: Config, name: str, module: str):
    """``(interface, instance)``: an interface of :func:`dpu_signature` and a black-box
    instance of Verilog module ``module`` on its signals (the ports :class:`DPU` has as a
    generated top). With that module supplied (the generator emits :class:`DPU` under the
    name, ``exion.gen.verilog.generate``'s ``box_dpus``) it is the same circuit as a
    :class:`DPU`."""
    sig = dpu_signature(cfg)
    ifc = sig.create(path=(name,))
    return ifc, black_box(module, sig, ifc)


class DPU(wiring.Component):
    """Dot-product unit.

    Parameters
    ----------
    cfg : Config
        Uses ``lanes`` (L), ``width`` (W), ``acc_width`` (A), ``dpu_pipe_in``,
        ``dpu_pipe_mul``, ``dpu_pipe_tree_in``, ``dpu_pipe_tree`` and ``dpu_mult``
        (``"ecp5"``: the multipliers and their registers are MULT18X18D instances, see
        ``hw/ecp5.py``).

    Members
    -------
    inp : In(stream.Signature(dpu_beat_layout(cfg), always_ready=True))
        One beat per cycle when ``valid``: ``a``, ``b`` L-wide signed W-bit vectors,
        ``first`` (restart the accumulator with this beat), ``last`` (emit after this beat).
        A beat with ``first`` and ``last`` both set is a one-beat dot product.
    out : Out(stream.Signature(signed(A), always_ready=True))
        ``valid`` for one cycle, ``latency`` cycles after the beat that had ``last``;
        ``payload`` is sum(a*b) over the beats since ``first``, wrapped to A bits.

    Latency and throughput: ``latency = 1 + dpu_pipe_in + dpu_pipe_mul + dpu_pipe_tree_in +
    dpu_pipe_tree`` cycles (the same as ``cfg.dpu_latency``); one beat per cycle, no
    back-pressure, idle cycles allowed anywhere (the operand and product registers hold still
    while ``valid`` is low, so idle DPUs do not toggle).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        super().__init__(dpu_signature(cfg))

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

        # Stage 0 (dpu_pipe_in): the operands registered in front of the multipliers.
        # Stage 1 (dpu_pipe_mul): L products (2W bits). Registers load only on valid beats
        # (no idle toggling). With dpu_mult = "ecp5" both stages are the MULT18X18D's own
        # input and output registers, with the same enables (hw/ecp5.py).
        valid0 = pipe(self.inp.valid, cfg.dpu_pipe_in, "valid_in", control=True)
        first0 = pipe(beat.first, cfg.dpu_pipe_in, "first_in", self.inp.valid)
        last0 = pipe(beat.last, cfg.dpu_pipe_in, "last_in", self.inp.valid)
        if cfg.dpu_mult == "ecp5":
            prods = [mult18x18d(m, beat.a[i], beat.b[i], name=f"mult{i}",
                                reg_in=cfg.dpu_pipe_in, reg_out=cfg.dpu_pipe_mul,
                                ce_in=self.inp.valid, ce_out=valid0)
                     for i in range(cfg.lanes)]
        else:
            a0 = [pipe(beat.a[i], cfg.dpu_pipe_in, f"a_in{i}", self.inp.valid)
                  for i in range(cfg.lanes)]
            b0 = [pipe(beat.b[i], cfg.dpu_pipe_in, f"b_in{i}", self.inp.valid)
                  for i in range(cfg.lanes)]
            prods = [pipe(a0[i] * b0[i], cfg.dpu_pipe_mul, f"prod{i}", valid0)
                     for i in range(cfg.lanes)]
        valid1 = pipe(valid0, cfg.dpu_pipe_mul, "valid_mul", control=True)
        first1 = pipe(first0, cfg.dpu_pipe_mul, "first_mul", valid0)
        last1 = pipe(last0, cfg.dpu_pipe_mul, "last_mul", valid0)
        # dpu_pipe_tree_in: a second product register, in the fabric at the adder tree's
        # inputs (on an FPGA, the route from the DSP block gets a cycle of its own). No clock
        # enable: only valid beats are summed, and behind the product register its inputs
        # hold still while idle anyway (so no enable nets to route either).
        t_in = cfg.dpu_pipe_tree_in
        prods = [pipe(p, t_in, f"prod_t{i}") for i, p in enumerate(prods)]
        first1 = pipe(first1, t_in, "first_t")
        last1 = pipe(last1, t_in, "last_t")
        valid1 = pipe(valid1, t_in, "valid_t", control=True)

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

"""Stream-port properties of the SDUE (``hw.sdue.SDUE``, its descriptor port) and of the gemm
engine (``hw.gemm.SparseGemm``, passes conserved; ``GemmPassProps`` below).

The SDUE is the sink of ``desc``; the environment (the controller or the gemm engine's
fetch FIFO) is assumed to obey the stream rule (``valid`` and the payload held until
``ready``; ``kwords`` in 1..``kmax``). The harness counts descriptors accepted on the port,
pass ends the SDUE reports on ``issued`` and passes it reports on ``passes``:

``conserve``  no descriptor lost or duplicated: issued <= accepted <= issued + 1 (one pass in
              the issue stage), captured (``passes``) <= issued, and whenever the SDUE is
              idle (``busy`` low) every accepted descriptor has been captured exactly once.

Mutants (glue between the port and the SDUE): ``dup`` shows the SDUE an accepted descriptor
a second time (replayed until taken); ``lost`` acknowledges every other descriptor to the environment without
giving it to the SDUE.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib.wiring import In

from exion.config import Config
from exion.hw.sdue import SDUE, pass_layout

from .common import Harness, stream_stable

__all__ = ["SdueDescProps"]


class SdueDescProps(Harness):
    """Property harness of the SDUE's descriptor port (see the module docstring)."""

    GROUPS = ("conserve",)
    MUTANTS = {
        "dup": "an accepted descriptor is shown to the SDUE again the next cycle",
        "lost": "every other descriptor is acknowledged but not given to the SDUE",
    }

    def __init__(self, cfg: Config, *, kmax: int = 3, props=None, mutant: str | None = None):
        self.cfg, self.kmax = cfg, kmax
        super().__init__({"valid": In(1), "desc": In(pass_layout(cfg))},
                         props=props, mutant=mutant)

    def elaborate(self, platform):
        m = Module()
        self.no_reset(m)
        m.submodules.dut = dut = SDUE(self.cfg)
        d = self.desc
        env_ready = Signal()
        self.assume(m, stream_stable(m, self.valid, env_ready, d, "desc"),
                    "descriptor source obeys the stream rule")
        self.assume(m, (d.kwords >= 1) & (d.kwords <= self.kmax), "1 <= kwords <= kmax")
        m.d.comb += [dut.desc.payload.eq(d), dut.desc.valid.eq(self.valid),
                     env_ready.eq(dut.desc.ready)]
        if self.mutant == "dup":
            again = Signal()                       # replaying the last accepted descriptor
            held = Signal.like(d)
            with m.If(again):
                m.d.comb += [dut.desc.valid.eq(1), dut.desc.payload.eq(held), env_ready.eq(0)]
                with m.If(dut.desc.ready):
                    m.d.sync += again.eq(0)
            with m.If(~again & self.valid & dut.desc.ready):
                m.d.sync += [again.eq(1), held.eq(d)]
        elif self.mutant == "lost":
            skip = Signal()
            with m.If(self.valid & env_ready):
                m.d.sync += skip.eq(~skip)
            with m.If(skip):
                m.d.comb += [dut.desc.valid.eq(0), env_ready.eq(1)]

        acc, iss = Signal(6), Signal(6)
        with m.If(self.valid & env_ready):
            m.d.sync += acc.eq(acc + 1)
        with m.If(dut.issued):
            m.d.sync += iss.eq(iss + 1)
        cap = dut.passes[:6]
        self.check(m, "conserve", (iss <= acc) & (acc <= iss + 1) & (cap <= iss),
                   "issued <= accepted <= issued + 1, captured <= issued")
        self.check(m, "conserve", dut.busy | (cap == acc),
                   "idle: every accepted descriptor captured exactly once")
        self.cover(m, ~dut.busy & (acc == 2), "two descriptors done")
        return m


class GemmPassProps(Harness):
    """The gemm engine's pass conservation, on its ports (experimental, long tier).

    A reference CAU (same parameters, never back-pressured) sees the same mask stream (a
    beat moves when both take it). ``conserve``: whenever both are idle, the engine's
    ``passes`` equals the number of passes the reference CAU emitted: no pass lost or
    duplicated between the engine's CAU, fetch, descriptor FIFO and SDUE. Setup: ``kwords``
    in 1..2, ``regions`` 1..``max_regions``, held constant; no host port activity.
    """

    GROUPS = ("conserve",)
    MUTANTS = {"lost": "every other mask block is acknowledged but not given to the engine"}

    def __init__(self, cfg: Config, *, cols_per_cycle: int = 4, max_regions: int = 2,
                 props=None, mutant: str | None = None):
        from exion.hw.cau import mask_layout
        from exion.hw.gemm import setup_layout
        self.cfg, self.P, self.max_regions = cfg, cols_per_cycle, max_regions
        super().__init__({"valid": In(1), "beat": In(mask_layout(cfg, cols_per_cycle, True)),
                          "setup": In(setup_layout(cfg, max_regions))},
                         props=props, mutant=mutant)

    def elaborate(self, platform):
        from amaranth import Cat, Mux

        from exion.hw.cau import CAU
        from exion.hw.gemm import SparseGemm

        from .common import held_constant
        cfg, P = self.cfg, self.P
        m = Module()
        self.no_reset(m)
        m.submodules.dut = dut = SparseGemm(cfg, cols_per_cycle=P, max_regions=self.max_regions)
        m.submodules.ref = ref = CAU(cfg, cols_per_cycle=P, max_cols=cfg.omem_depth,
                                     sort="runtime")
        b, st = self.beat, self.setup
        both = Signal()
        m.d.comb += both.eq(dut.mask.ready & ref.mask.ready)
        self.assume(m, stream_stable(m, self.valid, both, b, "mask"), "mask stream rule")
        self.assume(m, held_constant(m, Cat(st.as_value(), b.ways, b.sort), "setup"),
                    "setup, ways and sort constant")
        self.assume(m, (st.kwords >= 1) & (st.kwords <= 2) & (st.regions >= 1)
                    & (st.regions <= self.max_regions) & (st.ncols == cfg.omem_depth)
                    & (b.ways >= 1) & (b.ways <= cfg.merge_ways) & b.last,
                    "setup in range; one-beat blocks")
        m.d.comb += [dut.setup.eq(st), ref.mask.payload.eq(b), dut.mask.payload.eq(b),
                     ref.mask.valid.eq(self.valid & dut.mask.ready),
                     dut.mask.valid.eq(self.valid & ref.mask.ready), ref.out.ready.eq(1)]
        if self.mutant == "lost":
            skip = Signal()
            with m.If(self.valid & both):
                m.d.sync += skip.eq(~skip)
            m.d.comb += dut.mask.valid.eq(self.valid & ref.mask.ready & ~skip)
            m.d.comb += both.eq(Mux(skip, ref.mask.ready, dut.mask.ready & ref.mask.ready))
        n = Signal(6)
        with m.If(ref.out.valid):
            m.d.sync += n.eq(n + 1)
        self.check(m, "conserve", dut.busy | ref.busy | (dut.passes[:6] == n),
                   "idle: the engine computed every pass of the mask exactly once")
        self.cover(m, ~dut.busy & ~ref.busy & (n >= 2), "two passes computed, both idle")
        return m

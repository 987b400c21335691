"""Stream-port properties of the SDUE (``hw.sdue.SDUE``): its descriptor port.

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

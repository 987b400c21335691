"""The gemm engine generated with ``cfg.gmem_ports`` (GMEM outside the top) and a GMEM model
around it, as one simulation top with the ports of the ordinary ``gemm`` top.

``gemm_gmem_top(cfg)`` registers the wrapper in ``exion.gen.verilog.TOPS`` while the
``with`` block runs, so ``rtl_sparse_gemm(cfg, cases, top=name)`` runs the engine's usual
cocotb bench (``exion.sim.tb_gemm``) on it: bit-exact and cycle-exact against the same
golden model as the ``gemm`` top shows that the ``gmem`` ports' contract (a synchronous
read, data the cycle after the address; the host write passed through) is the one the engine
relies on. The synthesis flow generates the engine this way (``exion synth --hier``).
"""

from __future__ import annotations

import contextlib

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from exion.config import Config
from exion.hw.gemm import SparseGemm, gmem_model

__all__ = ["GemmWithGmem", "gemm_gmem_top"]

TOP = "gemm_gmem"


class GemmWithGmem(wiring.Component):
    """``SparseGemm(cfg.replace(gmem_ports=True))`` + a GMEM ``Memory`` on its ``gmem``
    ports; the members of ``SparseGemm(cfg)`` (``cfg.gmem_ports`` false)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg.replace(gmem_ports=False)
        self.inner_cfg = cfg.replace(gmem_ports=True)
        plain = SparseGemm(self.cfg)          # only for its members; never elaborated
        plain._MustUse__silence = True
        self._constants = plain.constants()
        super().__init__(dict(plain.signature.members))

    def constants(self) -> dict:
        """The engine's manifest constants (the bench reads them)."""
        return self._constants

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.engine = eng = SparseGemm(self.inner_cfg)
        for name, member in self.signature.members.items():
            outer, inner = getattr(self, name), getattr(eng, name)
            if member.is_signature:        # every sub-interface of the engine is an In
                wiring.connect(m, wiring.flipped(outer), inner)
            elif member.flow == Out:
                m.d.comb += outer.eq(inner)
            else:
                m.d.comb += inner.eq(outer)
        gmem_model(m, cfg, eng.gmem)          # the engine's own GMEM, outside it
        return m


@contextlib.contextmanager
def gemm_gmem_top():
    """Yield the top name of :class:`GemmWithGmem` while it is in ``TOPS``."""
    from exion.gen import verilog
    added = TOP not in verilog.TOPS
    if added:
        verilog.TOPS[TOP] = (GemmWithGmem, "gemm engine with GMEM as ports, plus a GMEM model")
    try:
        yield TOP
    finally:
        if added:
            del verilog.TOPS[TOP]

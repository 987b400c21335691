"""``DscTop``: a DSC core behind AXI4-Lite registers and an AXI4 memory-mapped master.

::

    s_axil_* --> AxiLiteRegs --(start, prog_base, iteration, reuse_n, mode)--> core
                      ^------(busy, done, error, cycles, passes, stage)------- core
    m_axi_*  <-- AxiMaster  <--(rd_cmd, rd_data, wr_cmd, wr_data, wr_resp)---- core.mem
    irq      <-- STATUS.DONE & IRQ_EN.DONE

The core is a parameter: any component with the flat control members of
:func:`~exion.hw.memif.dsc_control_signature` and one ``Out`` member on
:func:`~exion.hw.memif.mem_master_signature` (``DscCore``, or the test fixture
:class:`~exion.hw.memcopy_core.MemcopyCore`). The registers come from
:func:`exion.regmap.dsc_registers`; every field is wired by its ``source`` name, so the table
is the only place that says which register bit drives or shows which core signal.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from exion.config import Config
from exion.regmap import dsc_registers

from .axi_lite import AxiLiteRegs, axi_lite_signature
from .axi_master import AxiMaster, axi4_signature
from .gemm import forward_gmem
from .memif import dsc_control_signature

__all__ = ["DscTop", "AxiShell", "Dsc", "find_mem_port"]

MEM_MEMBERS = {"rd_cmd", "rd_data", "wr_cmd", "wr_data", "wr_resp"}


def find_mem_port(core) -> tuple[str, int, int]:
    """``(member name, data_bits, addr_bits)`` of the core's memory-master member."""
    found = []
    for name, member in core.signature.members.items():
        if member.is_signature and member.flow == Out and \
                set(member.signature.members) == MEM_MEMBERS:
            sig = member.signature.members
            data_bits = sig["rd_data"].signature.members["payload"].shape.size - 2
            addr_bits = sig["rd_cmd"].signature.members["payload"].shape.size - 8
            found.append((name, data_bits, addr_bits))
    if len(found) != 1:
        raise ValueError(f"the core must have exactly one Out member on "
                         f"mem_master_signature, found {[f[0] for f in found]}")
    missing = set(dsc_control_signature().members) - set(core.signature.members)
    if missing:
        raise ValueError(f"the core lacks control members {sorted(missing)} of "
                         f"dsc_control_signature")
    return found[0]


class _Prefixed:
    """An interface object over a component's flat ``<prefix>_<name>`` members."""

    def __init__(self, owner, prefix: str, signature: wiring.Signature):
        self.signature = signature
        for name in signature.members:
            setattr(self, name, getattr(owner, f"{prefix}_{name}"))


def _flat(prefix: str, signature: wiring.Signature) -> dict:
    return {f"{prefix}_{name}": member for name, member in signature.members.items()}


class DscTop(wiring.Component):
    """A core with its AXI4-Lite control slave and AXI4 memory master.

    Parameters
    ----------
    cfg : Config
        Fills the ``CONFIG0``/``CONFIG1`` registers; passed to the core class.
    core : component class or instance
        A class is called as ``core(cfg)``. See the module docstring for its ports.
    id_bits, max_reads, max_writes : int
        Of the AXI4 master (:class:`~exion.hw.axi_master.AxiMaster`).

    Members
    -------
    s_axil_<name> : the AXI4-Lite slave (``awaddr`` ... ``rready``; 12-bit address, 32-bit
        data); Verilog ports ``s_axil_awaddr`` ...
    m_axi_<name> : the AXI4 master (``awid`` ... ``rready``); ports ``m_axi_awaddr`` ...
    irq : ``Out(1)``, level: ``STATUS.DONE & IRQ_EN.DONE``.
    gmem : the core's ``gmem`` member passed through, if it has one (``cfg.gmem_ports``:
        the gemm engine's global-buffer ports, ``hw.gemm.gmem_port_signature``).
    """

    def __init__(self, cfg: Config, core, *, id_bits: int = 1, max_reads: int = 4,
                 max_writes: int = 4):
        self.cfg = cfg
        self.core = core(cfg) if isinstance(core, type) else core
        try:
            self.mem_name, self.data_bits, self.addr_bits = find_mem_port(self.core)
        except ValueError:
            self._MustUse__silence = True   # never built: no "created but never used" warning
            raise
        self.regs = dsc_registers(cfg, data_bits=self.data_bits, addr_bits=self.addr_bits)
        self.master_args = dict(data_bits=self.data_bits, addr_bits=self.addr_bits,
                                id_bits=id_bits, max_reads=max_reads, max_writes=max_writes)
        self.lite_sig = axi_lite_signature(12, 32).flip()
        self.axi_sig = axi4_signature(self.addr_bits, self.data_bits, id_bits)
        extra = {}
        if "gmem" in self.core.signature.members:
            extra["gmem"] = self.core.signature.members["gmem"]
        super().__init__({**_flat("s_axil", self.lite_sig), **_flat("m_axi", self.axi_sig),
                          "irq": Out(1), **extra})

    def constants(self) -> dict:
        """Published in the manifest: the master's widths and limits, the core's class."""
        return {**self.master_args, "core": type(self.core).__name__,
                "registers": {r.name: r.offset for r in self.regs}}

    def elaborate(self, platform):
        m = Module()
        core = self.core
        m.submodules.core = core
        m.submodules.regs = regs = AxiLiteRegs(self.regs)
        m.submodules.master = master = AxiMaster(**self.master_args)
        wiring.connect(m, wiring.flipped(_Prefixed(self, "s_axil", self.lite_sig)), regs.bus)
        wiring.connect(m, getattr(core, self.mem_name), master.mem)
        wiring.connect(m, master.axi, wiring.flipped(_Prefixed(self, "m_axi", self.axi_sig)))
        if "gmem" in self.core.signature.members:
            forward_gmem(m, self.cfg, self.gmem, core.gmem)

        sticky, irq_en = Signal(), Signal()
        prog_base = Signal(64)
        m.d.comb += core.prog_base.eq(prog_base)
        outs = {"busy": core.busy, "done_sticky": sticky, "error_any": core.error.any(),
                "error": core.error, "cycles": core.cycles, "passes": core.passes,
                "stage": core.stage, "engine": core.engine}
        ins = {"start": core.start, "prog_base": prog_base[:32],
               "prog_base_hi": prog_base[32:self.addr_bits], "iteration": core.iteration,
               "reuse_n": core.reuse_n, "mode": core.mode, "irq_en": irq_en}
        for r in self.regs:
            for f in r.fields:
                bits = slice(f.lsb, f.lsb + f.width)
                if f.access in ("ro", "w1c"):
                    src = outs[f.source]
                    part = src if len(src) == f.width else src[bits]
                    m.d.comb += getattr(regs, f"d_{r.name.lower()}")[bits].eq(part)
                elif f.access in ("rw", "w1p"):
                    dst = ins[f.source]
                    part = dst if len(dst) == f.width else dst[bits]
                    kind = "q" if f.access == "rw" else "pulse"
                    m.d.comb += part.eq(getattr(regs, f"{kind}_{r.name.lower()}")[bits])

        # STATUS.DONE: set by the core's done pulse, cleared by writing 1 or by START
        with m.If(core.start | regs.pulse_status[1]):
            m.d.sync += sticky.eq(0)
        with m.If(core.done):
            m.d.sync += sticky.eq(1)
        m.d.comb += self.irq.eq(sticky & irq_en)
        return m



class AxiShell(DscTop):
    """The bus shell around the test fixture :class:`~exion.hw.memcopy_core.MemcopyCore`
    (the ``axi_shell`` top): tests the registers and the AXI4 master without the DSC."""

    def __init__(self, cfg: Config):
        from .memcopy_core import MemcopyCore
        super().__init__(cfg, MemcopyCore)


class Dsc(DscTop):
    """The DSC top (``dsc``): ``DscCore`` from ``hw/dsc.py`` in the bus shell;
    ``epre_unit_boxes`` (hierarchical synthesis only) and ``dpu_module`` go to the core."""

    def __init__(self, cfg: Config, *, epre_unit_boxes: bool = False,
                 dpu_module: str | None = None):
        # by name: this module must import on a branch where hw/dsc.py does not exist yet
        # (gen/verilog.py registers the ``dsc`` top only when it does)
        import importlib
        core = importlib.import_module("exion.hw.dsc").DscCore
        super().__init__(cfg, core(cfg, epre_unit_boxes=epre_unit_boxes, dpu_module=dpu_module))

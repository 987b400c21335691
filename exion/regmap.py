"""The DSC's AXI4-Lite register map: ONE table, and its Markdown and C-header renderings.

Everything that knows a register offset reads it from :func:`dsc_registers`: the
AXI4-Lite slave (``hw/axi.py`` ``AxiLiteRegs`` is generated from the table), the checked-in
``docs/dsc_regs.md`` (:func:`markdown`, kept current by a test), the C header that
``exion gen`` writes beside the Verilog of a DSC top (:func:`c_header`), and the cocotb
bench. The table lives in ``exion/`` because hardware, generators and benches all need it.

Conventions (also in ``docs/dsc_bus.md`` and ``docs/choices.md``):

* 32-bit registers on 4-byte aligned offsets in a 4 KiB window; the low two address bits
  are ignored, byte strobes select the written bytes of a writable field.
* Access of a field: ``rw`` (read/write), ``ro`` (read-only, hardware value), ``w1p``
  (write 1 to pulse for one cycle; reads 0), ``w1c`` (sticky, set by hardware, write 1 to
  clear), ``const`` (read-only build-time constant).
* Responses: an offset outside the table answers ``DECERR``; a write to a register with no
  writable field answers ``SLVERR`` and changes nothing; reads never have side effects.
* ``PROG_BASE_HI`` exists in every map so drivers need not branch; with a 32-bit AXI4
  address it has no field (reads 0, writes are accepted and ignored).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Field", "Register", "REGMAP_VERSION", "DSC_ID", "ERROR_BITS", "dsc_registers",
           "register", "markdown", "c_header", "ACCESS"]

#: Register-map version (major << 16 | minor), read from ``VERSION``; bump the major on an
#: incompatible change of an offset or a field.
REGMAP_VERSION = (1 << 16) | 0
#: ``ID`` register value: ASCII "EXDS" (EXION DSC), so a driver can probe for the core.
DSC_ID = 0x45584453

#: Meaning of the bits of the core's ``error`` output (``ERROR`` register). Bits 0 and 1
#: come from the AXI4 master's responses (SLVERR/DECERR forwarded as ``err`` to the core,
#: which latches them); bit 2 and up are the core's own.
ERROR_BITS = {
    0: ("RD_BUS", "a read burst returned SLVERR or DECERR"),
    1: ("WR_BUS", "a write burst returned SLVERR or DECERR"),
    2: ("PROGRAM", "the program at PROG_BASE is malformed (core-defined)"),
}

ACCESS = {
    "rw": "read/write",
    "ro": "read-only (hardware status)",
    "w1p": "write 1 to pulse (one cycle); reads 0",
    "w1c": "set by hardware; write 1 to clear",
    "const": "read-only build-time constant",
}


@dataclass(frozen=True)
class Field:
    """A bit field of a register.

    ``source`` names what drives or receives the field in hardware: a control member of
    the core (``dsc_control_signature``), or one of the shell's own names (``done_sticky``,
    ``irq_en``, ``error_any``); ``value`` is the constant of a ``const`` field.
    """

    name: str
    lsb: int
    width: int
    access: str
    doc: str
    source: str = ""
    reset: int = 0
    value: int = 0

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def writable(self) -> bool:
        return self.access in ("rw", "w1p", "w1c")


@dataclass(frozen=True)
class Register:
    """A 32-bit register at byte ``offset``."""

    name: str
    offset: int
    doc: str
    fields: tuple[Field, ...]

    @property
    def writable(self) -> bool:
        """Whether a write is accepted (OKAY). A register with no field (``PROG_BASE_HI``
        on a 32-bit address) accepts writes and ignores them."""
        return not self.fields or any(f.writable for f in self.fields)

    @property
    def reset(self) -> int:
        return sum((f.value if f.access == "const" else f.reset) << f.lsb
                   for f in self.fields if f.access in ("rw", "const"))


def _check(regs: list[Register]) -> None:
    seen: dict[int, str] = {}
    for r in regs:
        if r.offset % 4 or not 0 <= r.offset < 4096:
            raise ValueError(f"register {r.name}: offset {r.offset:#x} must be 4-byte aligned "
                             f"and below 0x1000")
        if r.offset in seen:
            raise ValueError(f"register {r.name}: offset {r.offset:#x} already used by "
                             f"{seen[r.offset]}")
        seen[r.offset] = r.name
        used = 0
        for f in r.fields:
            if f.access not in ACCESS:
                raise ValueError(f"{r.name}.{f.name}: access {f.access!r} not in {list(ACCESS)}")
            if f.width < 1 or f.lsb + f.width > 32 or used & f.mask:
                raise ValueError(f"{r.name}.{f.name}: bits [{f.lsb + f.width - 1}:{f.lsb}] "
                                 f"overlap another field or leave the 32-bit register")
            if f.access == "const" and not 0 <= f.value < (1 << f.width):
                raise ValueError(f"{r.name}.{f.name}: constant {f.value} does not fit in "
                                 f"{f.width} bits")
            used |= f.mask


def dsc_registers(cfg=None, *, data_bits: int = 64, addr_bits: int = 32) -> list[Register]:
    """The register table of a DSC top (sorted by offset).

    ``cfg`` (an :class:`exion.config.Config`, or ``None`` for the layout alone, as in the
    checked-in Markdown) fills the ``CONFIG0``/``CONFIG1`` constants; ``data_bits`` and
    ``addr_bits`` are the AXI4 master's data and address widths.
    """
    if not 32 <= addr_bits <= 64:
        raise ValueError(f"addr_bits must be 32..64, got {addr_bits}")
    c = (lambda name: getattr(cfg, name)) if cfg is not None else (lambda name: 0)
    hi = addr_bits - 32
    regs = [
        Register("ID", 0x000, "Identifies the core: ASCII \"EXDS\".",
                 (Field("ID", 0, 32, "const", "0x45584453", value=DSC_ID),)),
        Register("VERSION", 0x004, "Register-map version.",
                 (Field("MINOR", 0, 16, "const", "minor version", value=REGMAP_VERSION & 0xFFFF),
                  Field("MAJOR", 16, 16, "const", "major version", value=REGMAP_VERSION >> 16))),
        Register("CONFIG0", 0x008, "Key build parameters of the core (Config).",
                 (Field("ROWS", 0, 8, "const", "R: DPU rows of the SDUE", value=c("rows")),
                  Field("COLS", 8, 8, "const", "C: DPU columns", value=c("cols")),
                  Field("LANES", 16, 8, "const", "L: multipliers per DPU", value=c("lanes")),
                  Field("MERGE_WAYS", 24, 8, "const", "m: most ConMerge ways",
                        value=c("merge_ways")))),
        Register("CONFIG1", 0x00C, "Operand widths and the AXI4 master's widths.",
                 (Field("WIDTH", 0, 8, "const", "W: operand bits", value=c("width")),
                  Field("ACC_WIDTH", 8, 8, "const", "A: accumulator bits",
                        value=c("acc_width")),
                  Field("DATA_BYTES", 16, 8, "const", "AXI4 master data bytes per beat",
                        value=data_bits // 8),
                  Field("ADDR_BITS", 24, 8, "const", "AXI4 master address bits",
                        value=addr_bits))),
        Register("CTRL", 0x010, "Run control.",
                 (Field("START", 0, 1, "w1p", "start a run of the program at PROG_BASE",
                        source="start"),)),
        Register("STATUS", 0x014, "Run status.",
                 (Field("BUSY", 0, 1, "ro", "a run is in progress", source="busy"),
                  Field("DONE", 1, 1, "w1c", "a run ended (sticky; START also clears it)",
                        source="done_sticky"),
                  Field("ERROR", 2, 1, "ro", "ERROR is not zero", source="error_any"),
                  Field("ENGINE", 3, 1, "ro", "a GEMM holds the gemm engine (from its "
                        "descriptor's decode until the engine is idle)", source="engine"))),
        Register("IRQ_EN", 0x018, "Interrupt enable: irq = STATUS.DONE & IRQ_EN.DONE.",
                 (Field("DONE", 0, 1, "rw", "raise irq while STATUS.DONE is set",
                        source="irq_en"),)),
        Register("PROG_BASE", 0x020, "Byte address of the program (low 32 bits).",
                 (Field("PROG_BASE", 0, 32, "rw", "program address [31:0]",
                        source="prog_base"),)),
        Register("PROG_BASE_HI", 0x024, "Program address bits above 31 (64-bit hosts).",
                 (Field("PROG_BASE_HI", 0, hi, "rw", f"program address [{addr_bits - 1}:32]",
                        source="prog_base_hi"),) if hi else ()),
        Register("ITERATION", 0x028, "Diffusion iteration index of the next run.",
                 (Field("ITERATION", 0, 16, "rw", "iteration counter", source="iteration"),)),
        Register("REUSE_N", 0x02C, "FFN-Reuse period N (iteration % N == 0 is dense).",
                 (Field("REUSE_N", 0, 8, "rw", "N", source="reuse_n", reset=1),)),
        Register("MODE", 0x030, "Run mode bits.",
                 (Field("EP", 0, 1, "rw", "eager prediction", source="mode"),
                  Field("FFNR", 1, 1, "rw", "FFN-Reuse", source="mode"))),
        Register("CYCLES", 0x040, "Cycles of the last (or current) run.",
                 (Field("CYCLES", 0, 32, "ro", "cycle counter", source="cycles"),)),
        Register("PASSES", 0x044, "SDUE passes of the last (or current) run.",
                 (Field("PASSES", 0, 32, "ro", "pass counter", source="passes"),)),
        Register("STAGE", 0x048, "Program step being executed.",
                 (Field("STAGE", 0, 8, "ro", "step id", source="stage"),)),
        Register("ERROR", 0x04C, "Error flags of the last run (cleared by START).",
                 tuple(Field(n, b, 1, "ro", d, source="error") for b, (n, d) in
                       sorted(ERROR_BITS.items())) +
                 (Field("CORE", 3, 5, "ro", "core-specific error bits", source="error"),)),
    ]
    _check(regs)
    return regs


def register(regs: list[Register], name: str) -> Register:
    """The register called ``name``."""
    for r in regs:
        if r.name == name:
            return r
    raise KeyError(f"no register {name!r}; registers: {', '.join(r.name for r in regs)}")


def _bits(f: Field) -> str:
    return f"{f.lsb}" if f.width == 1 else f"{f.lsb + f.width - 1}:{f.lsb}"


def markdown(regs: list[Register] | None = None) -> str:
    """The register map as Markdown (``docs/dsc_regs.md``)."""
    regs = regs if regs is not None else dsc_registers()
    out = ["# DSC register map (AXI4-Lite)", "",
           "Generated by `exion.regmap.markdown()` from the table in `exion/regmap.py`; do not "
           "edit (`tests/test_dsc_bus.py` checks it is current). "
           f"Register-map version {REGMAP_VERSION >> 16}.{REGMAP_VERSION & 0xFFFF}. "
           "The bus behaviour is in [dsc_bus.md](dsc_bus.md).", "",
           "32-bit registers in a 4 KiB window. Unmapped offsets answer DECERR; a write to a "
           "register with no writable field answers SLVERR. Widths shown for a 32-bit AXI4 "
           "address (`PROG_BASE_HI` gains a field on a wider address).", "",
           "| offset | register | bits | field | access | reset | description |",
           "|---|---|---|---|---|---|---|"]
    for r in regs:
        out.append(f"| `{r.offset:#05x}` | **{r.name}** | | | | | {r.doc} |")
        for f in r.fields:
            reset = "config" if f.access == "const" and f.name not in ("ID", "MINOR", "MAJOR") \
                else (f"`{f.value:#x}`" if f.access == "const" else str(f.reset))
            out.append(f"| | | {_bits(f)} | `{f.name}` | {f.access} | {reset} | {f.doc} |")
    out += ["", "Access types:", ""]
    out += [f"* `{k}`: {v}" for k, v in ACCESS.items()]
    out.append("")
    return "\n".join(out)


def c_header(regs: list[Register], *, module: str = "exion_dsc") -> str:
    """A C header with one ``#define`` per register offset, field shift/mask and constant."""
    guard = f"{module.upper()}_REGS_H"
    p = module.upper()
    out = [f"/* Register map of {module} (AXI4-Lite). Generated by exion from "
           "exion/regmap.py; do not edit. */",
           f"#ifndef {guard}", f"#define {guard}", "",
           f"#define {p}_REGMAP_VERSION 0x{REGMAP_VERSION:08x}u",
           f"#define {p}_REGS_SIZE 0x1000u", ""]
    for r in regs:
        out.append(f"/* {r.name}: {r.doc} */")
        out.append(f"#define {p}_{r.name}_OFFSET 0x{r.offset:03x}u")
        if r.reset or any(f.access == "const" for f in r.fields):
            out.append(f"#define {p}_{r.name}_RESET 0x{r.reset:08x}u")
        for f in r.fields:
            q = f"{p}_{r.name}_{f.name}" if f.name != r.name else f"{p}_{r.name}"
            out.append(f"#define {q}_SHIFT {f.lsb}u")
            out.append(f"#define {q}_MASK 0x{f.mask:08x}u")
        out.append("")
    out += ["#ifndef __ASSEMBLER__", "#include <stdint.h>",
            "/* The register block as a struct (volatile access through a base pointer). */",
            f"typedef struct {module}_regs {{"]
    pos, pad = 0, 0
    for r in regs:
        if r.offset > pos:
            out.append(f"    uint32_t reserved{pad}[{(r.offset - pos) // 4}];")
            pad += 1
        out.append(f"    uint32_t {r.name.lower()};  /* {r.offset:#05x} */")
        pos = r.offset + 4
    out += [f"}} {module}_regs_t;", "#endif", "", f"#endif /* {guard} */", ""]
    return "\n".join(out)

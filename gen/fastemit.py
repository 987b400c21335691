"""Faster Verilog for large memories: two output-preserving shortcuts around Amaranth 0.5.

Generation of the exion16 gemm engine spends about a third of its time in Amaranth's
``ModuleEmitter.emit_memory``: the ``$meminit_v2`` cell of every memory is built as one NIR
constant net per init bit (22.7 M bits for the engine's 110 memories, all zero), then turned
back into an RTLIL constant string bit by bit. :func:`fast_meminit` replaces that one method,
for the duration of a ``with`` block, by one that writes the *same* RTLIL constant string
directly from the integer rows (``format(row, "0{width}b")``). The RTLIL text, and so the
Verilog, is byte-identical (``tests/test_fastemit.py`` converts designs both ways and compares).

Yosys then writes a zero-initialised memory as one assignment per word
(``mem[12345] = 48'h000000000000;``): 128,649 lines in the exion16 engine, which Verilator
turns into one C++ statement each. :func:`fold_zero_init` rewrites an ``initial`` block whose
assignments are all the zero words of one memory, addresses 0..N-1 in order, into an
equivalent loop over the same addresses (a module-scope ``integer`` loop variable, plain
Verilog-2001, so Verilator, Icarus and Yosys read it). Any block that is not exactly that
shape is left as Yosys wrote it.

Both are **[choice]**s recorded in ``docs/choices.md``. The method replacement is tied to the
Amaranth version it was checked against (:data:`CHECKED_AMARANTH`); on any other version it
does nothing and generation takes the slow, original path.
"""

from __future__ import annotations

import contextlib
import re
from importlib.metadata import version

__all__ = ["fast_meminit", "fold_zero_init", "CHECKED_AMARANTH"]

#: Amaranth releases whose ``ModuleEmitter.emit_memory`` the fast path reproduces exactly.
CHECKED_AMARANTH = ("0.5.",)


def _meminit_data(init, width: int) -> str:
    """The RTLIL constant Amaranth's ``sigspec`` makes of the init rows' bits, MSB first."""
    n = len(init) * width
    if n == 0:
        return "{ }"
    mask = (1 << width) - 1
    if not any(init):
        bits = "0" * n
    else:
        bits = "".join(format(row & mask, f"0{width}b") for row in reversed(init))
    return f"{n}'{bits}"


def _emit_memory(self, cell_idx, cell) -> None:
    from amaranth.hdl import _nir

    memory_info = self.memories[cell_idx]
    self.builder.cell("$meminit_v2", ports={
        "ADDR": self.sigspec(),
        "DATA": _meminit_data(list(cell.init), cell.width),
        "EN": self.sigspec(_nir.Value.ones(cell.width)),
    }, parameters={
        "MEMID": memory_info.memid,
        "ABITS": 0,
        "WIDTH": cell.width,
        "WORDS": cell.depth,
        "PRIORITY": 0,
    }, src_loc=cell.src_loc)


@contextlib.contextmanager
def fast_meminit():
    """Within the block, Amaranth emits ``$meminit_v2`` data as one string per memory."""
    from amaranth.back import rtlil

    if not version("amaranth").startswith(CHECKED_AMARANTH):
        yield False
        return
    original = rtlil.ModuleEmitter.emit_memory
    rtlil.ModuleEmitter.emit_memory = _emit_memory
    try:
        yield True
    finally:
        rtlil.ModuleEmitter.emit_memory = original


_INIT_BLOCK = re.compile(
    r"^(?P<ind>[ \t]*)initial begin\n"
    r"(?P<body>(?:[ \t]*\\?[\w$.]+ ?\[\d+\] = \d+'[hbd]0+;\n)+)"
    r"(?P=ind)end\n", re.M)
_ASSIGN = re.compile(r"^[ \t]*(\\?[\w$.]+ ?)\[(\d+)\] = (\d+)'[hbd]0+;$", re.M)
_LOOP_VAR = "exion_init_i"


def fold_zero_init(text: str) -> tuple[str, int]:
    """Fold all-zero, in-order memory ``initial`` blocks into loops; returns (text, count).

    The loop variable is declared once in each module that gets a loop (after the module's
    header, i.e. the first line ending in ``);`` after ``module``)."""
    out: list[str] = []
    folded = 0
    pos = 0
    for mod in re.finditer(r"^module .*?^endmodule\n", text, re.M | re.S):
        out.append(text[pos:mod.start()])
        body, n = _fold_module(mod.group(0))
        out.append(body)
        folded += n
        pos = mod.end()
    out.append(text[pos:])
    return "".join(out), folded


def _fold_module(mod: str) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        rows = _ASSIGN.findall(m.group("body"))
        names = {r[0].strip() for r in rows}
        if len(names) != 1 or [int(r[1]) for r in rows] != list(range(len(rows))):
            return m.group(0)
        count += 1
        name, width, ind = rows[0][0], rows[0][2], m.group("ind")
        return (f"{ind}initial for ({_LOOP_VAR} = 0; {_LOOP_VAR} < {len(rows)}; "
                f"{_LOOP_VAR} = {_LOOP_VAR} + 1) {name}[{_LOOP_VAR}] = {width}'h0;\n")

    new = _INIT_BLOCK.sub(repl, mod)
    if count:
        head_end = re.search(r"\);\n", new).end()
        new = new[:head_end] + f"  integer {_LOOP_VAR};\n" + new[head_end:]
    return new, count

"""The generator's output-preserving shortcuts for memories (gen/fastemit.py, issue 21)."""


import re

import pytest
from amaranth import Module, Signal, unsigned
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from exion.config import PRESETS
from exion.gen.fastemit import _meminit_data, fast_meminit, fold_zero_init
from exion.gen.verilog import TOPS, lint


class _Mems(wiring.Component):
    """Memories with zero, mixed and wide init, read and written."""

    addr: In(6)
    out: Out(3 * 37)

    def elaborate(self, platform):
        m = Module()
        outs = []
        for i, (width, depth, init) in enumerate([
                (37, 64, []),
                (37, 64, [(k * 0x9E3779B1) & ((1 << 37) - 1) for k in range(40)]),
                (5, 33, [0, 31, 0, 1])]):
            m.submodules[f"m{i}"] = mem = Memory(shape=unsigned(width), depth=depth, init=init)
            rd = mem.read_port()
            wr = mem.write_port()
            m.d.comb += [rd.addr.eq(self.addr), wr.addr.eq(~self.addr), wr.data.eq(self.addr),
                         wr.en.eq(self.addr[0])]
            outs.append(rd.data)
        m.d.comb += self.out.eq(Signal.cast(outs[0]) | (outs[1] << 37) | (outs[2] << 74))
        return m


def _rtlil(design) -> str:
    return rtlil.convert(design, name="t", emit_src=False)


@pytest.mark.parametrize("make", [lambda: _Mems(), lambda: TOPS["cau"][0](PRESETS["toy"])],
                         ids=["mixed_init", "toy_cau"])
def test_fast_meminit_is_byte_identical(make):
    slow = _rtlil(make())
    with fast_meminit() as active:
        fast = _rtlil(make())
    assert active
    assert "$meminit_v2" in slow
    assert fast == slow


def test_meminit_data_bit_order():
    # Amaranth's sigspec lists row 0 bit 0 first and prints MSB first.
    assert _meminit_data([1, 2], 2) == "4'1001"
    assert _meminit_data([0, 0, 0], 4) == "12'000000000000"
    assert _meminit_data([-1], 3) == "3'111"


_V = """module top(a, b);
  input a;
  output b;
  reg [3:0] mem [2:0];
  initial begin
    mem[0] = 4'h0;
    mem[1] = 4'h0;
    mem[2] = 4'h0;
  end
  reg [3:0] odd [1:0];
  initial begin
    odd[0] = 4'h0;
    odd[1] = 4'h3;
  end
  reg [3:0] \\x.y  [1:0];
  initial begin
    \\x.y [0] = 4'h0;
    \\x.y [1] = 4'h0;
  end
endmodule
module other(c);
  input c;
endmodule
"""


def test_fold_zero_init_only_folds_zero_in_order_blocks():
    text, n = fold_zero_init(_V)
    assert n == 2
    assert "initial for (exion_init_i = 0; exion_init_i < 3; exion_init_i = exion_init_i + 1) " \
           "mem[exion_init_i] = 4'h0;" in text
    assert "\\x.y [exion_init_i] = 4'h0;" in text
    assert "odd[1] = 4'h3;" in text          # a non-zero word keeps its block
    assert text.count("integer exion_init_i;") == 1
    assert text.index("integer exion_init_i;") < text.index("initial for")
    assert "module other(c);\n  input c;\nendmodule" in text     # untouched module


def test_generated_toy_verilog_has_no_per_word_zero_init():
    from exion.gen.verilog import generate_shared
    gen = generate_shared(PRESETS["toy"], "gemm")   # the suite's toy engine, generated once
    text = gen.verilog.read_text()
    assert "exion_init_i" in text
    assert not re.search(r"initial begin\n\s*\S+ ?\[0\] = \d+'h0+;\n", text)
    assert lint(gen.verilog, "exion_gemm") == []

"""The second simulator (Icarus Verilog): the two problems a new user hit, and agreement.

* (a) ``sv_time0_fix``: under ``iverilog -g2012`` (SystemVerilog event rules, what cocotb's
  Icarus runner passes) Yosys's time-0 trigger of ``always @*`` does not fire, so a
  combinational output whose inputs never change holds X; the test shows X on the raw
  Verilog (the mutation) and the right value on the fixed copy.
* (b) ``wait_idle``: a busy flag with a zero-time glitch (tests/xsim_fixtures/glitch.v);
  the shared helper returns after the real fall, the old bare ``FallingEdge(busy)`` at the
  glitch (the mutation).
* Agreement: CAU and gemm engine (the two blocks that failed) on both simulators, same seeds,
  same outputs and cycles; all five blocks under ``long`` (``make xsim`` runs them too).

Icarus is a Debian package (``apt-get install -y iverilog``; ``make xsim`` installs it):
without it these tests are skipped with that message.
"""

import json
import subprocess
from pathlib import Path

import pytest
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from exion import PRESETS
from exion.gen.toolchain import ICARUS_INSTALL, icarus_available
from exion.gen.verilog import sv_time0_fix

pytestmark = pytest.mark.skipif(not icarus_available(),
                                reason=f"Icarus Verilog not installed: {ICARUS_INSTALL}")

FIXTURES = Path(__file__).parent / "xsim_fixtures"


class ConstReady(wiring.Component):
    """``ready`` decoded from a state register that keeps its init value through reset
    (like the CAU's ``mask.ready``): only the time-0 evaluation ever computes it."""

    ready: Out(1)

    def elaborate(self, platform):
        m = Module()
        state = Signal(2, init=1)
        m.d.sync += state.eq(state)
        with m.Switch(state):
            with m.Case(1):
                m.d.comb += self.ready.eq(1)
        return m


TB = """module tb;
  reg clk = 0, rst = 0;
  wire ready;
  top dut(.clk(clk), .rst(rst), .ready(ready));
  initial begin #1 $display("ready=%b", ready); $finish; end
endmodule
"""


def _icarus_ready(tmp_path: Path, text: str) -> str:
    (tmp_path / "top.v").write_text(text)
    (tmp_path / "tb.v").write_text(TB)
    subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "a.vvp"), "-s", "tb",
                    str(tmp_path / "top.v"), str(tmp_path / "tb.v")], check=True,
                   capture_output=True)
    out = subprocess.run(["vvp", "-n", str(tmp_path / "a.vvp")], capture_output=True,
                         text=True, check=True).stdout
    return next(ln for ln in out.splitlines() if ln.startswith("ready=")).split("=")[1]


def test_time0_trigger_fires_under_sv_rules(tmp_path):
    dut = ConstReady()
    raw = verilog.convert(dut, name="top", ports=[dut.ready], emit_src=False)
    fixed, n = sv_time0_fix(raw)
    assert n == 1
    assert _icarus_ready(tmp_path, raw) == "x"      # the bug: the mutation the fix removes
    assert _icarus_ready(tmp_path, fixed) == "1"


def _glitch_count(tmp_path: Path, naive: bool, monkeypatch) -> int:
    from cocotb_tools.runner import get_runner
    runner = get_runner("icarus")
    build = tmp_path / "build"
    runner.build(sources=[FIXTURES / "glitch.v"], hdl_toplevel="glitch", build_dir=build,
                 timescale=("1ns", "1ps"), always=True, log_file=build / "build.log")
    report = tmp_path / f"report-{naive}.json"
    env = {"EXION_REPORT": str(report), "EXION_PARAMS": json.dumps({"naive": naive})}
    monkeypatch.syspath_prepend(str(FIXTURES))   # cocotb's runner passes sys.path on
    runner.test(hdl_toplevel="glitch", hdl_toplevel_lang="verilog", test_module="tb_glitch",
                build_dir=build, test_dir=tmp_path, extra_env=env, seed=1,
                results_xml=str(tmp_path / f"results-{naive}.xml"),
                log_file=tmp_path / f"sim-{naive}.log")
    return json.loads(report.read_text())["count"]


def test_wait_idle_ignores_zero_time_glitch(tmp_path, monkeypatch):
    # the old helper stops at the glitch (the mutation), the shared one waits for idle
    assert _glitch_count(tmp_path, True, monkeypatch) == 4
    assert _glitch_count(tmp_path, False, monkeypatch) == 9


def _agree(blocks, seeds):
    from exion.sim.xsim import xsim
    rep = xsim(PRESETS["toy"], blocks, seeds)
    bad = [r for r in rep["cases"] if r["disagreement"] or r["golden_verilator"]
           or r["golden_icarus"]]
    assert not bad, bad
    assert rep["agree"]
    return rep


@pytest.mark.rtl
def test_cau_and_gemm_agree_on_icarus_and_verilator():
    rep = _agree(["cau", "gemm"], [11, 12])
    assert all(r["cycles_verilator"] > 0 for r in rep["cases"])


@pytest.mark.long
@pytest.mark.rtl
def test_all_blocks_agree_on_icarus_and_verilator():
    _agree(["dpu", "sdue", "cau", "epre", "gemm"], range(1, 9))

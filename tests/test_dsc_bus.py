"""The DSC bus shell: register table and its renderings, FuseSoC core, AXI cocotb bench.

* the checked-in ``docs/dsc_regs.md`` is what :func:`exion.regmap.markdown` renders now;
* the C header compiles, and a C program printing its offsets agrees with the table;
* ``fusesoc`` itself accepts the ``.core`` file ``exion gen`` writes and lints through it;
* the ``axi_shell`` top (``DscTop`` around the ``MemcopyCore`` fixture) passes
  ``sim/tb_axi.py`` (cocotbext-axi AxiLiteMaster/AxiRam, random stalls on every channel,
  protocol checkers) on toy;
* mutations: an AXI master that does not split at 4 KiB, one whose ARVALID drops before
  ARREADY, one that loses a BRESP error, and a register block that ignores byte strobes
  each fail the bench.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exion import PRESETS
from exion.regmap import Field, Register, _check, c_header, dsc_registers, markdown

ROOT = Path(__file__).resolve().parent.parent


def test_markdown_register_map_is_current():
    doc = ROOT / "docs" / "dsc_regs.md"
    assert doc.read_text() == markdown(), (
        "docs/dsc_regs.md is stale: python -c 'from exion.regmap import markdown; "
        "open(\"docs/dsc_regs.md\", \"w\").write(markdown())'")


def test_table_rejects_overlaps_and_bad_offsets():
    f = Field("A", 0, 8, "rw", "a")
    with pytest.raises(ValueError, match="0x6 must be 4-byte aligned"):
        _check([Register("X", 6, "", (f,))])
    with pytest.raises(ValueError, match="already used by X"):
        _check([Register("X", 4, "", (f,)), Register("Y", 4, "", (f,))])
    with pytest.raises(ValueError, match=r"X.B: bits \[11:4\] overlap"):
        _check([Register("X", 4, "", (f, Field("B", 4, 8, "rw", "b")))])
    with pytest.raises(ValueError, match="access 'rx'"):
        _check([Register("X", 4, "", (Field("A", 0, 1, "rx", "a"),))])


def test_table_has_every_control_member():
    """Every control member of the contract (hw/memif.py) has a register field."""
    from exion.hw.memif import dsc_control_signature
    sources = {f.source for r in dsc_registers(PRESETS["toy"]) for f in r.fields}
    assert set(dsc_control_signature().members) <= sources | {"done"}


@pytest.mark.parametrize("addr_bits", [32, 40])
def test_c_header_compiles_and_matches_the_table(tmp_path, addr_bits):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")
    assert cc, "no C compiler: g++ is a stated prerequisite (README), Verilator needs it too"
    cfg = PRESETS["toy"]
    regs = dsc_registers(cfg, data_bits=64, addr_bits=addr_bits)
    (tmp_path / "exion_dsc_regs.h").write_text(c_header(regs, module="exion_dsc"))
    prints = []
    for r in regs:
        prints.append(f'printf("{r.name} %u %u\\n", (unsigned)EXION_DSC_{r.name}_OFFSET, '
                      f'(unsigned)offsetof(exion_dsc_regs_t, {r.name.lower()}));')
        for f in r.fields:
            q = f"EXION_DSC_{r.name}_{f.name}" if f.name != r.name else f"EXION_DSC_{r.name}"
            prints.append(f'printf("{r.name}.{f.name} %u %u\\n", (unsigned){q}_SHIFT, '
                          f'(unsigned){q}_MASK);')
    (tmp_path / "t.c").write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"exion_dsc_regs.h\"\n"
        "int main(void) {\n" + "\n".join(prints) + "\nreturn 0;\n}\n")
    subprocess.run([cc, "-Wall", "-Werror", "-o", str(tmp_path / "t"), str(tmp_path / "t.c")],
                   check=True, cwd=tmp_path)
    out = subprocess.run([str(tmp_path / "t")], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    want = []
    for r in regs:
        want.append(f"{r.name} {r.offset} {r.offset}")
        want += [f"{r.name}.{f.name} {f.lsb} {f.mask}" for f in r.fields]
    assert out[:-1] == want


def test_gen_writes_a_core_file_fusesoc_accepts_and_lints(tmp_path, cli_run):
    """``exion gen`` writes .core and the C header; fusesoc reads the core (core-info) and
    runs its ``lint`` target with Verilator (-Wall, the generated waivers apply)."""
    from exion.gen.toolchain import verilator_env
    out = tmp_path / "ip"
    code, text, _ = cli_run("gen", "--config", "toy", "--top", "axi_shell", "--out", str(out))
    assert code == 0
    assert (out / "exion_axi_shell.core").exists() and (out / "exion_axi_shell_regs.h").exists()
    assert "FuseSoC core file" in text
    fusesoc = [str(Path(os.sys.executable).parent / "fusesoc"), "--cores-root", str(out)]
    env = verilator_env()
    info = subprocess.run([*fusesoc, "core-info", "exion:gen:exion_axi_shell"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "exion_axi_shell.core" in info.stdout and "lint" in info.stdout
    lint = subprocess.run([*fusesoc, "run", "--target", "lint", "--build-root",
                           str(tmp_path / "fs"), "exion:gen:exion_axi_shell"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "%Warning" not in lint.stdout + lint.stderr


def test_gen_core_file_of_a_block_without_registers(tmp_path, cli_run):
    code, _, _ = cli_run("gen", "--config", "toy", "--top", "dpu", "--out", str(tmp_path))
    assert code == 0
    core = (tmp_path / "exion_dpu.core").read_text()
    assert "name: exion:gen:exion_dpu:" in core and "exion_dpu.v" in core
    assert not (tmp_path / "exion_dpu_regs.h").exists()


# ---- RTL: the cocotb bench on the axi_shell top ----------------------------------------------
def _run_shell(top: str, *, seed: int = 11, cases=None, stall: float = 0.3, n_random: int = 4):
    from exion.sim.runner import rtl_build, run_bench
    build = rtl_build(PRESETS["toy"], top)
    return run_bench(build, "exion.sim.tb_axi", seed=seed,
                     params={"cases": cases or ["regs", "dma", "errors"], "stall": stall,
                             "n_random": n_random})


@pytest.mark.rtl
def test_axi_shell_bench_toy():
    seed = int(os.environ.get("EXION_SEED", 11))
    report = _run_shell("axi_shell", seed=seed)
    assert report["regs"]["registers"] == len(dsc_registers(PRESETS["toy"]))
    assert report["errors"]["read"] == 1 and report["errors"]["write"] == 2
    runs = report["dma"]["runs"]
    assert any(r["ar_bursts"] > r["commands"] for r in runs), "no read command was split"
    assert any(r["aw_bursts"] > r["commands"] for r in runs), "no write command was split"
    print(json.dumps({r["src"]: r["cycles"] for r in runs}))


@pytest.mark.rtl
@pytest.mark.long
@pytest.mark.parametrize("data_bits,addr_bits", [(32, 40), (128, 32), (512, 64)])
def test_axi_shell_bench_other_widths(monkeypatch, data_bits, addr_bits):
    """The shell around a fixture of other bus widths: 4 KiB splits at 16..64 bytes a beat,
    PROG_BASE_HI present on wide addresses."""
    from exion.gen import verilog
    from exion.hw.dsc_top import DscTop
    from exion.hw.memcopy_core import MemcopyCore

    def make(cfg):
        return DscTop(cfg, MemcopyCore(cfg, data_bits=data_bits, addr_bits=addr_bits))
    top = f"axi_shell_d{data_bits}_a{addr_bits}"
    monkeypatch.setitem(verilog.TOPS, top, (make, "bus shell of other widths"))
    report = _run_shell(top, seed=int(os.environ.get("EXION_SEED", 5)))
    assert report["regs"]["registers"] == 16
    assert any(r["ar_bursts"] > r["commands"] for r in report["dma"]["runs"])


# Mutations: each must fail the bench. Registered as extra tops so their Verilog (and
# Verilator build) never mixes with the real one's cache entry.
def _mutant(monkeypatch, name: str, patch) -> str:
    from exion.gen import verilog
    from exion.hw import dsc_top
    import hashlib
    import inspect
    patch()
    # the name carries the mutation's source, so an edited mutation never reuses a stale build
    digest = hashlib.sha256(inspect.getsource(MUTANTS[name][0]).encode()).hexdigest()[:6]
    top = f"axi_shell_mut_{name}_{digest}"
    monkeypatch.setitem(verilog.TOPS, top, (dsc_top.AxiShell, f"mutant {name}"))
    return top


def _no_split(monkeypatch):
    from exion.hw import axi_master
    monkeypatch.setattr(axi_master, "BOUNDARY", 1 << 16)


def _arvalid_drops(monkeypatch):
    from amaranth import Signal
    from exion.hw import axi_master
    orig = axi_master.AxiMaster._read_side

    def broken(self, m):
        orig(self, m)
        split, info = m.submodules.rd_split, m.submodules.rd_info
        tick = Signal()
        m.d.sync += tick.eq(~tick)
        # ARVALID low on every other cycle, whatever ARREADY did (the later assignment
        # wins); bursts still advance only on a handshake, so nothing else breaks
        m.d.comb += [self.axi.arvalid.eq(split.burst.valid & info.w_rdy & tick),
                     split.burst.ready.eq(self.axi.arready & info.w_rdy & tick)]
    monkeypatch.setattr(axi_master.AxiMaster, "_read_side", broken)


def _bresp_lost(monkeypatch):
    from exion.hw import axi_master
    orig = axi_master.AxiMaster._write_side

    def broken(self, m):
        orig(self, m)
        m.d.comb += self.mem.wr_resp.p.err.eq(0)
    monkeypatch.setattr(axi_master.AxiMaster, "_write_side", broken)


def _strobes_ignored(monkeypatch):
    from exion.hw import axi_lite
    orig = axi_lite.AxiLiteRegs._write

    def broken(self, m, r, data, bits):
        orig(self, m, r, data, bits | 0xFFFFFFFF)
    monkeypatch.setattr(axi_lite.AxiLiteRegs, "_write", broken)


MUTANTS = {"no_split": (_no_split, ["dma"], "crosses a 4 KiB boundary"),
           "arvalid_drops": (_arvalid_drops, ["dma"], "arvalid fell"),
           "bresp_lost": (_bresp_lost, ["errors"], "write SLVERR"),
           "strobes_ignored": (_strobes_ignored, ["regs"], "to bytes")}


@pytest.mark.rtl
@pytest.mark.long
@pytest.mark.parametrize("name", list(MUTANTS))
def test_axi_shell_mutant_fails(monkeypatch, name):
    from exion.sim.runner import BenchFailure
    patch, cases, why = MUTANTS[name]
    top = _mutant(monkeypatch, name, lambda: patch(monkeypatch))
    with pytest.raises(BenchFailure, match=why):
        _run_shell(top, cases=cases, n_random=1)

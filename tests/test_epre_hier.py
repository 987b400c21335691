"""The EPRE's units as black boxes (issue 22, item 2): ``hw.epre_stages.EpreUnit``, the boxed
generation (``generate(..., box_epre_units=True)``) and its hierarchical count
(``exion.gen.fpga.synth._hier``: shell + U x one unit).

Fast checks here; the boxed Verilog on Verilator is ``tests/test_epre_rtl.py::
test_epre_rtl_boxed_units_toy`` (``long``); the toy hierarchical-versus-flat ECP5 synthesis
is ``long`` (the flat toy EPRE takes minutes).
"""

import json
import re

import pytest
from amaranth import Value
from amaranth.lib.wiring import In

from exion import PRESETS
from exion.errors import ExionError
from exion.gen.cli import main
from exion.gen.verilog import component_verilog, generate, lint
from exion.hw.epre_stages import EPRE_UNIT_MODULE, EpreUnit, epre_unit_signature


def _modules(text: str) -> list[str]:
    return re.findall(r"^module \\?([^\s(]+)", text, re.M)


@pytest.fixture(scope="module")
def boxed_toy(tmp_path_factory):
    return generate(PRESETS["toy"], "epre", tmp_path_factory.mktemp("boxed"), reuse=False,
                    box_epre_units=True)


def test_boxed_epre_instantiates_u_units_and_holds_no_unit_logic(boxed_toy):
    """U instances of the unit module in the lanes, the unit's logic (its LODs, ``psum``,
    ``acc``) only in the appended unit module, which is defined once; lint clean."""
    cfg = PRESETS["toy"]
    text = boxed_toy.verilog.read_text()
    mods = _modules(text)
    assert mods.count(EPRE_UNIT_MODULE) == 1
    assert [m for m in mods if m.startswith("exion_epre.lanes.")] == [
        f"exion_epre.lanes.b_l{lane}" for lane in range(cfg.epre_lane_count)]
    lanes = text[text.index("module \\exion_epre.lanes "):]
    lanes = lanes[:lanes.index("endmodule")]
    assert re.findall(rf"^\s*{EPRE_UNIT_MODULE} (\S+) \(", lanes, re.M) == [
        f"unit{u}" for u in range(cfg.epre_unit_count)]
    assert not re.search(r"\b(psum|a_lod\d+)\b", lanes)
    assert not re.search(r"^\s*reg .*\bacc\b", lanes, re.M)      # the port only, no register
    shell = text[:text.index(f"module {EPRE_UNIT_MODULE}(")]
    assert EPRE_UNIT_MODULE + "." not in shell        # no LOD of a unit outside the unit
    assert json.loads(boxed_toy.manifest.read_text())["epre_units"] == "boxed"
    assert lint(boxed_toy.verilog, "exion_epre") == []


def test_flat_epre_elaborates_every_unit(tmp_path):
    """The default generation keeps the full units (one module per unit, no instance of the
    boxed module) and says nothing about boxes in the manifest."""
    cfg = PRESETS["toy"]
    g = generate(cfg, "epre", tmp_path, reuse=False)
    mods = _modules(g.verilog.read_text())
    assert EPRE_UNIT_MODULE not in mods
    assert [m for m in mods if re.fullmatch(r"exion_epre\.lanes\.unit\d+", m)] == [
        f"exion_epre.lanes.unit{u}" for u in range(cfg.epre_unit_count)]
    assert "epre_units" not in json.loads(g.manifest.read_text())


@pytest.mark.parametrize("preset", ["toy", "exion16"])
def test_unit_alone_has_the_declared_ports(preset):
    """The unit generated alone: module ``exion_epre_unit`` with clk, rst and exactly the
    signature's members, each with its width and direction."""
    cfg = PRESETS[preset]
    text = component_verilog(EpreUnit(cfg), EPRE_UNIT_MODULE, strip_internal_attrs=True)
    head = re.search(rf"^module {EPRE_UNIT_MODULE}\((.*?)\);", text, re.M | re.S).group(1)
    body = text[text.index(f"module {EPRE_UNIT_MODULE}("):]
    decl = dict((n, (d, int(hi) + 1 if hi else 1)) for d, hi, n in re.findall(
        r"^\s*(input|output) (?:wire |reg )?(?:(?:signed )?\[(\d+):0\] )?(\w+);",
        body[:body.index("endmodule")], re.M))
    want = {"clk": ("input", 1), "rst": ("input", 1)}
    for path, member, value in epre_unit_signature(cfg).flatten(
            epre_unit_signature(cfg).create()):
        want["__".join(map(str, path))] = ("input" if member.flow == In else "output",
                                           len(Value.cast(value)))
    assert sorted(x.strip() for x in head.split(",")) == sorted(want)
    assert decl == want
    L, W = cfg.epre_lane_count, cfg.width
    assert want["x"] == ("input", L * W) and want["acc"] == ("output", cfg.acc_width)


def test_epre_unit_parents_and_boxes_of_a_dsc_netlist():
    """The instances of the unit module are found per parent, and the shell / unit
    syntheses box the right ones (the EPRE's units go with the DSC's ``epre`` unit)."""
    from exion.gen.fpga.synth import _epre_unit_parents, _modules_under, _unit_modules
    inst = f"  {EPRE_UNIT_MODULE} unit0 (\n  );\n  {EPRE_UNIT_MODULE} unit1 (\n  );\n"
    v = ("module exion_dsc_core(clk);\nendmodule\n"
         "module \\exion_dsc_core.epre (clk);\nendmodule\n"
         f"module \\exion_dsc_core.epre.lanes (clk);\n{inst}endmodule\n"
         f"module {EPRE_UNIT_MODULE}(clk);\nendmodule\n"
         f"module \\{EPRE_UNIT_MODULE}.a_l0 (clk);\nendmodule\n")
    assert _epre_unit_parents(v) == ["exion_dsc_core.epre.lanes"] * 2
    assert _unit_modules(v, "exion_dsc_core") == ["exion_dsc_core.epre"]
    assert _modules_under(v, EPRE_UNIT_MODULE) == [EPRE_UNIT_MODULE, EPRE_UNIT_MODULE + ".a_l0"]
    assert _modules_under(v, "exion_dsc_core") == ["exion_dsc_core", "exion_dsc_core.epre",
                                                   "exion_dsc_core.epre.lanes"]


def test_table_counts_big_epres_hierarchically():
    """``synth-table``: exion16's EPRE tops hierarchical (EPRE lanes or DPUs), toy's flat;
    a boxed row reads "hierarchical, EPRE units"."""
    from exion.gen.fpga.table import hier_row, table_markdown
    e16, toy = PRESETS["exion16"], PRESETS["toy"]
    assert hier_row(e16, "epre") and hier_row(e16, "dsc_core") and hier_row(e16, "cfse")
    assert not hier_row(toy, "epre") and not hier_row(toy, "dsc_core")
    few_dpus = toy.replace(name="toy_big_epre", epre_units=16, epre_lanes=64)
    assert hier_row(few_dpus, "epre") and not hier_row(few_dpus, "cfse")
    row = dict(config="exion16", top="epre", family="ecp5", status="ok",
               method="hierarchical", epre_units="boxed", seconds=1.0, luts=1, ffs=2, dsp=0,
               bram=3, cells=4)
    assert "| exion16 | epre | ecp5 | hierarchical, EPRE units | 1 | 2 | 0 | 3 |" in \
        table_markdown({"rows": {"k": row}})


def test_boxing_a_top_without_an_epre_is_refused(tmp_path, capsys):
    with pytest.raises(ExionError, match=r"^top 'cau' holds no EPRE: box_epre_units needs "
                                         r"one of epre, dsc_core, dsc$"):
        generate(PRESETS["toy"], "cau", tmp_path, box_epre_units=True)
    # --hier on a top with neither DPUs nor EPRE units: one error line, exit status 2
    assert main(["synth", "--config", "toy", "--top", "dpu", "--hier",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("exion: error: top 'dpu' has no DPU instances or EPRE units: "
                       "hierarchical synthesis (--hier) splits an array's DPUs or the EPRE's "
                       "units out; synthesize it flat")
    assert not any(ln.startswith("exion: error") for ln in err[:-1])


@pytest.mark.long
def test_toy_epre_hier_matches_flat_ecp5(tmp_path):
    """The toy EPRE on ECP5, hierarchical (shell + 3 x unit) against flat: the parts add up
    exactly, no multipliers, the same block RAMs, and LUTs and FFs within 10 % (the
    hierarchical count omits optimizations across the unit boundary; measured: see
    docs/fpga.md)."""
    from exion.gen import fpga
    cfg = PRESETS["toy"]
    h = fpga.synth(cfg, "epre", "ecp5", out_dir=tmp_path, hier=True)
    f = fpga.synth(cfg, "epre", "ecp5", out_dir=tmp_path)
    pt = h["parts"]
    U = cfg.epre_unit_count
    assert h["epre_units"] == "boxed" and pt["epre_unit_instances"] == U
    for key in ("luts", "ffs", "bram", "cells"):
        assert h["resources"][key] == pt["shell"][key] + U * pt["epre_unit"][key], key
    assert h["resources"]["dsp"] == f["resources"]["dsp"] == 0
    assert h["resources"]["bram"] == f["resources"]["bram"]
    for key in ("luts", "ffs"):
        assert abs(h["resources"][key] - f["resources"][key]) <= 0.10 * f["resources"][key], \
            (key, h["resources"][key], f["resources"][key])

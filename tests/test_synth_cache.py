"""Hierarchical synthesis, issue 22 item 2: the synthesis cache (a part of a count is one Yosys
run kept by the hash of its script, its Verilog and Yosys's version) and the radix selectors
as an array of identical modules (``exion.gen.fpga.synth.ARRAY_KINDS``).
"""

import json
from pathlib import Path

import pytest

from exion import PRESETS
from exion.config import load_config
from exion.gen import fpga
from exion.gen.fpga.synth import (_array_modules, _cache_key, _yosys_cells, yosys_cache_dir)
from exion.gen.verilog import generate

CONFIGS = Path(__file__).parent.parent / "configs"


def _unit(prefix: str, body: str = "assign y = a & b;", auto: int = 7) -> str:
    """A two-module unit as Amaranth writes it, placed at ``prefix`` in some top."""
    return (f"module \\{prefix} (a, b, y);\n  reg \\$auto$verilog_backend.cc:2355:dump_module"
            f"${auto}  = 0;\n  input a; input b; output y;\n  \\{prefix}.inner  u (a, b, y);\n"
            f"endmodule\nmodule \\{prefix}.inner (a, b, y);\n  input a; input b; "
            f"output y;\n  {body}\nendmodule\n")


def _script(name: str) -> str:
    return f"read_verilog unit-x.v\nhierarchy -top {name}\nsynth_ecp5 -top {name}\n"


def test_cache_key_is_the_unit_not_its_place():
    """The same unit under another top (``exion_dsc_core.gemm`` / ``exion_dsc.core.gemm``) and
    with other auto-numbered helper names has one key; another body, another script or
    another unit name in the same place has another."""
    a, b = "exion_dsc_core.gemm", "exion_dsc.core.gemm"
    key = _cache_key(_script(a), [_unit(a)], a)
    assert _cache_key(_script(b), [_unit(b, auto=33)], b) == key
    # Amaranth's ports named after a design-wide counter: renumbered (a renaming: the
    # same circuit up to names has one key), never merged
    two = _unit(a, "assign y = \\port$103486$921 ;\n  assign z = \\port$103490$0 ;")
    moved = _unit(b, "assign y = \\port$103808$921 ;\n  assign z = \\port$103812$0 ;")
    swapped = _unit(a, "assign y = \\port$103490$921 ;\n  assign z = \\port$103486$0 ;")
    assert _cache_key(_script(a), [two], a) == _cache_key(_script(b), [moved], b)
    same = _unit(a, "assign y = \\port$103486$921 ;\n  assign z = \\port$103486$0 ;")
    assert _cache_key(_script(a), [same], a) != _cache_key(_script(a), [two], a)
    assert _cache_key(_script(a), [swapped], a) == _cache_key(_script(a), [two], a)
    assert _cache_key(_script(a), [_unit(a, "assign y = a | b;")], a) != key
    assert _cache_key(_script(a).replace("synth_ecp5", "synth_xilinx"), [_unit(a)], a) != key
    assert _cache_key(_script(a), [_unit(a), _unit(a)], a) != key
    # Same text, read as another module: not neutral, so not the same run.
    assert _cache_key(_script(a), [_unit(a)], "exion_dsc_core") != key


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EXION_BUILD", str(tmp_path / "build"))
    return tmp_path


def _run_and(out: Path, prefix: str, body: str = "assign y = a & b;"):
    out.mkdir(parents=True, exist_ok=True)
    (out / "unit-x.v").write_text(_unit(prefix, body))
    return _yosys_cells(out, "unit-x", _script(prefix), "yosys synthesis of the test unit",
                        cache=(prefix, [out / "unit-x.v"]))


def test_yosys_run_kept_and_reused_by_content(cache_root):
    """A real Yosys run is kept; the same unit in another place and folder comes from the
    cache (with the first run's seconds and a log naming the entry); a changed body runs
    Yosys again."""
    cells, secs, hit = _run_and(cache_root / "one", "exion_dsc_core.u")
    assert not hit and cells.get("LUT4", 0) >= 1
    assert len(list(yosys_cache_dir().glob("*.json"))) == 1
    again, secs2, hit = _run_and(cache_root / "two", "exion_dsc.core.u")
    assert hit and again == cells and secs2 == pytest.approx(secs, abs=0.01)
    assert "taken from the synthesis cache" in (cache_root / "two" / "unit-x.log").read_text()
    assert json.loads((cache_root / "two" / "unit-x-stat.json").read_text())
    _, _, hit = _run_and(cache_root / "three", "exion_dsc.core.u", "assign y = a ^ b;")
    assert not hit and len(list(yosys_cache_dir().glob("*.json"))) == 2


def test_cached_unit_names_its_black_boxes_in_the_new_place(cache_root):
    """A unit synthesized with a module below it boxed (``<unit>.inner``, as the engine's
    DPUs), then found again under another top: the box is counted under its new name."""
    from exion.gen.fpga.devices import FAMILIES
    from exion.gen.fpga.synth import _boxed
    got = []
    for top, d in (("exion_dsc_core.u", "one"), ("exion_dsc.core.u", "two")):
        out = cache_root / d
        out.mkdir()
        (out / "unit-x.v").write_text(_unit(top))
        cells, _, hit = _boxed(out, "unit-x", "read_verilog unit-x.v\n", top,
                               {f"{top}.inner": 1}, FAMILIES["ecp5"], "ecp5", None,
                               [out / "unit-x.v"])
        got.append((cells, hit))
    assert got[0] == (got[1][0], False) and got[1][1]
    stat = json.loads((cache_root / "two" / "unit-x-stat.json").read_text())
    assert "exion_dsc.core.u.inner" in json.dumps(stat)
    assert "exion_dsc_core" not in json.dumps(stat)


def test_damaged_cache_entry_is_a_miss(cache_root):
    """An entry that is not a kept run (cut short, edited) is run again and overwritten."""
    cells, _, _ = _run_and(cache_root / "one", "exion_dsc_core.u")
    (entry,) = yosys_cache_dir().glob("*.json")
    entry.write_text('{"stat": ')
    again, _, hit = _run_and(cache_root / "two", "exion_dsc_core.u")
    assert not hit and again == cells
    assert json.loads(entry.read_text())["stat"]


def test_hier_count_reuses_every_part_and_no_cache_runs_them(cache_root):
    """The tiny SDUE counted twice: the second count takes the shell and the DPU from the
    cache and gives the same report; ``cache=False`` runs both and keeps nothing new."""
    cfg = load_config(CONFIGS / "tiny.toml")
    first = fpga.synth(cfg, "sdue", "ecp5", out_dir=cache_root / "a", hier=True)
    assert first["parts"]["cached"] == []
    second = fpga.synth(cfg, "sdue", "ecp5", out_dir=cache_root / "b", hier=True)
    assert second["parts"]["cached"] == ["shell", "dpu"]
    assert second["resources"] == first["resources"]
    assert second["parts"]["seconds"] == first["parts"]["seconds"]
    md = Path(second["files"]["markdown"]).read_text()
    assert "Taken from the synthesis cache" in md and "shell, dpu." in md
    n = len(list(yosys_cache_dir().glob("*.json")))
    third = fpga.synth(cfg, "sdue", "ecp5", out_dir=cache_root / "c", hier=True, cache=False)
    assert third["parts"]["cached"] == [] and third["resources"] == first["resources"]
    assert len(list(yosys_cache_dir().glob("*.json"))) == n


def test_radix_selectors_are_an_array_of_two_variants(tmp_path):
    """The radix EPRE (toy_radix8: 3 units, 3 radix selectors) generated with its units boxed:
    its selectors are one array of two variants, selector 0 (whose read address and done
    flag serve all) and the others, identical apart from their names and auto-numbered
    helpers; a selector changed by one wire is a variant of its own."""
    cfg = load_config(CONFIGS / "toy_radix8.toml")
    text = generate(cfg, "epre", tmp_path, reuse=False, box_epre_units=True).verilog.read_text()
    pat = r"rselector\d+"
    assert _array_modules(text, "exion_epre", pat) == [
        ["exion_epre.rselector0"], ["exion_epre.rselector1", "exion_epre.rselector2"]]
    assert _array_modules(text, "exion_epre") == []          # no DPUs in an EPRE
    i = text.index("module \\exion_epre.rselector1 ")
    j = text.index("endmodule", i)
    bad = text[:j] + "  wire extra;\n" + text[j:]
    assert _array_modules(bad, "exion_epre", pat) == [
        ["exion_epre.rselector0"], ["exion_epre.rselector1"], ["exion_epre.rselector2"]]


@pytest.mark.long      # a boxed DSC core generation (about 25 s)
def test_dsc_keeps_its_insertion_selectors(tmp_path):
    """The DSC's EPRE uses insertion selectors: no radix-selector array in the toy core."""
    text = generate(PRESETS["toy"], "dsc_core", tmp_path, reuse=False,
                    box_epre_units=True).verilog.read_text()
    assert _array_modules(text, "exion_dsc_core", r"rselector\d+") == []
    (dpus,) = _array_modules(text, "exion_dsc_core")
    assert len(dpus) == PRESETS["toy"].rows * PRESETS["toy"].cols


def test_table_row_names_the_boxed_radix_selectors():
    """A hierarchical count with radix selectors is labelled so in the resource table."""
    from exion.gen.fpga.table import _row_of, table_markdown
    rep = {"method": "hierarchical", "gmem": None, "epre_units": "boxed", "seconds": 1.0,
           "resources": {"luts": 1, "ffs": 2, "dsp": 0, "bram": 3, "cells": 4}, "fits": {},
           "parts": {"rselector_instances": 32, "epre_unit_instances": 32}}
    row = _row_of(rep)
    assert row["rselectors"] == "boxed"
    row.update(config="exion16", top="epre", family="ecp5")
    assert ("| exion16 | epre | ecp5 | hierarchical, EPRE units, radix selectors | 1 | 2 | 0 "
            "| 3 |") in table_markdown({"rows": {"k": row}})
    rep["parts"] = {"rselector_instances": 0, "epre_unit_instances": 32}
    assert "rselectors" not in _row_of(rep)


@pytest.mark.long
def test_radix_epre_hier_matches_flat_ecp5(tmp_path):
    """toy_radix8's EPRE on ECP5, hierarchical (shell + 1 x selector 0 + 2 x selector 1 +
    3 x unit) against flat: the parts add up exactly, the same block RAMs and no
    multipliers, LUTs and FFs within 10 % (an upper bound: no optimization across the
    boxes)."""
    cfg = load_config(CONFIGS / "toy_radix8.toml")
    h = fpga.synth(cfg, "epre", "ecp5", out_dir=tmp_path, hier=True, cache=False)
    f = fpga.synth(cfg, "epre", "ecp5", out_dir=tmp_path)
    pt = h["parts"]
    U = cfg.epre_unit_count
    assert pt["rselector_instances"] == U and pt["epre_unit_instances"] == U
    assert [(v["module"], v["instances"]) for v in pt["rselector_variants"]] == [
        ("exion_epre.rselector1", U - 1), ("exion_epre.rselector0", 1)]
    for key in ("luts", "ffs", "bram", "cells"):
        assert h["resources"][key] == pt["shell"][key] + U * pt["epre_unit"][key] + sum(
            v["instances"] * v["resources"][key] for v in pt["rselector_variants"]), key
    assert h["resources"]["dsp"] == f["resources"]["dsp"] == 0
    assert h["resources"]["bram"] == f["resources"]["bram"]
    for key in ("luts", "ffs"):
        assert abs(h["resources"][key] - f["resources"][key]) <= 0.10 * f["resources"][key], \
            (key, h["resources"][key], f["resources"][key])


def test_no_cache_needs_hier(tmp_path, capsys):
    """``--no-cache`` on a flat synthesis: one error line, nothing written."""
    from exion.gen.cli import main
    assert main(["synth", "--config", "toy", "--top", "dpu", "--no-cache",
                 "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "exion: error: exion synth: --no-cache applies to --hier (flat runs are not cached); "
        "drop it or add --hier")
    assert not any(tmp_path.iterdir())

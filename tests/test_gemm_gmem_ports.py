"""GMEM as ports (``cfg.gmem_ports``, issue 22): the gemm engine's model of the global buffer
left out of the generated top, its write port and ``C * m`` read ports made top-level ports,
so the engine (and the DSC around it) synthesizes for configs whose GMEM no FPGA holds
(exion16: 64 read ports on 9.4 Mbit crashed Yosys's memory mapping).

Checks: the toy engine with GMEM as ports plus a GMEM model outside it
(``exion.sim.gemm_gmem``) runs the engine's cocotb bench bit-exact with golden and cycle-exact
with the engine model, on both dataflows (so the ports' contract, a synchronous read, is the
engine's); the generated ``gemm``, ``dsc_core`` and ``dsc`` tops carry the ports and no GMEM
and are lint-clean; hierarchical synthesis generates them that way."""

import dataclasses
import importlib
import json

import numpy as np
import pytest

from exion import PRESETS
from exion.gen import verilog
from exion.hw.gemm import gmem_kbits
from exion.sim.gemm_gmem import gemm_gmem_top
from exion.sim.gemm_rtl import GemmCase, rtl_sparse_gemm

from test_gemm_rtl import _operands, check, check_engine_model

TOY = PRESETS["toy"]
fsynth = importlib.import_module("exion.gen.fpga.synth")


def _cases(cfg, seed):
    rng = np.random.default_rng(seed)
    R, C, L = cfg.rows, cfg.cols, cfg.lanes
    cases = []
    for flow, s, gb in (("row-block", 0.5, 0), ("row-block", 0.0, 5), ("col-group", 0.7, 0),
                        ("col-group", 0.0, 7)):
        M, K, N = 2 * R + 3, 16 * L + 1, 3 * C + 2
        a, b, prev = _operands(cfg, rng, M, K, N)
        cases.append(GemmCase(a, b, rng.random((M, N)) >= s, prev, dataflow=flow, gb_bytes=gb,
                              accumulate=bool(rng.integers(2)), name=f"{flow}-s{s}-gb{gb}"))
    a, b, prev = _operands(cfg, rng, 2 * R, 16 * L, 2 * C + 1)
    cases.append(GemmCase(a, b, np.ones(prev.shape, bool), prev, dataflow="col-group",
                          striped=True, name="striped"))
    return cases


@pytest.mark.rtl
@pytest.mark.long      # a variant's build: the ports themselves are checked below (default)
def test_gemm_with_gmem_ports_matches_golden_and_model():
    cases = _cases(TOY, 22)
    with gemm_gmem_top() as top:
        outs, runs, _ = rtl_sparse_gemm(TOY, cases, seed=22, top=top, run_name="gemm_gmem")
    check(TOY, cases, outs, runs, 22)
    check_engine_model(TOY, cases, runs)


# the DSC tops pass the engine's ports through (a DSC generation is half a minute): long
@pytest.mark.parametrize("top", ["gemm", pytest.param("dsc_core", marks=pytest.mark.long),
                                 pytest.param("dsc", marks=pytest.mark.long)])
def test_gmem_ports_in_generated_tops(tmp_path, top):
    cfg = TOY.replace(name="toy_gp", gmem_ports=True)
    g = verilog.generate(cfg, top, tmp_path)
    ports = {p["name"]: p for p in json.loads(g.manifest.read_text())["ports"]}
    reads = [n for n in ports if n.startswith("gmem__r__") and n.endswith("__addr")]
    assert len(reads) == cfg.cols * cfg.merge_ways
    for n in reads:
        assert ports[n]["dir"] == "out"
        assert ports[n.replace("__addr", "__data")]["dir"] == "in"
    assert all(ports[f"gmem__w__{f}"]["dir"] == "out" for f in ("en", "addr", "data"))
    # no GMEM inside: the plain top declares the memory (checked on the engine alone: a
    # DSC generation is half a minute), the ports top does not
    depth = TOY.omem_depth << gmem_kbits(TOY)
    decl = f"gmem [{depth - 1}:0];"
    if top == "gemm":
        assert decl in verilog.generate(TOY, top, tmp_path / "plain").verilog.read_text()
    assert decl not in g.verilog.read_text()
    assert verilog.lint(g.verilog, f"exion_{top}") == []


def test_hier_synthesis_generates_gmem_ports(tmp_path, monkeypatch):
    """``synth(..., hier=True)`` of an engine top generates it with GMEM as ports and says
    so in its report, and boxes the EPRE's units only for the tops that hold an EPRE (Yosys
    replaced by a stub: the flow's choices are what is tested). The DPUs are always
    elaborated in place (the flows name their cells by hierarchy)."""
    seen = []

    def fake_generate(cfg, top, out, box_epre_units=False, box_dpus=True):
        assert box_dpus is False, top
        seen.append((cfg.gmem_ports, box_epre_units))
        raise RuntimeError("stop")
    monkeypatch.setattr(verilog, "generate", fake_generate)
    for top, hier, want in (("gemm", True, (True, False)), ("dsc", True, (True, True)),
                            ("gemm", False, (False, False)), ("sdue", True, (False, False)),
                            ("dsc", False, (False, False))):
        seen.clear()
        with pytest.raises(RuntimeError):
            fsynth.synth(TOY, top, "ecp5", out_dir=tmp_path, hier=hier)
        assert seen == [want], (top, hier)
    assert dataclasses.replace(TOY).gmem_ports is False

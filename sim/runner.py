"""The runner layer every bench uses: generate once, Verilate once, run cocotb, fail loudly.

* :func:`rtl_build` generates a top's Verilog (cached on config hash + source hash) and
  Verilates it into ``<root>/sim/<module>-<key>`` (cached on the Verilog text, the Verilator
  version and the trace flag); ``<root>`` is ``build/`` in the working directory or
  ``$EXION_BUILD`` (:func:`exion.paths.build_root`). A file lock makes concurrent pytest
  processes share one build.
* :func:`run_bench` runs a cocotb test module against a build with a seed, and turns a
  failed or crashed cocotb run into an :class:`AssertionError` whose message carries the seed
  and the command to re-run it.
* Waveforms: ``waves=True`` or ``EXION_WAVES=1`` builds with ``--trace-fst`` and writes
  ``dump.fst`` into the run's own folder (never into the working directory). Verilator's FST
  writer needs the lz4 headers; without them the build traces VCD (``dump.vcd``) and says
  how to get FST (``make fst-deps``).
* Simulators: Verilator (the default) or Icarus Verilog (``EXION_SIM=icarus``, or
  ``simulator="icarus"``; ``make xsim`` compares the two, :mod:`exion.sim.xsim`). Every
  ``rtl_<block>`` wrapper follows ``EXION_SIM``, so the same benches and seeds run on both.
* C++ optimisation of a Verilator build: ``rtl_build(..., opt=)`` or ``EXION_CXX_OPT`` (``-Os``, the
  Verilator default, or one of :data:`CXX_OPTS`). ``-O0`` compiles the exion16 gemm engine
  with about 3.4x less g++ CPU time (40 s against 135 s) and simulates more slowly: right for a
  one-shot build that runs a few thousand cycles (``exion demo`` uses it), wrong for long
  regressions. The level is part of the build's cache key.
* The Verilator runtime (``verilated*.o``, the same for every design) is compiled once per
  flag set and shared by later builds (:mod:`exion.sim.objcache`, verilated.mk's
  ``OBJCACHE`` hook; a user's own ``OBJCACHE``, e.g. ``ccache``, or an empty one wins).
* Lint: a Verilator build verilates with ``-Wall`` (warnings are not fatal) and keeps the
  warnings that concern the generated Verilog (``RtlBuild.lint()``, ``lint.json`` beside the
  build): the same checks as ``exion.gen.verilog.lint`` on a top the suite builds anyway,
  without parsing its Verilog a second time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from exion.config import Config
from exion.errors import ExionError
from exion.gen.toolchain import (fst_supported, icarus_version, require_icarus, verilator_env,
                                  verilator_version)
from exion.paths import build_root, locked, try_locked
from exion.sim import objcache

__all__ = ["RtlBuild", "Harness", "rtl_build", "run_bench", "run_slot", "BenchFailure",
           "build_root", "waves_requested", "simulator", "SIMULATORS"]

#: the simulators a bench runs on (``EXION_SIM``); the first is the default
SIMULATORS = ("verilator", "icarus")


def _setting(value: str | None, env: str, allowed: tuple[str, ...], what: str) -> str:
    """``value``, else ``$env``, else ``allowed[0]``; one-line error if not in ``allowed``."""
    value = value or os.environ.get(env) or allowed[0]
    if value not in allowed:
        raise ExionError(f"{env} / {what}: unknown value {value!r}; "
                         f"available: {', '.join(allowed)}")
    return value


def simulator(name: str | None = None) -> str:
    """``name``, else ``$EXION_SIM``, else ``"verilator"``; checked against SIMULATORS."""
    return _setting(name, "EXION_SIM", SIMULATORS, "simulator")


def waves_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("EXION_WAVES", "") not in ("", "0")


class BenchFailure(AssertionError):
    """A cocotb bench failed; the message carries the seed and how to re-run it."""


@dataclass(frozen=True)
class RtlBuild:
    cfg: Config
    top: str
    module: str
    verilog: Path
    manifest: Path
    sim_dir: Path
    waves: bool
    gen_seconds: float      # 0.0 when reused from the cache
    build_seconds: float    # 0.0 when reused from the cache
    simulator: str = "verilator"

    def manifest_data(self) -> dict:
        return json.loads(self.manifest.read_text())

    def lint(self) -> list[str]:
        """The ``-Wall`` warning and error lines the Verilator build printed about the
        generated Verilog and its simulation models (empty = lint-clean); a harness's own
        lines are not among them (:func:`exion.gen.verilog.verilator_messages`)."""
        if self.simulator != "verilator":
            raise ExionError(f"{self.module}: lint comes from a Verilator build, "
                             f"not {self.simulator}")
        return json.loads((self.sim_dir / "lint.json").read_text())


#: C++ optimisation levels a Verilator build accepts (``EXION_CXX_OPT``); the first is the
#: default (Verilator's own).
CXX_OPTS = ("-Os", "-O0", "-O1", "-O2", "-O3")


def cxx_opt(level: str | None = None) -> str:
    """``level``, else ``$EXION_CXX_OPT``, else ``-Os``; checked against :data:`CXX_OPTS`."""
    return _setting(level, "EXION_CXX_OPT", CXX_OPTS, "C++ optimisation")


@dataclass(frozen=True)
class Harness:
    """A simulation-only Verilog wrapper around a generated top (e.g. a memory model,
    :mod:`exion.sim.dsc_harness`): it becomes the toplevel; ``ports`` are the ones cocotb
    touches (made public to VPI)."""

    module: str
    text: str
    ports: tuple[str, ...]


def rtl_build(cfg: Config, top: str, *, waves: bool = False, progress=None,
              sim: str | None = None, opt: str | None = None,
              harness: Harness | None = None, box_epre_units: bool = False,
              box_dpus: bool = True) -> RtlBuild:
    """Generate and build ``top`` for ``cfg`` on simulator ``sim`` (default
    :func:`simulator`) once; later calls reuse the build. ``opt``: the C++ optimisation of
    a Verilator build (:func:`cxx_opt`). ``harness``: build the wrapper around ``top``
    instead (Verilator only). ``box_epre_units``: the Verilog hierarchical synthesis reads
    (the EPRE's units as instances of one module, ``exion.gen.verilog.generate``), in a
    folder of its own. ``box_dpus``: the SDUE's DPUs as instances of one module (the
    generator's default); ``False`` builds the Verilog with every DPU elaborated (as the FPGA
    flows read it), in a folder of its own."""
    from exion.gen.verilog import generate_shared, shared_lock, sim_sources

    sim = simulator(sim)
    waves = waves_requested(waves)
    if sim == "icarus":
        require_icarus()
        waves = False   # Icarus runs here without waveforms (use Verilator's --waves)
    if waves and not fst_supported() and progress is None:
        progress = _warn
    if waves and not fst_supported():
        progress("FST waveforms need the lz4 headers (apt-get install liblz4-dev, or "
                 "make fst-deps); writing VCD (dump.vcd) instead")
    root = build_root()
    gen = generate_shared(cfg, top, box_epre_units=box_epre_units, box_dpus=box_dpus)
    rtl_dir = gen.verilog.parent
    with locked(shared_lock(cfg, top, box_epre_units, box_dpus)):
        srcs = sim_sources(gen.verilog, sim)  # + vendor-cell models; Icarus: SV-safe copy
        if harness is not None:
            if sim != "verilator":
                raise ExionError(f"the {harness.module} harness runs on Verilator only")
            hpath = rtl_dir / f"{harness.module}.v"
            if not hpath.exists() or hpath.read_text() != harness.text:
                hpath.write_text(harness.text)
            srcs = [*srcs, hpath]
    text = b"".join(p.read_bytes() for p in srcs)
    args = verilator_args(waves) if sim == "verilator" else icarus_args()
    version = verilator_version() if sim == "verilator" else icarus_version()
    opt = cxx_opt(opt) if sim == "verilator" else CXX_OPTS[0]
    key_text = " ".join(args) + ("" if opt == CXX_OPTS[0] else f" cxx{opt}") + _cocotb_key()
    key = hashlib.sha256(text + version.encode() + key_text.encode()).hexdigest()[:12]
    module = f"exion_{top}" if harness is None else harness.module
    tag = "" if sim == "verilator" else f"-{sim}"
    sim_dir = root / "sim" / f"{module}-{cfg.name}{tag}-{key}"
    stamp = sim_dir / ".built"
    build_seconds = 0.0
    with locked(root / "locks" / f"sim-{module}{tag}-{key}.lock"):
        if not stamp.exists():
            if progress:
                progress(f"{'Verilating' if sim == 'verilator' else 'Compiling (Icarus)'} "
                         f"{module} ({cfg.name}){' with FST tracing' if waves else ''}"
                         f" into {sim_dir} ...")
            t0 = time.perf_counter()
            ports = None if harness is None else ["clk", "rst", *harness.ports]
            _build(sim, gen.manifest, module, srcs, sim_dir, args, waves, opt, ports)
            build_seconds = time.perf_counter() - t0
            stamp.write_text(json.dumps({"seconds": build_seconds}))
    return RtlBuild(cfg, top, module, gen.verilog, gen.manifest, sim_dir, waves,
                    gen.seconds, build_seconds, sim)


def _cocotb_key() -> str:
    """The cocotb the build links against (version and install folder): a simulator built
    from another virtual environment loads that one's cocotb libraries, so a build cache
    shared between checkouts (``$EXION_BUILD``) must not hand it to this one."""
    import cocotb
    return f" cocotb{cocotb.__version__}@{Path(cocotb.__file__).resolve().parent}"


def _build(sim: str, manifest: Path, module: str, srcs: list[Path], sim_dir: Path,
           args: list[str], waves: bool, opt: str = CXX_OPTS[0],
           ports: list[str] | None = None) -> None:
    """One simulator build through cocotb's runner (under the caller's lock)."""
    from cocotb_tools.runner import get_runner

    runner = get_runner(sim)
    env_backup = dict(os.environ)
    if sim == "verilator":
        os.environ.update(verilator_env())
        if opt != CXX_OPTS[0]:      # make variables through MAKEFLAGS reach Vtop.mk's g++
            os.environ["MAKEFLAGS"] += f" OPT_FAST={opt} OPT_SLOW={opt} OPT_GLOBAL={opt}"
        if "OBJCACHE" not in os.environ:    # the runtime's objects, compiled once (objcache)
            os.environ["OBJCACHE"] = objcache.command()
            os.environ[objcache.CACHE_ENV] = str(sim_dir.parent / "_objcache")
    try:
        files = list(srcs)
        if "--no-public-flat-rw" in args:
            files.append(_ports_control_file(manifest, module, sim_dir, ports))
        extra = {"timescale": ("1ns", "1ps")} if sim == "icarus" else {}
        runner.build(
            sources=files, hdl_toplevel=module, build_dir=sim_dir,
            build_args=args, waves=waves, always=True, log_file=sim_dir / "build.log",
            **extra)
        if sim == "verilator":      # the generated Verilog's -Wall lines, not a harness's
            from exion.gen.verilog import sources, verilator_messages
            log = (sim_dir / "build.log").read_text(errors="replace")
            lint = verilator_messages(log, sources(manifest.with_suffix(".v")))
            (sim_dir / "lint.json").write_text(json.dumps(lint))
    finally:
        os.environ.clear()
        os.environ.update(env_backup)


def icarus_args() -> list[str]:
    """Extra ``iverilog`` flags (cocotb's runner adds ``-g2012``; the copy Icarus compiles is
    made correct under its SystemVerilog event rules by :func:`exion.gen.verilog.sim_sources`)."""
    return []


def _failure_excerpt(log: Path, max_lines: int = 25) -> str:
    """The failing test's traceback tail from a cocotb log, without the log-column prefix."""
    if not log.exists():
        return ""
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if " failed" in line and "cocotb.regression" in line:
            body = [ln.strip() for ln in lines[i:i + 200]]
            for j, ln in enumerate(body):
                if ln.startswith(("AssertionError", "Error", "ValueError", "TypeError")):
                    return "\n".join(body[j:j + max_lines])
            return "\n".join(body[-max_lines:])
    return "\n".join(ln.strip() for ln in lines[-max_lines:])


def _ports_control_file(manifest: Path, module: str, sim_dir: Path,
                        ports: list[str] | None = None) -> Path:
    """A Verilator control file making exactly the top-level ports public (VPI-visible):
    ``ports``, else the manifest's."""
    if ports is None:
        ports = [p["name"] for p in json.loads(manifest.read_text())["ports"]]
    sim_dir.mkdir(parents=True, exist_ok=True)
    vlt = sim_dir / f"{module}_ports.vlt"
    vlt.write_text("`verilator_config\n" + "".join(
        f'public_flat_rw -module "{module}" -var "{p}"\n' for p in ports))
    return vlt


def verilator_args(waves: bool) -> list[str]:
    """Extra Verilator flags of every build.

    cocotb's runner passes ``--public-flat-rw``, which keeps every internal signal of
    Amaranth's output and makes the C++ about 4x larger (the exion16 SDUE: minutes of g++).
    Benches only touch top-level ports, so ``--no-public-flat-rw`` follows it and a control
    file makes just the ports public; set ``EXION_PUBLIC=1`` to reach internal signals from
    cocotb. FST traces record internal
    signals either way.
    """
    args = ["-Wall", "-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
    if os.environ.get("EXION_PUBLIC", "") in ("", "0"):
        args.append("--no-public-flat-rw")
    if waves:
        args += (["--trace-fst"] if fst_supported() else ["--trace"]) + ["--trace-structs"]
    return args


def waves_file(build) -> str:
    """Name of the waveform file a traced build writes."""
    return "dump.fst" if "--trace-fst" in verilator_args(True) else "dump.vcd"


def _warn(msg: str) -> None:
    import sys
    print(f"[exion] {msg}", file=sys.stderr, flush=True)


def new_seed() -> int:
    env = os.environ.get("EXION_SEED")
    return int(env) if env else random.SystemRandom().randrange(1, 2**31)


def run_bench(build: RtlBuild, test_module: str, *, seed: int | None = None,
              testcase: str | None = None, params: dict | None = None,
              run_name: str | None = None) -> dict:
    """Run cocotb ``test_module`` on ``build``; return the JSON report the bench wrote.

    ``params`` reach the bench as JSON in ``EXION_PARAMS``; the bench writes its report to
    ``EXION_REPORT``. Raises :class:`BenchFailure` (with the seed) if any cocotb test fails.
    """
    seed = new_seed() if seed is None else int(seed)
    run_name = run_name or (testcase or test_module.rsplit(".", 1)[-1])
    with run_slot(build, f"{run_name}-{seed}") as stem:
        return _run_bench(build, test_module, seed, testcase, params, stem)


@contextlib.contextmanager
def run_slot(build: RtlBuild, stem: str):
    """The run folder name ``stem`` under the build, held for the block: if another process
    (a second pytest worker, a CLI beside it) runs the same name and seed on the same build
    now, this one gets ``<stem>-p<pid>`` instead of sharing its folder and files."""
    for name in (stem, f"{stem}-p{os.getpid()}"):
        with try_locked(build.sim_dir / "runs" / f".{name}.lock") as held:
            if held:
                yield name
                return
    raise ExionError(f"run folder {stem} of {build.sim_dir} is held by another process")


def _run_bench(build: RtlBuild, test_module: str, seed: int, testcase, params,
               stem: str) -> dict:
    """:func:`run_bench` in the run folder ``runs/<stem>`` (:func:`run_slot` holds it)."""
    from cocotb_tools.runner import get_results, get_runner

    test_dir = build.sim_dir / "runs" / stem
    test_dir.mkdir(parents=True, exist_ok=True)
    report = test_dir / "report.json"
    report.unlink(missing_ok=True)
    extra_env = {
        "EXION_MANIFEST": str(build.manifest),
        "EXION_REPORT": str(report),
        "EXION_PARAMS": json.dumps(params or {}),
        "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
    }
    env_backup = dict(os.environ)
    if build.simulator == "verilator":
        os.environ.update(verilator_env())
    sim_env = "" if build.simulator == "verilator" else f"EXION_SIM={build.simulator} "
    rerun = (f"{sim_env}EXION_SEED={seed} (re-run with: {sim_env}EXION_SEED={seed} pytest ... ;"
             f" waves: EXION_WAVES=1)")
    try:
        runner = get_runner(build.simulator)
        results = runner.test(
            hdl_toplevel=build.module, hdl_toplevel_lang="verilog", test_module=test_module,
            build_dir=build.sim_dir,
            test_dir=test_dir, seed=seed, testcase=testcase, extra_env=extra_env,
            waves=build.waves, results_xml=str(test_dir / "results.xml"),
            log_file=test_dir / "sim.log",
            test_args=(["--trace-file", str(test_dir / waves_file(build))]
                       if build.waves else []))
    except SystemExit:  # cocotb's runner exits when tests fail or the simulator dies
        results = test_dir / "results.xml"
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    log = test_dir / "sim.log"
    try:
        n_tests, n_failed = get_results(Path(results))
    except (RuntimeError, OSError, ValueError):
        n_tests, n_failed = 0, 0
    if n_tests == 0 or n_failed:
        what = (f"{n_failed} of {n_tests} cocotb test(s) failed" if n_tests
                else "the simulation crashed before reporting")
        raise BenchFailure(f"{what} in {test_module} on {build.module} ({build.cfg.name}), "
                           f"seed {seed}; {rerun}; log: {log}\n{_failure_excerpt(log)}")
    data = json.loads(report.read_text()) if report.exists() else {}
    data.setdefault("seed", seed)
    data["run_dir"] = str(test_dir)
    if build.waves:
        data["waves"] = str(test_dir / waves_file(build))
    return data


def run_bench_pickled(build: RtlBuild, test_module: str, inputs, *, key: str,
                      seed: int | None = None, run_name: str | None = None,
                      params: dict | None = None):
    """Run a bench that takes pickled ``inputs`` and pickles its outputs back.

    ``inputs`` is pickled to a file whose path reaches the bench as ``EXION_PARAMS[key]``;
    the bench writes its outputs to ``EXION_PARAMS["results"]``. Returns ``(outputs,
    report)``; the report also carries the build's ``gen_seconds`` and ``build_seconds``.
    """
    import pickle
    seed = new_seed() if seed is None else int(seed)
    run_name = run_name or test_module.rsplit(".", 1)[-1]
    run_dir = build.sim_dir / "inputs"
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_slot(build, f"{run_name}-{seed}") as stem:
        in_file = run_dir / f"{stem}.pkl"
        res_file = run_dir / f"{stem}.out.pkl"
        with open(in_file, "wb") as fh:
            pickle.dump(inputs, fh)
        res_file.unlink(missing_ok=True)
        report = _run_bench(build, test_module, seed, None,
                            {key: str(in_file), "results": str(res_file), **(params or {})},
                            stem)
        with open(res_file, "rb") as fh:
            outputs = pickle.load(fh)
    report["build_seconds"] = build.build_seconds
    report["gen_seconds"] = build.gen_seconds
    return outputs, report

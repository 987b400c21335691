"""``rtl_dsc``: descriptor programs through the Verilated DSC core (``hw/dsc.py``).

    prog = build_program(cfg, jobs_from_record(cfg, rec))       # sim/dsc_program.py
    runs, report = rtl_dsc(cfg, [prog])
    outs = read_results(cfg, prog, runs[0]["image"])           # == golden.dsc's products

The host memory image goes to the bench in one piece (bulk NumPy; the memory model is a
byte array), and comes back the same way after the run.
"""

from __future__ import annotations

from exion.config import Config
from exion.errors import ExionError

from .dsc_program import DscProgram
from .runner import rtl_build, run_bench_pickled

__all__ = ["rtl_dsc", "dsc_build", "DscSession"]


def dsc_build(cfg: Config, *, verilog_memory: bool, bus_bits: int = DscProgram.bus_bits,
              waves: bool = False, progress=None):
    """The ``dsc_core`` build the runs need: inside the Verilog memory model of
    :mod:`exion.sim.dsc_harness` for a ``bus_bits`` port (on Verilator; the bench's Python
    memory serves its ``ext`` ports when ``verilog_memory`` is false, so both memories share
    one build), else the core alone (the Python memory on another simulator).
    Its C++ level is ``$EXION_DSC_CXX_OPT`` if set, else the runner's (``EXION_CXX_OPT``,
    :func:`~exion.sim.runner.cxx_opt`): a DSC program runs tens of thousands of cycles, which
    the toy core simulates about 10x faster at ``-Os`` than at ``-O0`` (the default suite
    compiles everything else at ``-O0`` and sets this to ``-Os``, ``tests/conftest.py``)."""
    import os

    from .dsc_harness import harness
    return rtl_build(cfg, "dsc_core", waves=waves, progress=progress,
                     opt=os.environ.get("EXION_DSC_CXX_OPT") or None,
                     harness=harness(bus_bits) if _wraps(verilog_memory) else None)


def _wraps(verilog_memory: bool) -> bool:
    """Whether :func:`dsc_build` builds the core inside the Verilog memory model (whose
    ``ext`` ports the Python memory then serves): always on Verilator."""
    from .runner import simulator
    return verilog_memory or simulator() == "verilator"


def rtl_dsc(cfg: Config, programs: list[DscProgram], *, stall: float | list = 0.0,
            seed: int | None = None, waves: bool = False, run_name: str = "dsc",
            progress=None, memory: str = "auto") -> tuple[list[dict], dict]:
    """Run each program (one ``start`` each) on the ``dsc_core`` top; ``stall``: the
    probability of a memory-side stall per handshake signal and cycle (one value, or one per
    program). Returns per run
    ``{"image", "cycles", "passes", "error", "stages"}`` and the bench report.

    ``memory``: ``"python"`` serves the memory port from the bench every cycle;
    ``"verilog"`` uses the simulation-only memory model of :mod:`exion.sim.dsc_harness`
    (same timing, no per-cycle Python; Verilator; its own random stalls, the same
    probabilities but other draws than the Python memory's); ``"auto"`` (default) picks
    ``"verilog"`` when it can; a list where some images do not fit the Verilog memory runs
    as two simulations (those on the Python memory, the rest on the Verilog one, the
    results in the given order), because the Python memory serves every cycle of every
    program it runs."""
    from .dsc_harness import fits
    from .runner import simulator
    stalls = list(stall) if isinstance(stall, (list, tuple)) else [stall] * len(programs)
    if memory not in ("auto", "python", "verilog"):
        raise ExionError(f"memory={memory!r}: expected auto, python or verilog")
    kw = dict(seed=seed, waves=waves, progress=progress)
    quick = [i for i, p in enumerate(programs) if fits(p.image.size, p.bus_bits)]
    if (memory == "auto" and simulator() == "verilator" and 0 < len(quick) < len(programs)
            and len({p.bus_bits for p in programs}) == 1):
        slow = [i for i in range(len(programs)) if i not in quick]
        fast_runs, fast_rep = rtl_dsc(cfg, [programs[i] for i in quick], memory="verilog",
                                      stall=[stalls[i] for i in quick],
                                      run_name=f"{run_name}-vmem", **kw)
        slow_runs, rep = rtl_dsc(cfg, [programs[i] for i in slow], memory="python",
                                 stall=[stalls[i] for i in slow], run_name=run_name, **kw)
        runs = [None] * len(programs)
        for i, r in [*zip(quick, fast_runs), *zip(slow, slow_runs)]:
            runs[i] = r
        rep = dict(rep, passed=rep.get("passed") and fast_rep.get("passed"),
                   **{k: rep[k] + fast_rep[k] for k in ("runs", "busy_cycles", "seconds")
                      if k in rep and k in fast_rep})
        return runs, rep
    can = simulator() == "verilator" and len(quick) == len(programs)   # all fit
    if memory == "verilog" and not can:
        raise ExionError("the Verilog memory model needs Verilator and images that fit "
                         "exion.sim.dsc_harness.WORDS")
    fast = can and memory != "python"
    build = dsc_build(cfg, verilog_memory=fast, bus_bits=programs[0].bus_bits, waves=waves,
                      progress=progress)
    runs = [{"image": p.image, "prog_base": p.prog_base, "stall": float(s)}
            for p, s in zip(programs, stalls)]
    return run_bench_pickled(build, "exion.sim.tb_dsc", runs, key="cases", seed=seed,
                             run_name=run_name,
                             params={"harness": fast,
                                     "ext": not fast and _wraps(False)})


class DscSession:
    """One simulator for many programs (``exion generate --rtl``: hundreds of block
    iterations, each a program that depends on the host's work on the previous one).

    The cocotb bench connects back to this process over a local socket
    (:mod:`multiprocessing.connection`) and runs each list of programs it receives on the
    Verilog memory model (:mod:`exion.sim.dsc_harness`), so the simulator starts once
    instead of once per program::

        with DscSession(cfg, bus_bits=64, seed=1) as sess:
            runs = sess.run([prog])            # as rtl_dsc(cfg, [prog])[0]
    """

    def __init__(self, cfg: Config, *, bus_bits: int = 64, seed: int | None = None,
                 waves: bool = False, progress=None):
        self.cfg, self.bus_bits, self.seed = cfg, bus_bits, seed
        self.waves, self.progress = waves, progress
        self.conn = None
        self.error: BaseException | None = None
        self.report: dict | None = None
        self.finished = False

    def __enter__(self) -> DscSession:
        import secrets
        import tempfile
        import threading
        from multiprocessing.connection import Listener
        from pathlib import Path

        from .runner import run_bench
        build = dsc_build(self.cfg, verilog_memory=True, bus_bits=self.bus_bits,
                          waves=self.waves, progress=self.progress)
        self._dir = tempfile.TemporaryDirectory(prefix="exion-dsc-")
        self.address = str(Path(self._dir.name) / "sock")
        self.key = secrets.token_hex(16)
        self.listener = Listener(self.address, "AF_UNIX", authkey=self.key.encode())
        params = {"harness": True, "serve": self.address, "authkey": self.key}

        def serve():
            try:
                self.report = run_bench(build, "exion.sim.tb_dsc", seed=self.seed,
                                        run_name="dsc-session", params=params)
            except BaseException as e:      # re-raised in the caller's thread
                self.error = e
            finally:
                self.finished = True
                if self.conn is None:        # wake an accept() the bench never answered
                    from multiprocessing.connection import Client
                    try:
                        Client(self.address, "AF_UNIX", authkey=self.key.encode()).close()
                    except OSError:
                        pass

        self.thread = threading.Thread(target=serve, name="dsc-session", daemon=True)
        self.thread.start()
        conn = self.listener.accept()
        if self.finished:
            conn.close()
            self.thread.join()
            self._close()
            self._raise()
        self.conn = conn
        return self

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        self._dir.cleanup()

    def _raise(self):
        raise self.error if self.error else ExionError("the DSC simulator exited early")

    def run(self, programs: list[DscProgram]) -> list[dict]:
        """Each program once (as :func:`rtl_dsc` with no stalls); returns its runs."""
        from .dsc_harness import fits
        for p in programs:
            if p.bus_bits != self.bus_bits or not fits(p.image.size, p.bus_bits):
                raise ExionError(f"program does not fit the session (bus {p.bus_bits} bits, "
                                 f"{p.image.size} bytes)")
        self.conn.send([{"image": p.image, "prog_base": p.prog_base, "stall": 0.0}
                        for p in programs])
        while not self.conn.poll(0.5):
            if self.finished:
                self._raise()
        return self.conn.recv()

    def __exit__(self, *exc) -> None:
        try:
            if self.conn is not None and not self.finished:
                self.conn.send(None)
            self.thread.join()
        finally:
            self._close()
        if self.error is not None and exc[0] is None:
            raise self.error

"""System model: N DSC cores, a shared on-chip global memory, off-chip memory, energy, GPUs.

Built on the per-core model (:mod:`exion.golden.block` over :mod:`exion.golden.dataflow`),
whose figures are not changed here (docs/evaluate.md has the whole model):

* **Per core.** One transformer block instance in one mode is priced GEMM by GEMM with
  :func:`exion.golden.dataflow.gemm_flow` exactly as :func:`exion.golden.block.block_flow`
  does (same GEMMs, masks, CFSE exposure, EPRE cycles; :func:`block_gemms` equals
  ``block_flow`` for a plain block, a test checks it), plus what the seven workloads need:
  cross-attention GEMMs (dense in every mode [choice]), the GEGLU gate half of FC1 (masked
  like FC1), a second self-attention, and ``batch`` sequences (frames, positions) per
  instance (linear GEMMs over all ``batch * T`` tokens; attention per sequence, priced once
  and counted ``batch`` times). Long sequences (T > ``HEAD_SAMPLE_T``) price the attention of
  one head and count it ``heads`` times [choice, run time].
* **Split over cores** [choice]: a linear GEMM is split by output-column tiles (``C``
  columns each, the col-group dataflow's unit), so ``min(N, ceil(cols / C))`` cores share it
  and each fetches only its columns' weights; attention GEMMs are split by (sequence, head):
  ``ceil(batch * heads / N)`` rounds. Cores meet at every GEMM. Each core has its own
  global-memory port (``gm_bytes_per_cycle`` per core, the per-core model's ``bw``), so a
  core's share of a GEMM takes its 1-core cycles divided by the cores sharing it. Each core
  runs ``ceil(units / N)`` EPRE runs beside its own share of the K / V and Q projections
  (:func:`epre_exposed_on` [choice]: a run does not shrink with N, that share does).
* **Query split and static schedule** [choice, issue 19 follow-up]: a block with fewer
  (sequence, head) pairs than cores splits each head's queries into g chunks (one core
  each, all keys; :func:`attn_split_candidates`); per block and mode the system runs the
  cheapest candidate g and, in EP / All, EP only on the blocks where it is faster than
  without (:func:`best_block`; cost ``max(on-chip, off-chip cycles)``).
* **EPRE sub-runs** [choice, :data:`SCHEDULES` ``epre_sub_runs``, issue 19]: with the
  Q-dense exact keys, a unit's EPRE run may be split by query rows (the DSC's ``q_split``:
  run fields ``q_base`` and ``k_hold``); after each sub-run the SDUE scores the row blocks
  of kept query rows it completes (dominant rows dropped across sub-runs, as in one run)
  while the next one runs, and computes the unit's P.V once after the last
  (:func:`sub_run_bounds`: the first of 1 or 2 x U queries, each next as long as the
  previous one's scores hide it; :func:`~exion.golden.projections.epre_schedule_sub`).
  ``best_block`` keeps the fastest of one run and the plans; the iteration tries its
  policies with and without sub-runs (each sub-run's scores read the head's K_h again,
  which can make an iteration off-chip-bound).
* **EP masks** [choice]: ``bl.synth_ep`` with a per-key logit term shared by a head's
  queries, weight ``ep_key_corr`` = ``bl.EP_KEY_CORR`` = 0.65, fitted to the digits64 DiT's
  real masks (``bench/perf_ep_masks.py``); 0 gives the i.i.d. masks of ``block_flow``.
* **EPRE levers**: the system fields ``epre_fetch``, ``epre_keys``, ``epre_stage2``
  (:data:`EPRE_LEVERS`); their defaults are the built design's (the EPRE's weights cross
  the port once, issue 19's double-buffered W memory and GMEM_EFILL), the other values
  price other designs: issue 18's separate Wq fetch, that fetch in idle port cycles, exact
  keys from the SDUE (on-core, or through the port) with the SDUE one head ahead, packed
  stage 2.
* **FFN-Reuse masks**: ``column`` by default (issue 20's column rule: whole hidden units,
  which the col-group dataflow turns into skipped W1 columns / W2 rows); its fidelity cost
  on digits16 is 0.5-1.4 dB PSNR against the element rule at equal count
  (docs/fidelity.md §3). ``random`` (element masks) stays selectable.
* **Off-chip** [choice]: the global memory (``gm_mb``) holds, in this priority, the
  activations of the running block, the FFN-Reuse caches (H_d, Y_d of every block), what
  the step conditioning computed before the first step (the contexts' K / V, the steps'
  conditioning outputs), then as much of the weights a step reads as fits (resident for
  the whole run), then the weights only that pass reads (2026-12-07, last: until then
  they counted among the step's and took its room).
  What does not fit is read from off-chip memory every iteration it is used (weights: the
  fraction not resident, of the weight bytes each GEMM fetches; caches: their preload reads
  (``GemmFlow.preload_bytes``) and dense writes; activations: the non-resident fraction of
  all GEMM operand traffic, with the partial sums a GEMM spills and reads back). Off-chip
  transfers overlap the cores: an iteration takes ``max(on-chip time, off-chip bytes /
  off-chip bandwidth)``.
* **Step conditioning** [choice, :data:`SCHEDULES`]: layers whose input is only the
  timestep and the condition run before the first step (``cond_layers = "batched"``, the
  default), their weights crossing the port once: the step conditioning
  (``Model.cond_macs``: DiT's adaLN modulation, the UNets' time embedding and its
  ResBlock projections, EDGE's FiLM layers) for every step at once, each step reading its
  own outputs; the condition encoder (``Model.enc_macs``: EDGE's music encoder, the text
  projections) and the cross-attention contexts' K / V projections once (the condition
  does not change over the steps). Their outputs are kept in the global memory after the
  activations and the FFN-Reuse caches, the rest off chip. ``per-step`` prices them in
  every step.
* **Bound** of an iteration: ``off-chip`` if the off-chip time is the larger, else
  ``global memory`` if the GEMM cycles of memory-bound GEMMs outweigh those of compute-bound
  ones, else ``compute``.
* **Energy**: :data:`ENERGY` (pJ; sources in docs/evaluate.md) times the activity: useful
  MACs, EPRE shift-adds, local SRAM bytes (IMEM/WMEM reads per beat, fills, OMEM), global
  memory bytes, off-chip bytes, CFSE elements, plus leakage power times latency.
* **GPU** (:func:`gpu_estimate`): a roofline *estimate* from the seed's specs, per GEMM
  ``max(2 MACs / peak, bytes / bandwidth)``, energy = power x time.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from exion.config import EPRE_PIPE, EPRE_RUN_FIXED, PRESETS, Config, ConfigError, load_config
from exion.errors import ExionError

from . import block as bl
from .cycles import epre_phase_cycles
from .dsc_cycles import kh_words, kload_packed_body, komem_body, krow_beats
from .dsc_cycles import overhead as dsc_overhead
from .projections import (epre_schedule, epre_schedule_db, epre_schedule_k, epre_schedule_komem,
                          epre_schedule_q, epre_schedule_sub)
from .dataflow import BYTE_KEYS, gemm_flow
from .workloads_sys import Block, Model

__all__ = ["System", "SYSTEMS", "get_system", "load_system", "ENERGY", "GPUS", "MODE_NAMES",
           "attn_split_for", "attn_split_candidates", "ordering_holds", "best_block", "block_gemms",
           "evaluate_model", "gpu_estimate", "SCHEDULES", "COND_OUT_BYTES", "HEAD_SAMPLE_T",
           "epre_exposed_on", "context_kv_work", "per_core_caches"]

#: Modes of the seed's figures -> the per-core model's mode names.
MODE_NAMES = {"Base": "base", "EP": "ep", "FFNR": "ffnr", "All": "all"}


def ordering_holds(latency: dict) -> bool:
    """Base < EP < FFNR < All in speed: latency (``{mode name: seconds}``) strictly falls in
    :data:`MODE_NAMES` order (issue 19's goal)."""
    lat = [latency[m] for m in MODE_NAMES]
    return all(a > b for a, b in zip(lat, lat[1:]))
#: Above this sequence length one head's attention is priced and counted ``heads`` times.
HEAD_SAMPLE_T = 1024
#: Linear GEMMs over more tokens than this are priced on one chunk of this many tokens and
#: counted ``M / M_CHUNK`` times (weights fetched again per chunk) [choice, run time].
M_CHUNK = 4096

# ---- energy table (pJ, 14 nm class; sources and scaling in docs/evaluate.md) ---------------
#: Horowitz, ISSCC 2014, 45 nm, 0.9 V -> 14 nm: x 0.25 [choice, docs/evaluate.md].
SCALE_45_TO_14 = 0.25
ENERGY = {
    # INT12 multiply (8-bit 0.2 pJ x (12/8)^2 = 0.45) + 32-bit accumulate add (0.1): 0.55 pJ
    "mac_int12": 0.55 * SCALE_45_TO_14,
    # one shift-add of the EPRE: a ~32-bit add (0.1 pJ) with its barrel shift (~same) [choice]
    "shift_add": 0.2 * SCALE_45_TO_14,
    # SRAM read per byte: 8 KB 64-bit read 10 pJ -> 1.25 pJ/B, scaling with sqrt(size)
    # (32 KB: 2.5, 1 MB: 12.5 pJ/B at 45 nm, Horowitz's table fits sqrt within 20 %)
    "sram_8kb_byte": 1.25 * SCALE_45_TO_14,
    # the global memory: banks of 1 MB (12.5 pJ/B at 45 nm) plus the same again for wires
    # to the cores [choice]
    "gm_byte": 2 * 12.5 * SCALE_45_TO_14,
    # CFSE element (softmax / GELU in 16/32-bit fixed point): ~ one 32-bit multiply (3.1)
    # + add (0.1) [choice]
    "cfse_element": 3.2 * SCALE_45_TO_14,
}


def sram_pj_per_byte(size_bytes: float) -> float:
    """Energy per byte read/written of an SRAM of ``size_bytes`` (sqrt rule from 8 KB)."""
    return ENERGY["sram_8kb_byte"] * math.sqrt(max(size_bytes, 1.0) / 8192.0)


# ---- GPUs (seed's table) ---------------------------------------------------------------------
GPUS = {
    "orin-nano": {"name": "NVIDIA Jetson Orin Nano", "ops_per_s": 40.0e12, "bytes_per_s": 68e9,
                  "watts": 15.0, "bytes_per_el": 1},     # 40 TOPS: INT8 [choice]
    "rtx6000ada": {"name": "NVIDIA RTX 6000 Ada", "ops_per_s": 91.1e12, "bytes_per_s": 960e9,
                   "watts": 300.0, "bytes_per_el": 2},   # FP16 weights/activations [choice]
}


# ---- the system -------------------------------------------------------------------------------
#: EPRE design levers of the system model (docs/evaluate.md, "EPRE levers"): the first value
#: of each is the default, the built design; each other value says whether it is built:
#:
#: * ``epre_fetch``: the EPRE's Wq_h / Wk_h (``H d d_head`` W-bit words each per block
#:   instance) cross the port once (``shared``, built, issue 19: head h + 1's go into the W
#:   buffer run h does not read, beside it, and the SDUE's Q_h / K_h columns come from the
#:   EPRE's W memory, GMEM_EFILL; the schedule is the DSC's double-buffered order,
#:   :func:`exion.golden.projections.epre_schedule_db`); or the EPRE's Wq fetch is a
#:   global-memory stall on top of the SDUE's (``stall``: EPRE_WLOAD with every weight
#:   loaded again by the SDUE, issue 18's schedule, :func:`~exion.golden.projections.
#:   epre_schedule`); or that fetch uses the port's idle cycles of the block
#:   (``port-idle``, not built: charged ``max(0, fetch - slack)``, slack = the block's GEMM
#:   cycles minus their bytes over the port).
#: * ``epre_keys``: ``per-block`` (the built design, issue 19): the static schedule runs each
#:   block with the fastest of the key paths :data:`PER_BLOCK_KEYS` the DSC builds,
#:   ``predicted``, ``store-queue`` and ``store-queue-q`` [choice]; or one path
#:   everywhere: stage 1 predicts Kh from X (``predicted``, SPEC 3.4, built); or the run
#:   takes the exact K_h the SDUE computes first (stage 1 is the query side only, K rows
#:   are never skipped), a query chunk of a head split over g cores gathering the other
#:   chunks' ``(g - 1) / g`` of K_h over the port as EPRE words (``T ceil(d_head / Le) Le``
#:   16-bit containers per head and sequence in all):
#:
#:   - ``sdue`` (not built): the core's own K_h rows cost nothing and stage 1 starts before
#:     they land (stage 2 of run h waits for K_h; :func:`~exion.golden.projections.
#:     epre_schedule_k`);
#:   - ``sdue-port``: every K_h row through the port (the DSC's EPRE_KLOAD, built; the block
#:     schedule is not), per head and chunk, on top of ``sdue``'s schedule;
#:   - ``komem``: the built on-core path, the DSC's EPRE_KOMEM (issue 19): K_h from OMEM
#:     into the Kh banks, :func:`~exion.golden.dsc_cycles.komem_body` cycles of the DSC's
#:     own time per run, the DSC in order, a run starting once its keys are in
#:     (:func:`~exion.golden.projections.epre_schedule_komem`);
#:   - ``store-tee`` (built, issue 19): ``komem``'s order with the keys costing no DSC time
#:     (the K_h | V_h tile's OMEM_STORE, which runs anyway, tees them into the Kh banks,
#:     ``ktee``; the DSC's block schedule with ``ep_keys = "exact"`` and ``key_queue=False``);
#:   - ``store-queue`` (built, issue 19, the block's default with exact keys): the keys teed
#:     as ``store-tee``'s, into one of two Kh buffers, and every run queued in the DSC's
#:     one-run slot, starting stage 1 as soon as the previous run ends and waiting for its
#:     keys before stage 2 (``k_wait``; :func:`~exion.golden.projections.epre_schedule_q`,
#:     ``sdue``'s schedule with the DSC's hand-overs);
#:   - ``store-queue-q`` (built, issue 19): ``store-queue`` with the Q projection computed
#:     densely (no dominant query row skipped; the host discards those rows) beside run h,
#:     before the SDUE waits for its masks (the DSC's ``q_early``,
#:     ``sim.dsc_program.block_program``).
#: * ``epre_stage2``: a unit scores one key per ``ceil(d_head / Le)`` cycles (``row``); or its
#:   Le lanes score ``floor(Le / d_head)`` keys at once when d_head <= Le / 2 (``packed``).
EPRE_LEVERS = {"epre_fetch": ("shared", "stall", "port-idle"),
               "epre_keys": ("per-block", "predicted", "store-queue", "store-tee", "sdue",
                             "sdue-port", "komem", "store-queue-q"),
               "epre_stage2": ("row", "packed")}
#: The built design's levers (``System.epre_levers`` of the presets).
BUILT_LEVERS = tuple(v[0] for v in EPRE_LEVERS.values())
#: System-level levers: how the cores' EPREs get what their own core did not compute.
#: ``epre_gather`` (issue 19, 2026-12-07) prices the exact keys of a head split over g cores
#: (:func:`attn_split_candidates`): a chunk's run needs the other chunks' keys, ``T -
#: ceil(T / g)`` rows of K_h, which ``packed`` (the built design and the default since
#: 2026-12-07, late) loads over the core's port with the DSC's EPRE_KLOAD ``kpack``: key rows
#: of d_head W-bit elements, ``ceil(d_head W / (8 bw))`` beats of the port's ``bw`` bytes a
#: key, into the Kh banks ``ceil(d_head / Le)`` words a key beside the next keys' beats
#: (:func:`~exion.golden.dsc_cycles.kload_packed_body`, exact against the RTL, plus one
#: descriptor's fetch); ``port`` (built, the model until then) loads them as EPRE words, the
#: plain EPRE_KLOAD's format (``Le`` 16-bit containers a word, ``ceil(d_head / Le)`` words
#: a key, ``(g - 1) / g`` of ``T`` keys at ``bw`` bytes a cycle); ``multicast`` (not built:
#: system interconnect) has every core's teed K_h rows written into the Kh banks of the
#: cores sharing the head, so no key crosses a port. ``sdue-port`` keys (every row through
#: the port) take ``packed``'s format under ``packed`` and ``multicast``. The figures per
#: core (:func:`block_gemms`) do not depend on it: :func:`epre_exposed_on` applies it.
SYSTEM_LEVERS = {"epre_gather": ("packed", "port", "multicast")}
#: Every lever field of a :class:`System` and its values (the first the default).
LEVERS = {**EPRE_LEVERS, **SYSTEM_LEVERS}
#: Schedule fields of a :class:`System` (the first value the default), not EPRE designs.
#: ``cond_layers`` [choice, 2026-12-07]: layers whose input is only the timestep and the
#: condition. ``batched`` runs them before the first step, their weights fetched once: the
#: step conditioning (``Model.cond_macs``: DiT's adaLN modulation, a third of its weights)
#: for all S steps (and both predictions when guided, unless ``cond_shared``) as one GEMM
#: of S tokens (outputs: ``cond_outputs`` values of ``COND_OUT_BYTES`` a step, each step
#: reading its own); the condition encoder (``Model.enc_macs``) and the cross-attention
#: contexts' K / V projections (constant over the steps) once (:func:`context_kv_work`).
#: Their outputs stay in the global memory where they fit, after the activations and the
#: FFN-Reuse caches, else off chip; their weights, read by that pass alone, come last
#: (:func:`_residency`). ``per-step`` runs all of them in every step, as the models'
#: samplers do, weights fetched every step. The GPU estimate takes the same schedule.
SCHEDULES = {"cond_layers": ("batched", "per-step"), "epre_sub_runs": ("greedy", "off")}

#: ``epre_sub_runs = "greedy"``: the first sub-run's U-query groups :func:`best_block`
#: tries (:func:`sub_run_bounds`), on units of at least :data:`SUB_RUN_MIN_GROUPS` groups.
SUB_RUN_FIRSTS = (1, 2)
SUB_RUN_MIN_GROUPS = 3
#: Bytes of one step-conditioning output (16 bits: the CFSE's width for modulations).
COND_OUT_BYTES = 2
#: The key paths ``per-block`` chooses from (all built; ``store-queue`` is never slower
#: than the in-order ``store-tee``, so the schedule does not try that one;
#: ``store-queue-q`` computes more Q rows, so it can be slower than ``store-queue``).
PER_BLOCK_KEYS = ("predicted", "store-queue", "store-queue-q")
#: One block's levers with predicted keys (:func:`block_gemms`' default: a concrete path).
PREDICTED_LEVERS = ("shared", "predicted", "row")


@dataclass(frozen=True)
class System:
    """An EXION instance (docs/evaluate.md). Every field is checked at construction."""

    name: str
    dscs: int                      # cores
    core: str = "exion16"          # a Config preset: the per-core model's config
    clock_mhz: float = 800.0       # 14 nm, 800 MHz (secondary sources)
    gm_mb: float = 64.0            # on-chip global memory, MB
    gm_bytes_per_cycle: int = 64   # global memory bytes per cycle per core, each direction
    offchip_gb_per_s: float = 960.0
    offchip_pj_per_byte: float = 31.2
    leak_mw_per_core: float = 40.0
    leak_mw_per_gm_mb: float = 2.0
    dataflow: str = "col-group"
    gpu: str = "rtx6000ada"
    # EPRE design levers [the defaults are the built design; the others what-ifs]:
    # see EPRE_LEVERS
    epre_fetch: str = "shared"
    epre_keys: str = "per-block"
    epre_stage2: str = "row"
    epre_gather: str = "packed"    # see SYSTEM_LEVERS
    cond_layers: str = "batched"   # see SCHEDULES
    epre_sub_runs: str = "greedy"  # see SCHEDULES

    def __post_init__(self):
        def need(cond, f, v, limit):
            if not cond:
                raise ExionError(f"system {self.name!r}: {f} = {v!r} is invalid: {limit}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", "float"):
                ok = isinstance(v, (int, float)) and not isinstance(v, bool) and \
                    (f.type == "float" or isinstance(v, int)) and math.isfinite(v)
                need(ok, f.name, v, f"must be {'an integer' if f.type == 'int' else 'a number'}")
            elif f.type == "str":
                need(isinstance(v, str), f.name, v, "must be a string")
        need(1 <= self.dscs <= 1024, "dscs", self.dscs, "must be in 1..1024")
        need(self.core in PRESETS or self.core.endswith(".toml"), "core", self.core,
             f"must be a config preset ({', '.join(PRESETS)}) or a config FILE.toml")
        if self.core not in PRESETS:
            try:
                _core_config(self.core)
            except ConfigError as e:
                raise ExionError(f"system {self.name!r}: core = {self.core!r}: {e}") from None
        need(10 <= self.clock_mhz <= 5000, "clock_mhz", self.clock_mhz, "must be in 10..5000")
        need(0 <= self.gm_mb <= 4096, "gm_mb", self.gm_mb, "must be in 0..4096")
        need(1 <= self.gm_bytes_per_cycle <= 4096, "gm_bytes_per_cycle",
             self.gm_bytes_per_cycle, "must be in 1..4096")
        need(0.1 <= self.offchip_gb_per_s <= 100000, "offchip_gb_per_s",
             self.offchip_gb_per_s, "must be in 0.1..100000")
        need(0 <= self.offchip_pj_per_byte <= 10000, "offchip_pj_per_byte",
             self.offchip_pj_per_byte, "must be in 0..10000")
        need(self.leak_mw_per_core >= 0, "leak_mw_per_core", self.leak_mw_per_core, "must be >= 0")
        need(self.leak_mw_per_gm_mb >= 0, "leak_mw_per_gm_mb", self.leak_mw_per_gm_mb,
             "must be >= 0")
        need(self.dataflow in ("row-block", "col-group"), "dataflow", self.dataflow,
             "must be row-block or col-group")
        need(self.gpu in GPUS, "gpu", self.gpu, f"must be one of {', '.join(GPUS)}")
        for f, choices in {**LEVERS, **SCHEDULES}.items():
            v = getattr(self, f)
            need(v in choices, f, v, f"must be one of {', '.join(choices)}")

    @property
    def epre_levers(self) -> tuple:
        """(``epre_fetch``, ``epre_keys``, ``epre_stage2``), as :func:`block_gemms` takes them."""
        return (self.epre_fetch, self.epre_keys, self.epre_stage2)

    @property
    def cfg(self) -> Config:
        """The per-core model's config: a preset, or a config TOML (``base = "exion16"``
        plus fields, as ``exion/config.py`` loads it; e.g. another EPRE provisioning)."""
        return PRESETS[self.core] if self.core in PRESETS else _core_config(self.core)

    @property
    def hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def leak_w(self) -> float:
        return 1e-3 * (self.dscs * self.leak_mw_per_core + self.gm_mb * self.leak_mw_per_gm_mb)

    def to_dict(self) -> dict:
        return asdict(self)


_CORES: dict = {}


def _core_config(path: str) -> Config:
    """A core config from a TOML file, loaded once per file and modification time."""
    p = Path(path)
    try:
        key = (str(p.resolve()), p.stat().st_mtime_ns)
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(p)!r}: {e.strerror}") from None
    if key not in _CORES:
        _CORES[key] = load_config(p)
    return _CORES[key]


SYSTEMS = {
    # edge: 4 cores; global memory scaled from the 24-core 64 MB [choice: 16 MB];
    # LPDDR4-class off-chip at the Orin Nano's 68 GB/s, ~4 pJ/bit [choice]
    "exion4": System("exion4", dscs=4, gm_mb=16.0, offchip_gb_per_s=68.0,
                     offchip_pj_per_byte=32.0, gpu="orin-nano"),
    # server: 24 cores, 64 MB (secondary sources); HBM2-class 3.9 pJ/bit at the RTX 6000
    # Ada's 960 GB/s [choice]
    "exion24": System("exion24", dscs=24, gm_mb=64.0, offchip_gb_per_s=960.0,
                      offchip_pj_per_byte=31.2, gpu="rtx6000ada"),
}


def load_system(path) -> System:
    """A system from TOML: ``base = "exion24"`` (or ``exion4``) plus overrides."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise ExionError(f"cannot read system file {str(p)!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ExionError(f"system file {str(p)!r} is not valid TOML: {e}") from None
    if "base" not in data:
        raise ExionError(f"system file {str(p)!r}: no base; give base = one of the presets "
                         f"({', '.join(SYSTEMS)}) and the fields to change")
    base = data.pop("base")
    if not isinstance(base, str) or base not in SYSTEMS:
        raise ExionError(f"system file {str(p)!r}: base = {base!r} must name a preset "
                         f"({', '.join(SYSTEMS)})")
    known = [f.name for f in fields(System)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ExionError(f"system file {str(p)!r}: unknown field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(known)}")
    for k, v in data.items():
        if isinstance(v, (dict, list)):
            raise ExionError(f"system file {str(p)!r}: field {k} must be a single value")
        if isinstance(v, int) and not isinstance(v, bool) and \
                next(f for f in fields(System) if f.name == k).type == "float":
            data[k] = float(v)
    data.setdefault("name", p.stem)
    core = data.get("core")
    if isinstance(core, str) and core.endswith(".toml") and not Path(core).is_absolute() \
            and (p.parent / core).exists():
        data["core"] = str(p.parent / core)      # a core file beside the system file
    try:
        return replace(SYSTEMS[base], **data)
    except ExionError as e:
        raise ExionError(f"system file {str(p)!r}: {e}") from None


def get_system(arg) -> System:
    if isinstance(arg, System):
        return arg
    s = str(arg)
    if s in SYSTEMS:
        return SYSTEMS[s]
    if s.endswith(".toml"):
        return load_system(s)
    raise ExionError(f"--system {s!r}: not a preset ({', '.join(SYSTEMS)}) nor a FILE.toml")


# ---- per-core: one block instance -----------------------------------------------------------
_CACHE: dict = {}
#: GEMMs whose B operand is a weight matrix (the others multiply activations).
WEIGHT_GEMMS = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc1_gate", "fc2",
                "q2_proj", "k2_proj", "v2_proj", "o2_proj", "xq_proj", "xk_proj", "xv_proj",
                "xo_proj")


def _gemm(cfg, name, M, N, K, kw, mask=None, input_mask=None, **extra):
    """gemm_flow, cached for dense GEMMs (identical shapes recur in every model)."""
    if mask is not None and mask.all():
        mask = None
    if mask is None and input_mask is None:
        key = (cfg.hash, M, N, K, tuple(sorted(kw.items())), tuple(sorted(extra.items())))
        r = _CACHE.get(key)
        if r is None:
            r = _CACHE[key] = gemm_flow(cfg, M, N, K, name=name, **kw, **extra)
        return replace(r, name=name)
    return gemm_flow(cfg, M, N, K, mask=mask, input_mask=input_mask, name=name, **kw, **extra)


_BLOCK_CACHE: dict = {}
_ATT_CACHE: dict = {}
_FFN_CACHE: dict = {}


def per_core_caches() -> dict:
    """The memo tables of the per-core figures (:func:`block_gemms_cached` and the parts
    :func:`block_gemms` memoizes), by name; live dicts, keyed by the config hash, the block
    and every option the figures depend on (the core count and the off-chip memory are not
    among them). ``exion evaluate`` keeps them on disk between runs."""
    return {"block": _BLOCK_CACHE, "attention": _ATT_CACHE, "ffn": _FFN_CACHE}


def block_gemms_cached(cfg: Config, blk: Block, mode: str, **kw) -> dict:
    """:func:`block_gemms`, memoized (the per-core figures do not depend on the core count)."""
    if blk.context is None or kw.get("context_kv", True):
        kw.pop("context_kv", None)          # the default, or nothing to leave out
    if not kw.get("sub_first", 0):
        kw.pop("sub_first", None)
    key = (cfg.hash, blk, mode, tuple(sorted(kw.items())))
    if key not in _BLOCK_CACHE:
        _BLOCK_CACHE[key] = block_gemms(cfg, blk, mode, **kw)
    return _BLOCK_CACHE[key]


def block_gemms(cfg: Config, blk: Block, mode: str, *, seed: int = 0, bw: int | None = None,
                dataflow: str = "col-group", reuse_dense: bool = False, s: float = 0.0,
                k: float = 1.0, q_th: float | None = None, masks_kind: str = "column",
                attn_split: int = 1, ep_key_corr: float = bl.EP_KEY_CORR,
                epre_levers: tuple = PREDICTED_LEVERS, context_kv: bool = True,
                sub_first: int = 0) -> dict:
    """Per-core figures of one instance of ``blk`` in ``mode`` (base / ffnr / ep / all).

    Masks are ``block_flow``'s: ``bl.ffn_mask_for`` / ``bl.synth_ep`` with ``seed`` (FFN mask
    over all ``batch * T`` tokens; EP masks of one sequence, reused for every sequence, key
    correlation ``ep_key_corr``, 0 = ``block_flow``'s i.i.d. masks). Returns ``{"gemms":
    [(GemmFlow, count, kind)], "cfse": {...}, "epre_cycles", "epre_runs", "shift_adds",
    ...}``, kind ``"linear"`` or ``"head"`` (count = sequences x heads x query chunks).

    ``attn_split`` = g > 1 splits each (sequence, head)'s queries into g chunks of
    ``ceil(T / g)`` rows (the scores / P.V GEMMs and the EPRE run of one chunk are priced, with
    all T keys; count x g) so that g cores can share one head [choice, issue 19: see
    :func:`attn_split_for`]. g = 1 is ``block_flow``'s block.

    ``epre_levers`` = (``epre_fetch``, ``epre_keys``, ``epre_stage2``) of :data:`EPRE_LEVERS`
    (:data:`BUILT_LEVERS`' ``per-block`` keys are :func:`best_block`'s choice: here one key
    path). ``context_kv`` false leaves out the contexts' K / V (:func:`context_kv_work`).
    ``sub_first`` = m > 0 (``store-queue-q`` keys): **EPRE sub-runs** of :func:`sub_run_bounds`
    (the first of m x U queries; :func:`_ep_head`), ``r["sub_rows"]`` their query counts.
    """
    if mode not in bl.MODES:
        raise ExionError(f"mode {mode!r} is not one of {', '.join(bl.MODES)}")
    T, d, H, dh, b = blk.T, blk.d, blk.heads, blk.d_head, blk.batch
    hd = H * dh
    g_split = int(attn_split)
    if g_split < 1:
        raise ExionError(f"attn_split = {attn_split!r} must be an integer >= 1")
    use_ep, use_ffnr = mode in ("ep", "all"), mode in ("ffnr", "all")
    levers = _check_levers(epre_levers)
    if levers[1] == "per-block":
        raise ExionError("block_gemms: epre_keys = 'per-block' is a schedule's choice "
                         f"(best_block); give one of {', '.join(PER_BLOCK_KEYS)}")
    k_exact = use_ep and levers[1] != "predicted"   # K computed dense for the EPRE's stage 2
    q_dense = use_ep and levers[1] == "store-queue-q"   # Q computed dense, beside the run
    sub_first, sub_rows = _check_sub_first(sub_first, use_ep, q_dense), []
    rate = cfg.rows
    kw = {"dataflow": dataflow, "bw": cfg.gb_bytes_per_cycle if bw is None else bw}
    g = []
    cfse = {"softmax_elements": 0, "softmax_exposed": 0, "gelu_elements": 0, "gelu_exposed": 0,
            "rate": rate}
    h_eval = 1 if T > HEAD_SAMPLE_T else H
    M_all = b * T
    M = min(M_all, M_CHUNK)
    lin = M_all / M                   # count of every linear GEMM
    ep_box = []

    def get_ep():
        if not ep_box:
            ep = bl.synth_ep(np.random.default_rng([seed, 2]), h_eval, T, k, q_th,
                             key_corr=ep_key_corr)
            if h_eval != H:
                ep = {x: np.tile(v, (H,) + (1,) * (v.ndim - 1)) if x != "score_mask" else v
                      for x, v in ep.items()}
            ep_box.append(ep)
        return ep_box[0]

    def attention(prefix, q_names):
        """Self-attention GEMMs; memoized (the same in every mode with or without EP)."""
        key = (cfg.hash, blk, prefix, use_ep, seed, k if use_ep else None,
               q_th if use_ep else None, ep_key_corr if use_ep else None,
               tuple(sorted(kw.items())), g_split, k_exact, q_dense, sub_first,
               levers if sub_first else None)
        if key not in _ATT_CACHE:
            _ATT_CACHE[key] = _attention(prefix, q_names)
        out, sm_el, sm_exp, rows = _ATT_CACHE[key]
        sub_rows.append(rows)
        g.extend(out)
        cfse["softmax_elements"] += sm_el
        cfse["softmax_exposed"] += sm_exp

    def _attention(prefix, q_names):
        g = []
        cfse = {"softmax_elements": 0, "softmax_exposed": 0}
        if use_ep:
            ep = get_ep()
            needs = {x: ~np.asarray(ep[f"skip_{x}"]) for x in "qkv"}
            if k_exact:
                needs["k"] = np.ones_like(needs["k"])
        for nm, x in zip(q_names, "qkv"):
            if use_ep and not needs[x].all() and not (q_dense and x == "q"):
                pm = bl._proj_mask(needs[x], dh)
                keep = np.flatnonzero(pm.any(axis=1))
                if keep.size:
                    reps = max(1, min(b, M_CHUNK // keep.size))
                    pmk = np.tile(pm[keep], (reps, 1))
                    g.append((_gemm(cfg, nm, pmk.shape[0], hd, d, kw, mask=pmk), b / reps,
                              "linear"))
            else:
                g.append((_gemm(cfg, nm, M, hd, d, kw), lin, "linear"))
        cnt = b * H // h_eval * g_split
        tq = math.ceil(T / g_split)
        sm = [ep["score_mask"][h] & needs["q"][h][:, None] for h in range(h_eval)] \
            if use_ep else None            # the score masks, dominant rows cleared
        bounds, priced = sub_run_bounds(cfg, sm[0], tq, sub_first, (T, d, dh), levers, kw) \
            if sub_first else ([0, tq], {})
        for h in range(h_eval):
            if use_ep:
                out, n_el, sm_exp = _ep_head(cfg, prefix, h, sm[h], tq, bounds,
                                             priced if h == 0 else {}, dh, kw)
                g.extend((x, cnt, "head") for x in out)
            else:
                r = _gemm(cfg, f"{prefix}scores[{h}]", tq, T, dh, kw)
                g.append((r, cnt, "head"))
                g.append((_gemm(cfg, f"{prefix}pv[{h}]", tq, dh, T, kw), cnt, "head"))
                n_el, sm_exp = tq * T, max(0, math.ceil(tq * T / rate) - r.cycles)
            cfse["softmax_elements"] += cnt * n_el
            cfse["softmax_exposed"] += cnt * sm_exp
        return (g, cfse["softmax_elements"], cfse["softmax_exposed"],
                [b1 - b0 for b0, b1 in zip(bounds, bounds[1:])])

    attention("", ("q_proj", "k_proj", "v_proj"))
    g.append((_gemm(cfg, "o_proj", M, d, hd, kw), lin, "linear"))
    if blk.self_attn2:
        attention("sa2.", ("q2_proj", "k2_proj", "v2_proj"))
        g.append((_gemm(cfg, "o2_proj", M, d, hd, kw), lin, "linear"))
    if blk.context is not None:       # cross-attention, dense [choice]
        Tc, dc = blk.context
        g.append((_gemm(cfg, "xq_proj", M, hd, d, kw), lin, "linear"))
        Mc = blk.contexts * Tc        # every distinct context's keys and values
        if context_kv:
            g.append((_gemm(cfg, "xk_proj", Mc, hd, dc, kw), 1, "linear"))
            g.append((_gemm(cfg, "xv_proj", Mc, hd, dc, kw), 1, "linear"))
        tq = math.ceil(T / g_split)       # query chunk of one core (attn_split)
        xs = _gemm(cfg, "x.scores[*]", tq, Tc, dh, kw)
        g.append((xs, b * H * g_split, "head"))
        g.append((_gemm(cfg, "x.pv[*]", tq, dh, Tc, kw), b * H * g_split, "head"))
        cfse["softmax_elements"] += b * H * g_split * tq * Tc
        cfse["softmax_exposed"] += b * H * g_split * max(0, math.ceil(tq * Tc / rate)
                                                         - xs.cycles)
        g.append((_gemm(cfg, "xo_proj", M, d, hd, kw), lin, "linear"))
    fkey = (cfg.hash, blk, use_ffnr, reuse_dense and not use_ffnr, masks_kind,
            s if use_ffnr else None, seed, tuple(sorted(kw.items())))
    if fkey not in _FFN_CACHE:
        _FFN_CACHE[fkey] = _ffn(cfg, blk, use_ffnr, reuse_dense, masks_kind, s, seed, kw)
    fg, ffn_sp, gel_el, gel_exp = _FFN_CACHE[fkey]
    g.extend(fg)
    cfse["gelu_elements"] = gel_el
    cfse["gelu_exposed"] = gel_exp
    ep = _ep_charges(cfg, g, blk, h_eval, kw["bw"], g_split, levers, sub_rows) if use_ep \
        else {"epre_cycles": 0, "epre_busy_cycles": 0, "epre_runs": 0, "shift_adds": 0}
    return {"block": blk.name, "mode": mode, "gemms": g, "cfse": cfse, **ep, "h_eval": h_eval,
            "epre_keys": levers[1] if use_ep else None,
            "attn_units": b * H * g_split, "attn_split": g_split, "sub_rows": sub_rows,
            "ffn_sparsity": ffn_sp,
            "bw": kw["bw"], "dataflow": dataflow}


def _check_sub_first(sub_first, use_ep: bool, q_dense: bool) -> int:
    """:func:`block_gemms`' ``sub_first`` (0 without EP); sub-runs need the Q-dense keys."""
    m = int(sub_first) if use_ep else 0
    if m < 0 or (m and not q_dense):
        raise ExionError(f"sub_first = {sub_first!r}: EPRE sub-runs need epre_keys = "
                         "'store-queue-q' (queued runs, the Q projection beside them) and "
                         "m >= 1 query groups first")
    return m


def _ep_head(cfg: Config, prefix: str, h: int, sm_h, tq: int, bounds: list, priced: dict,
             dh: int, kw: dict) -> tuple[list, int, int]:
    """(GEMMs, softmax elements, exposed softmax cycles) of head h's attention with EP on
    one core's query chunk: its first ``tq`` query rows (masks are i.i.d. over rows), the
    kept ones (``sm_h``: the score mask with the dominant rows cleared) compacted; each
    sub-run of ``bounds`` followed by the scores of the row blocks it completes
    (``scores[h.j]``; ``scores[h]`` for one run; ``priced``: those :func:`sub_run_bounds`
    already priced), the P.V once on all kept rows (it needs no mask)."""
    T = sm_h.shape[1]
    keep = np.flatnonzero(sm_h.any(axis=1))
    keep = keep[keep < tq]
    out, n_el, exposed = [], 0, 0
    for j, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        a, z = sub_run_rows(keep, lo, hi, hi >= tq, cfg.rows)
        kj = keep[a:z]
        if kj.size:
            rj = priced[a, z] if (a, z) in priced else \
                _gemm(cfg, "scores", kj.size, T, dh, kw, mask=sm_h[kj])
            tag = f"{h}.{j}" if len(bounds) > 2 else f"{h}"
            out.append(replace(rj, name=f"{prefix}scores[{tag}]"))
            n_j = int(sm_h[kj].sum())
            n_el += n_j
            exposed += max(0, math.ceil(n_j / cfg.rows) - rj.cycles)
    if keep.size:
        out.append(_gemm(cfg, f"{prefix}pv[{h}]", keep.size, dh, T, kw,
                         input_mask=sm_h[keep]))
    return out, n_el, exposed


def sub_run_rows(keep, lo: int, hi: int, last: bool, R: int) -> tuple[int, int]:
    """The slice ``keep[a:b]`` of a unit's kept query rows (ascending, dominant rows
    dropped) whose SDUE row blocks of R rows a sub-run over query rows ``lo .. hi - 1``
    completes: the blocks whose last row it scores (``last``: the unit's last sub-run, which
    also completes a final partial block) [choice, issue 19]."""
    n_lo, n_hi = (int(np.searchsorted(keep, v)) for v in (lo, hi))
    return n_lo // R * R, n_hi if last else n_hi // R * R


def sub_run_bounds(cfg: Config, sm, tq: int, first: int, dims: tuple, levers: tuple,
                   kw: dict) -> tuple[list[int], dict]:
    """The query rows where a unit's EPRE sub-runs start, and ``tq`` (its query chunk's rows)
    [choice, issue 19; the DSC's ``q_split``]: the first sub-run scores ``first`` x U rows
    (U = ``cfg.epre_unit_count``; sub-runs start at multiples of U, run field ``q_base``),
    each next one the most groups of U rows whose run (:func:`epre_phases` at ``dims`` =
    (T, d, d_head) and ``levers``) is no longer than the scores GEMM of the row blocks the
    previous sub-run completed (:func:`sub_run_rows` of the kept rows of ``sm``, the (rows,
    T) score mask of the head with its dominant rows cleared), so it hides behind it; the
    last takes what is left, and a tail shorter than U joins the sub-run before it. Also
    returns those GEMMs, ``{(a, b): scores}`` by kept-row slice."""
    T, d, dh = dims
    U, R = cfg.epre_unit_count, cfg.rows
    keep = np.flatnonzero(sm[:tq].any(axis=1))
    priced: dict = {}

    def att(lo, hi):
        a, b = sub_run_rows(keep, lo, hi, hi >= tq, R)
        if b <= a:
            return 0
        priced[a, b] = _gemm(cfg, "scores", b - a, T, dh, kw, mask=sm[keep[a:b]])
        return priced[a, b].cycles
    b = [0, min(tq, max(1, int(first)) * U)]
    while b[-1] < tq:
        left, budget, n = tq - b[-1], att(b[-2], b[-1]), U
        while n + U <= left and sum(epre_phases(cfg, n + U, T, d, dh, levers)) <= budget:
            n += U
        b.append(b[-1] + (left if left - n < U else n))
    return b, priced


def _ep_charges(cfg: Config, g, blk: Block, h_eval: int, bw: int, g_split: int,
                levers: tuple, sub_rows: list) -> dict:
    """EP's EPRE figures of one instance of ``blk`` (:func:`block_gemms` in ep / all)."""
    T, d, H, dh = blk.T, blk.d, blk.heads, blk.d_head
    runs = blk.batch * (2 if blk.self_attn2 else 1)
    # only the cycles the overlapped schedule leaves exposed are charged, each
    # self-attention's schedule kept for block_on_system to price on N cores
    attns = [("", ("q_proj", "k_proj", "v_proj"))] + (
        [("sa2.", ("q2_proj", "k2_proj", "v2_proj"))] if blk.self_attn2 else [])
    sched = [_epre_sched(cfg, g, pre, names, blk, h_eval, bw, g_split, levers, rows)
             for (pre, names), rows in zip(attns, sub_rows)]
    exposed = sum(epre_exposed_on(x, 1) for x in sched)
    # stage 1 (Qh, Kh: T x d x 2 H dh products; the query side only with exact keys) +
    # stage 2 (H x T x T x dh products), each a sum of lod_terms^2 power-of-two terms
    k_side = 1 if levers[1] != "predicted" else 2
    return {"epre_cycles": exposed, "epre_sched": sched,
            "epre_busy_cycles": runs * H * sum(epre_phases(cfg, T, T, d, dh, levers)),
            "epre_runs": runs,
            "shift_adds": runs * cfg.lod_terms ** 2 * (T * d * k_side * H * dh
                                                       + H * T * T * dh)}


def _ffn(cfg, blk, use_ffnr, reuse_dense, masks_kind, s, seed, kw):
    """FC1 (+ GEGLU gate) and FC2 of :func:`block_gemms` (memoized by the caller)."""
    W, A, rate = cfg.width, cfg.acc_width, cfg.rows
    M_all = blk.batch * blk.T
    M = min(M_all, M_CHUNK)
    lin = M_all / M
    d, F = blk.d, blk.ffn
    g = []
    ffn_mask = None
    if use_ffnr:
        ffn_mask = bl.ffn_mask_for({**blk.shape, "T": M}, masks_kind, s, seed)
    fc1s = []
    for nm in ("fc1",) + (("fc1_gate",) if blk.geglu else ()):
        if use_ffnr:
            fc1s.append(_gemm(cfg, nm, M, F, d, kw, mask=ffn_mask, preload_bits=W
                              if nm == "fc1" else 0))
        else:
            fc1s.append(_gemm(cfg, nm, M, F, d, kw))
        g.append((fc1s[-1], lin, "linear"))
    if use_ffnr:
        g.append((_gemm(cfg, "fc2", M, d, F, kw, input_mask=ffn_mask, preload_bits=A,
                        out_bits=A), lin, "linear"))
        n_el = lin * int(ffn_mask.sum())
    else:
        g.append((_gemm(cfg, "fc2", M, d, F, kw, out_bits=A if reuse_dense else W), lin,
                  "linear"))
        n_el = M_all * F
    gel = lin * max(0, math.ceil(n_el / lin / rate) - fc1s[0].cycles)
    return (g, None if ffn_mask is None else float(1 - ffn_mask.mean()), n_el, gel)


def _check_levers(levers) -> tuple:
    """``levers`` as a checked (fetch, keys, stage2) tuple of :data:`EPRE_LEVERS` values."""
    t = tuple(levers)
    if len(t) != len(EPRE_LEVERS) or any(v not in ch for v, ch in zip(t, EPRE_LEVERS.values())):
        raise ExionError(f"epre_levers = {levers!r} must be one value of each of "
                         + "; ".join(f"{k} ({', '.join(v)})" for k, v in EPRE_LEVERS.items()))
    return t


def epre_phases(cfg: Config, n_q: int, n_k: int, d: int, d_head: int,
                levers: tuple = PREDICTED_LEVERS) -> tuple[int, int]:
    """(before, after) cycles of one EPRE run under ``levers``: ``before`` needs only X and
    Wq_h / Wk_h (stage 1), ``after`` (stage 2, selection, the run's fixed cycles) may need the
    SDUE's K_h (``epre_keys`` other than ``predicted``). With :data:`PREDICTED_LEVERS` the sum is
    :func:`exion.golden.cycles.epre_run_cycles` (the RTL's count); exact keys are the EPRE's
    ``k_given`` run (no key groups in stage 1: the RTL's count too), ``packed`` scores
    ``floor(Le / d_head)`` keys per unit and cycle (not built)."""
    _, keys, stage2 = _check_levers(levers)
    if keys == "per-block":
        raise ExionError("epre_phases: epre_keys = 'per-block' is a schedule's choice; give "
                         f"one of {', '.join(PER_BLOCK_KEYS)}")
    p = epre_phase_cycles(cfg, n_q, n_k, d, d_head, k_given=keys != "predicted")
    U, Le = cfg.epre_unit_count, cfg.epre_lane_count
    gq = math.ceil(n_q / U)
    s1, s2 = p["stage1"], p["stage2"]
    if stage2 == "packed":
        per = max(1, Le // d_head)
        s2 = gq * (math.ceil(n_k / per) * math.ceil(d_head / Le) + EPRE_PIPE)
    return s1, s2 + p["select"] + EPRE_RUN_FIXED


def _epre_sched(cfg: Config, g, prefix: str, names, blk: Block, h_eval: int,
                bw: int, g_split: int = 1, levers: tuple = PREDICTED_LEVERS,
                sub_rows: list | None = None) -> dict:
    """The inputs of one self-attention's EPRE schedule (:func:`epre_exposed_on` prices them
    on N cores): the run's phases, the K / V and Q projections' cycles with the cores each
    can be split over, each head's scores + P.V cycles (sampled heads reused), the
    (sequence, head, query chunk) units, and the EPRE's own Wq fetch of the block instance
    at ``bw`` bytes per cycle (``stall``; its part beyond the idle port cycles with
    ``port-idle``; none with ``shared``); with exact keys the K_h words a run loads over the
    port (``kload``: all with ``sdue-port``, else the other query chunks' ``(g - 1) / g``)
    and the DSC's EPRE_KOMEM cycles (``komem``). ``levers``: :data:`EPRE_LEVERS`.
    ``sub_rows``: the query counts of a unit's sub-runs (:func:`block_gemms`'
    ``sub_first``); with more than one, ``sub`` lists per head each sub-run's ``(before,
    after, rest)``, ``rest`` its rows' scores cycles (the last's with the head's P.V)."""
    T, d, H, dh, b = blk.T, blk.d, blk.heads, blk.d_head, blk.batch
    one = {}
    lin = {nm: [] for nm in names}
    for x, n, kind in g:
        one[x.name] = x.cycles
        if x.name in lin:
            lin[x.name].append((x.cycles * n, _units(cfg, x, n, kind)))
    fetch_kind, keys, _ = levers
    before, after = epre_phases(cfg, math.ceil(T / g_split), T, d, dh, levers)
    fetch = math.ceil(H * d * dh * cfg.width / 8 / bw)
    if fetch_kind == "shared":
        fetch = 0
    elif fetch_kind == "port-idle":
        slack = sum(n * max(0.0, x.cycles - sum(x.bytes.values()) / bw) for x, n, _ in g)
        fetch = math.ceil(max(0.0, fetch - slack))
    kload, kload_packed, komem = 0, 0, 0
    Le = cfg.epre_lane_count
    k_words = T * kh_words(cfg, dh) * Le * 2 / bw      # a head's K_h as EPRE words

    def key_rows(n):  # n keys as EPRE_KLOAD kpack's key rows, beats of the port's bw bytes
        return (dsc_overhead(8 * bw) + kload_packed_body(n, krow_beats(cfg, dh, 8 * bw),
                                                         kh_words(cfg, dh), cfg.rows)
                if n else 0)
    if keys == "sdue-port":           # every K_h row over the port, per head and chunk
        kload, kload_packed = math.ceil(k_words), key_rows(T)
    elif keys != "predicted":         # a chunk gathers the other chunks' K_h rows
        kload = math.ceil(k_words * (g_split - 1) / g_split)
        kload_packed = key_rows(T - math.ceil(T / g_split))
    if keys == "komem":               # EPRE_KOMEM on the DSC's own time, per run
        komem = dsc_overhead(64) + komem_body(cfg, T, dh)
    sub = None
    if sub_rows is not None and len(sub_rows) > 1:
        phases = [epre_phases(cfg, n, T, d, dh, levers) for n in sub_rows]
        last = len(sub_rows) - 1
        sub = [[(*phases[j], one.get(f"{prefix}scores[{h % h_eval}.{j}]", 0)
                 + (one.get(f"{prefix}pv[{h % h_eval}]", 0) if j == last else 0))
                for j in range(len(sub_rows))] for h in range(H)]
    return {"before": before, "after": after, "levers": tuple(levers), "heads": H,
            "units": b * H * g_split, "kv": lin[names[1]] + lin[names[2]], "q": lin[names[0]],
            "head": [sum(x[2] for x in sub[h]) if sub else
                     one.get(f"{prefix}scores[{h % h_eval}]", 0)
                     + one.get(f"{prefix}pv[{h % h_eval}]", 0) for h in range(H)],
            "sub": sub,
            "fetch": fetch, "kload": kload, "kload_packed": kload_packed, "komem": komem}


def epre_exposed_on(s: dict, n_cores: int, gather: str = "packed") -> float:
    """Exposed EPRE cycles of one self-attention (:func:`_epre_sched`'s inputs) per core on
    ``n_cores`` cores [choice, issue 19]: each core runs ``n_u = ceil(U / N)`` of the U units'
    EPRE runs, beside its share of the K / V and Q projections (each split over
    ``min(N, its tiles)`` cores, as :func:`block_on_system` splits them) spread evenly over
    those runs and its units' own scores / P.V; its runs are scheduled in sequences of
    ``min(H, n_u)`` heads (``golden.projections``: the DSC's double-buffered order with
    ``shared``, issue 18's otherwise; with exact keys ``epre_schedule_k`` for ``sdue`` /
    ``sdue-port``, the in-order ``epre_schedule_komem`` for ``komem`` / ``store-tee`` and
    the queued ``epre_schedule_q`` for ``store-queue``),
    each exposed wait rounded up, plus each run's K_h load (``kload``, as ``gather`` of
    :data:`SYSTEM_LEVERS` makes it) and its heads' share of the Wq fetch. On one core this is the
    per-sequence schedule of ``golden.block`` repeated over the b x g sequences and chunks;
    on many, the projections each core hides its runs behind shrink with N while a run does
    not, so EP pays less on more cores."""
    N = max(1, int(n_cores))
    U, H = s["units"], s["heads"]
    n_u = math.ceil(U / N)
    kv = sum(c / min(N, u) for c, u in s["kv"]) / n_u
    q = sum(c / min(N, u) for c, u in s["q"]) / n_u
    h_seq = min(H, n_u)
    rest = [q + s["head"][h] for h in range(h_seq)]
    fetch_kind, keys, _ = s["levers"]
    before, after = s["before"], s["after"]
    if keys in ("komem", "store-tee"):    # the DSC in order: a run starts with its keys
        exposed = epre_schedule_komem(before + after, s["komem"], [kv] * h_seq,
                                      rest)["exposed"]
    elif keys == "store-queue":       # queued runs, stage 2 once the keys are in
        exposed = epre_schedule_q(before, after, [kv] * h_seq, rest)["exposed"]
    elif keys == "store-queue-q":     # ... the dense Q beside the run (or sub-runs: q_split)
        runs = s.get("sub") or [[(before, after, s["head"][h])] for h in range(H)]
        exposed = epre_schedule_sub(runs[:h_seq], [kv] * h_seq, [q] * h_seq)["exposed"]
    elif keys != "predicted":
        exposed = epre_schedule_k(before, after, [kv] * h_seq, rest)["exposed"]
    elif fetch_kind == "shared":      # the DSC's double-buffered order (built)
        exposed = epre_schedule_db(before + after, [kv] * h_seq, rest)["exposed"]
    else:
        exposed = epre_schedule(before + after, [kv] * h_seq, rest)["exposed"]
    if gather not in SYSTEM_LEVERS["epre_gather"]:
        raise ExionError(f"epre_gather = {gather!r} must be one of "
                         f"{', '.join(SYSTEM_LEVERS['epre_gather'])}")
    if gather == "port":
        kload = s["kload"]
    else:
        kload = s["kload_packed"] if gather == "packed" or keys == "sdue-port" else 0
    seqs = math.ceil(n_u / h_seq)
    return (seqs * math.ceil(exposed + h_seq * kload)
            + s["fetch"] * h_seq / H)


def core_totals(cfg: Config, r: dict) -> dict:
    """1-core totals of :func:`block_gemms` (the same sums as ``block._totals``)."""
    g = r["gemms"]
    gemm_cyc = sum(x.cycles * n for x, n, _ in g)
    comp = sum(x.compute_cycles * n for x, n, _ in g)
    c = r["cfse"]
    cyc = gemm_cyc + c["softmax_exposed"] + c["gelu_exposed"] + r["epre_cycles"]
    by = {kk: sum(x.bytes[kk] * n for x, n, _ in g) for kk in BYTE_KEYS}
    useful = sum(x.useful_macs * n for x, n, _ in g)
    return {"cycles": cyc, "compute_cycles": comp, "stall_cycles": gemm_cyc - comp,
            "bytes": {**by, "total": sum(by.values())}, "useful_macs": useful,
            "utilization": useful / (cfg.peak_macs * cyc) if cyc else 0.0}


def attn_split_candidates(dscs: int, units: int, T: int, rows: int) -> list[int]:
    """Query-chunk counts g worth trying for a block with ``units`` (sequence, head) pairs
    on ``dscs`` cores [choice, issue 19]: each head's T queries split into g chunks of at
    least ``rows`` = R queries (one SDUE row block), 1 <= g <= ceil(T / R); only the g that
    strictly lower the rounds per head ``ceil(units * g / dscs) / g`` are kept (with
    units >= dscs a split can still fill a partly empty last round). The chunk's EPRE run
    repeats stage 1 over all keys; the shift-add count (energy) is not raised for it."""
    out, best_t = [1], math.ceil(units / dscs)
    for g in range(2, max(1, math.ceil(T / rows)) + 1):
        t = math.ceil(units * g / dscs) / g
        if t < best_t - 1e-12:
            out.append(g)
            best_t = t
    return out


def attn_split_for(dscs: int, units: int, T: int, rows: int) -> int:
    """The g of :func:`attn_split_candidates` with the fewest rounds per head (the largest)."""
    return attn_split_candidates(dscs, units, T, rows)[-1]


#: EP mode -> the same mode without EP (``best_block``'s per-block fallback).
NO_EP = {"ep": "base", "all": "ffnr"}


def best_block(sysm: "System", blk: Block, mode: str, split_heads: bool = True,
               ep_per_block: bool = True, residency: dict | None = None,
               off_first: bool = False, **kw) -> tuple[dict, dict]:
    """(``block_gemms`` result, ``block_on_system`` figures) of ``blk`` in ``mode``, as the
    static schedule of the system would run it [choice, issue 19]:

    * the query split g of :func:`attn_split_candidates` that gives the fewest system
      cycles (g = 1 only when ``split_heads`` is false). The split is free for the SDUE's
      GEMMs but each chunk's EPRE run repeats the keys' stage 1, so EP modes may pick a
      smaller g than Base;
    * in EP modes with ``epre_keys = "per-block"`` (the built design), the faster of the
      key paths :data:`PER_BLOCK_KEYS` (``r["epre_keys"]`` tells which ran);
    * with ``store-queue-q`` keys and ``sysm.epre_sub_runs = "greedy"`` (issue 19, the DSC's
      ``q_split``), one run per unit or sub-runs whose first scores m x U queries, m in
      :data:`SUB_RUN_FIRSTS`, on units of at least :data:`SUB_RUN_MIN_GROUPS` x U queries
      (``r["sub_rows"]`` tells which ran);
    * in EP modes (ep, all), EP is used on this block only if it is faster than the block
      without EP (``NO_EP``; ``ep_per_block`` false forces EP everywhere): EP is a per-layer
      option whose EPRE cost is known before the run from T, d, heads and k. A block without
      EP computes exact attention (no fidelity cost). ``r["mode"]`` tells which ran.

    "Fewest" compares ``max(on-chip cycles, off-chip cycles)`` of the block, then the on-chip
    cycles (``off_first``: the off-chip cycles, then the on-chip ones: for an iteration bound
    by the sum of every block's off-chip traffic, where a block's own maximum misleads);
    off-chip cycles are the block's off-chip bytes under ``residency`` (the fractions of
    :func:`_residency`; none: on-chip only) at the off-chip bandwidth.
    """
    per_cyc = sysm.offchip_gb_per_s * 1e9 / sysm.hz

    def cost(o):
        off = 0.0 if residency is None else (
            residency["weights"] * o["weight_bytes"] + residency["activations"] * o["act_bytes"]
            + residency["ffnr_caches"] * o["cache_bytes"]) / per_cyc
        return (off, o["cycles"]) if off_first else (max(o["cycles"], off), o["cycles"])

    cands = attn_split_candidates(sysm.dscs, blk.batch * blk.heads, blk.T, sysm.cfg.rows) \
        if split_heads else [1]
    modes = [mode] + ([NO_EP[mode]] if ep_per_block and mode in NO_EP else [])
    lev = tuple(kw.pop("epre_levers", BUILT_LEVERS))
    keys = PER_BLOCK_KEYS if lev[1] == "per-block" else (lev[1],)
    best = None
    U = sysm.cfg.epre_unit_count
    for m in modes:
        for k in (keys if m in NO_EP else keys[:1]):
            for g in cands:
                subs = (0,) + (SUB_RUN_FIRSTS if (
                    m in NO_EP and k == "store-queue-q" and sysm.epre_sub_runs == "greedy"
                    and math.ceil(blk.T / g) >= SUB_RUN_MIN_GROUPS * U) else ())
                for sub in subs:
                    r = block_gemms_cached(sysm.cfg, blk, m, attn_split=g,
                                           epre_levers=(lev[0], k, lev[2]), sub_first=sub,
                                           **kw)
                    o = block_on_system(sysm, r)
                    if best is None or cost(o) < best[2]:
                        best = (r, o, cost(o))
    return best[:2]


#: GEMM name -> the part of a block it belongs to (``time_by_part_s`` in the JSON).
PARTS = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "q2_proj": "qkv",
         "k2_proj": "qkv", "v2_proj": "qkv", "o_proj": "o_proj", "o2_proj": "o_proj",
         "scores": "attention", "pv": "attention", "sa2.scores": "attention",
         "sa2.pv": "attention", "xq_proj": "cross", "xk_proj": "cross", "xv_proj": "cross",
         "xo_proj": "cross", "x.scores": "cross", "x.pv": "cross", "fc1": "fc1",
         "fc1_gate": "fc1", "fc2": "fc2"}


def _units(cfg, x, n, kind):
    """How many cores can share a GEMM (column tiles) or a set of head GEMMs."""
    return n if kind == "head" else math.ceil(x.N / cfg.cols)


def block_on_system(sysm: System, r: dict) -> dict:
    """Cycles of one block instance on ``sysm.dscs`` cores, its memory-bound share, energy
    activity (MACs, shift-adds, SRAM bytes, global-memory bytes) and off-chip-relevant bytes."""
    cfg, N = sysm.cfg, sysm.dscs
    R, C, L, W = cfg.rows, cfg.cols, cfg.lanes, cfg.width
    cyc = mem_cyc = 0.0
    sram = 0.0
    wbytes = actbytes = cachebytes = 0
    parts: dict = {}
    for x, n, kind in r["gemms"]:
        u = _units(cfg, x, n, kind)
        if kind == "head":
            # one of the U (sequence, head, query chunk) units of an attention layer: U over
            # N cores is ceil(U / N) rounds of the mean unit. A head GEMM listed per head
            # carries n = U / heads of them (its own head's cycles), one listed once all U.
            U = r["attn_units"]
            t = n * x.cycles * math.ceil(U / N) / U
        else:
            t = n * x.cycles / min(N, u)
        cyc += t
        part = PARTS.get(x.name.split("[")[0], "other")
        parts[part] = parts.get(part, 0.0) + t
        if x.bound == "memory-bound":
            mem_cyc += t
        # local SRAM: per beat R x L inputs + C x L weights read, fills written, OMEM
        # written and read (preload, results)
        sram += n * ((x.k_words * (R + C) * L * W / 8) + x.bytes["gb_wmem"]
                     + x.bytes["gb_imem"] + 2 * (x.bytes["gb_omem"] + x.bytes["omem_gb"]))
        base = x.name.split("[")[0]
        # OMEM loads: preloaded outputs (the FFN-Reuse caches' reads) or spilled partial
        # sums read back (activations, like the spill writes in omem_gb)
        spill = x.bytes["gb_omem"] - x.preload_bytes
        if base in WEIGHT_GEMMS:
            wbytes += n * x.bytes["gb_wmem"]
            actbytes += n * (x.bytes["gb_imem"] + x.bytes["omem_gb"] + spill)
        else:
            actbytes += n * (x.bytes["gb_wmem"] + x.bytes["gb_imem"] + x.bytes["omem_gb"]
                             + spill)
        if base in ("fc1", "fc2"):
            cachebytes += n * x.preload_bytes
    c = r["cfse"]
    units = r["attn_units"]        # (sequence, head) pairs of the block
    parts["cfse"] = (c["softmax_exposed"] + c["gelu_exposed"]) / min(N, units)
    cyc += parts["cfse"]
    # EPRE: each core's runs beside its share of the projections (epre_exposed_on)
    epre = sum(epre_exposed_on(x, N, sysm.epre_gather) for x in r.get("epre_sched", ()))
    cyc += epre
    parts["epre"] = epre
    t = core_totals(cfg, r)
    return {"cycles": cyc, "epre_cycles": epre, "memory_bound_cycles": mem_cyc,
            "useful_macs": t["useful_macs"], "shift_adds": r["shift_adds"], "sram_bytes": sram,
            "gm_bytes": t["bytes"]["total"], "weight_bytes": wbytes, "act_bytes": actbytes,
            "cache_bytes": cachebytes,
            "cfse_elements": c["softmax_elements"] + c["gelu_elements"],
            "core_cycles": t["cycles"], "parts": parts}


# ---- a whole model -----------------------------------------------------------------------------
def context_kv_work(model: Model) -> dict:
    """The cross-attention contexts' K / V projections of one step, all blocks: ``macs``,
    ``params`` (their weights) and ``outputs`` (K and V values of every distinct context)."""
    return {k: sum(b.count * b.context_kv[k] for b in model.blocks)
            for k in ("macs", "params", "outputs")}


def _footprints(model: Model, cfg: Config, batched: bool = False) -> dict:
    """Bytes of the weights a step reads, the largest block's activations, the FFN-Reuse
    caches and, when they are computed once (``batched``), every block's contexts' K / V,
    every step's conditioning outputs and the weights only the once pass reads
    (``once_weights``: the step conditioning's, the condition encoder's and the contexts'
    K / V projections'; per step they are weights of the step)."""
    Wb = cfg.width / 8
    act = max(b.batch * b.T * (4 * b.d + b.ffn * (2 if b.geglu else 1)) * Wb
              + min(b.T, HEAD_SAMPLE_T) * b.T * Wb for b in model.blocks)
    cache = sum(b.count * b.batch * b.T * (b.ffn * Wb + b.d * cfg.acc_width / 8)
                for b in model.blocks)
    once = _once_work(model)
    kv = once["context_kv"]["outputs"] * Wb if batched else 0.0
    co = model.iterations * model.cond_outputs * COND_OUT_BYTES if batched else 0.0
    w_once = once["params"] if batched else 0
    return {"weights": (model.params - w_once) * Wb, "activations": act, "ffnr_caches": cache,
            "context_kv": kv, "cond_outputs": co, "once_weights": w_once * Wb}


def _once_work(model: Model) -> dict:
    """What ``cond_layers = "batched"`` runs before the first step: ``macs``, ``params``
    (the weights only that pass reads) and ``context_kv`` (:func:`context_kv_work`)."""
    ctx = context_kv_work(model)
    return {"macs": model.once_macs + ctx["macs"],
            "params": model.cond_layers["params"] + ctx["params"], "context_kv": ctx}


def _residency(sysm: System, fp: dict, ffnr: bool) -> dict:
    """Fractions of activations, caches, the contexts' K / V and the step conditioning's
    outputs (computed once), the weights a step reads and the weights only the once pass
    reads that live off chip [choice, module doc], placed in that order.

    Each is spilled in proportion to what does not fit (issue 19 follow-up: the activations
    too; they were all-or-nothing, which sent all of SD's and VideoCrafter2's operand traffic
    off chip when one block's activations overflowed by a few MB)."""
    cap = sysm.gm_mb * 2 ** 20
    a = fp["activations"]
    f_act = 0.0 if a <= cap else (1 - cap / a)
    left = max(0.0, cap - fp["activations"])
    cache = fp["ffnr_caches"] if ffnr else 0.0
    f_cache = 0.0 if cache <= left else (1 - left / cache)
    left = max(0.0, left - cache)
    out = {"activations": f_act, "ffnr_caches": f_cache}
    for key in ("context_kv", "cond_outputs", "weights", "once_weights"):
        x = fp.get(key, 0.0)
        out[key] = 0.0 if x <= left else (1 - left / x)
        left = max(0.0, left - x)
    return out


#: The time totals and energy parts :func:`evaluate_model` sums over the iterations.
_TIMES = ("latency_s", "latency_epre_hidden_s", "outside_s", "onchip_s", "offchip_s")
_ENERGY_PARTS = ("mac", "shift_add", "sram", "gm", "offchip", "cfse", "leakage")


def evaluate_model(sysm: System, model: Model, mode: str, *, seed: int = 0,
                   masks_kind: str = "column", progress=None,
                   split_heads: bool = True, ep_per_block: bool = True,
                   ep_key_corr: float = bl.EP_KEY_CORR) -> dict:
    """Latency and energy of one generation (image / clip) of ``model`` in ``mode`` (Base,
    EP, FFNR, All) on ``sysm``, and the GPU comparison (docs/evaluate.md). ``ep_key_corr``:
    the synthetic EP masks' key correlation (:func:`exion.golden.block.synth_ep`)."""
    if mode not in MODE_NAMES:
        raise ExionError(f"mode {mode!r} is not one of {', '.join(MODE_NAMES)}")
    cfg = sysm.cfg
    m = MODE_NAMES[mode]
    ffnr = m in ("ffnr", "all")
    S, Nr = model.iterations, model.n_reuse
    n_dense = sum(1 for t in range(S) if not ffnr or t % (Nr + 1) == 0)
    n_sparse = S - n_dense
    dense_mode = {"base": "base", "ffnr": "base", "ep": "ep", "all": "ep"}[m]
    per_step = sysm.cond_layers == "per-step"
    fp = _footprints(model, cfg, not per_step)
    res = _residency(sysm, fp, ffnr)
    kinds = [("dense", dense_mode, n_dense)] + ([("sparse", m, n_sparse)] if n_sparse else [])
    tot = {"parts": {}, "macs": 0, "energy": dict.fromkeys(_ENERGY_PARTS, 0.0),
           **dict.fromkeys(_TIMES, 0.0)}
    bound_time = {"compute": 0.0, "global memory": 0.0, "off-chip": 0.0}
    per_block = []
    Wb = cfg.width / 8
    # the layers outside the blocks a step runs (the step conditioning and the condition
    # encoder too if per step)
    o_macs = model.other_macs + (model.cond_layers["macs"] if per_step else 0)
    o_params = model.other_params + (model.cond_layers["params"] if per_step else 0)
    o_wbytes = o_params * Wb
    # off chip, a step: the step's conditioning outputs, the spilled contexts' K / V
    cond_read = 0 if per_step else (res["cond_outputs"] * model.cond_outputs * COND_OUT_BYTES
                                    + res["context_kv"] * fp["context_kv"])
    for it_kind, bm, n_it in kinds:
        if n_it == 0:
            continue
        cyc = mem_cyc = epre_cyc = 0.0
        act = {k: 0.0 for k in ("useful_macs", "shift_adds", "sram_bytes", "gm_bytes",
                                "weight_bytes", "act_bytes", "cache_bytes", "cfse_elements")}
        bkw = dict(seed=seed, bw=sysm.gm_bytes_per_cycle, dataflow=sysm.dataflow,
                   reuse_dense=ffnr and it_kind == "dense", s=model.s, k=model.k,
                   q_th=model.q_th, masks_kind=masks_kind, ep_key_corr=ep_key_corr,
                   epre_levers=sysm.epre_levers, context_kv=per_step)
        other_cyc = o_macs / (cfg.peak_macs * sysm.dscs)

        def off_bytes_of(weight_bytes, act_bytes, cache_bytes):
            """Off-chip bytes of an iteration whose blocks move these bytes (the caches'
            in a sparse one: a dense iteration writes every cache)."""
            cache_io = cache_bytes if it_kind == "sparse" else (
                fp["ffnr_caches"] if ffnr else 0.0)
            return (res["weights"] * (weight_bytes + o_wbytes)
                    + res["ffnr_caches"] * cache_io + res["activations"] * act_bytes
                    + cond_read)

        def iter_time(ch):
            """max(on-chip, off-chip) cycles of an iteration of the per-block choices."""
            on = other_cyc + sum(blk.count * o["cycles"] for blk, _, o in ch)
            off = off_bytes_of(*(sum(blk.count * o[k] for blk, _, o in ch)
                                 for k in ("weight_bytes", "act_bytes", "cache_bytes")))
            return (max(on, off / (sysm.offchip_gb_per_s * 1e9 / sysm.hz)), on)

        choice = None
        for pm, pres, off_first, ss in _policies(sysm, bm, res, ep_per_block):
            ch = []
            for blk in model.blocks:
                if progress:
                    progress(f"{model.name} {mode}: {blk.name} ({it_kind})")
                r, o = best_block(ss, blk, pm, split_heads, ep_per_block, pres, off_first,
                                  **bkw)
                ch.append((blk, r, o))
            if choice is None or iter_time(ch) < iter_time(choice):
                choice = ch
        for blk, r, o in choice:
            cyc += blk.count * o["cycles"]
            for kk, v in o["parts"].items():
                tot["parts"][kk] = tot["parts"].get(kk, 0.0) + n_it * blk.count * v / sysm.hz
            epre_cyc += blk.count * o["epre_cycles"]
            mem_cyc += blk.count * o["memory_bound_cycles"]
            for kk in act:
                act[kk] += blk.count * o[kk]
            per_block.append({"block": blk.name, "iteration": it_kind, "mode": r["mode"],
                              "count": blk.count, "batch": blk.batch, "T": blk.T, "d": blk.d,
                              "heads": blk.heads, "ffn": blk.ffn,
                              "cycles_per_instance": o["cycles"],
                              "core_cycles_1core": o["core_cycles"],
                              "useful_macs": o["useful_macs"],
                              "ffn_sparsity": r["ffn_sparsity"],
                              "attn_split": r["attn_split"], "epre_keys": r.get("epre_keys"),
                              "ep_sub_rows": (r["sub_rows"][0] if r.get("sub_rows")
                                              and r["mode"] in NO_EP else None)})
        # layers outside transformer blocks: dense, at peak on all cores [choice]
        onchip = (cyc + other_cyc) / sysm.hz
        off_bytes = off_bytes_of(act["weight_bytes"], act["act_bytes"], act["cache_bytes"])
        off_s = off_bytes / (sysm.offchip_gb_per_s * 1e9)
        lat = max(onchip, off_s)
        # projection (not the per-core model): EPRE fully overlapped with the SDUE
        tot["latency_epre_hidden_s"] += n_it * max(onchip - epre_cyc / sysm.hz, off_s)
        if off_s > onchip:
            bound_time["off-chip"] += n_it * lat
        elif mem_cyc > cyc / 2:
            bound_time["global memory"] += n_it * lat
        else:
            bound_time["compute"] += n_it * lat
        macs = act["useful_macs"] + o_macs
        _add_energy(tot["energy"], sysm, n_it, act, macs, _outside_sram_bytes(cfg, o_macs),
                    o_wbytes, off_bytes, lat)
        tot["latency_s"] += n_it * lat
        tot["onchip_s"] += n_it * onchip
        tot["offchip_s"] += n_it * off_s
        tot["macs"] += n_it * macs
        tot["outside_s"] += n_it * other_cyc / sysm.hz
        tot["parts"]["outside"] = tot["parts"].get("outside", 0.0) + n_it * other_cyc / sysm.hz
    cond = None if per_step else _cond_once(sysm, model, res, tot, bound_time)
    energy_j = sum(tot["energy"].values()) * 1e-12
    lat = tot["latency_s"]
    gpu = gpu_estimate(model, sysm.gpu, sysm.cond_layers)
    peak = cfg.peak_macs * sysm.dscs * sysm.hz
    return {"latency_s": lat, "energy_j": energy_j,
            "energy_breakdown_j": {k: v * 1e-12 for k, v in tot["energy"].items()},
            "speedup_vs_gpu": gpu["latency_s"] / lat,
            "energy_eff_vs_gpu": gpu["energy_j"] / energy_j,
            "utilization": tot["macs"] / (peak * lat) if lat else 0.0,
            "bound": max(bound_time, key=bound_time.get),
            "bound_time_s": bound_time, "onchip_s": tot["onchip_s"],
            "offchip_s": tot["offchip_s"], "macs": tot["macs"],
            # on-chip time by part (sums to onchip_s): qkv, attention, o_proj, cross, fc1,
            # fc2, cfse (exposed), epre (exposed), outside (layers outside the blocks)
            "time_by_part_s": tot["parts"],
            "projection_epre_hidden": {
                "latency_s": tot["latency_epre_hidden_s"],
                "speedup_vs_gpu": gpu["latency_s"] / tot["latency_epre_hidden_s"]},
            "gpu": gpu,
            # layers outside transformer blocks (dense), reported separately; included in
            # the totals above
            "outside_blocks": {"macs_per_iteration": o_macs,
                               "weight_params": o_params,
                               "onchip_s": tot["outside_s"],
                               "mac_energy_j": S * o_macs * ENERGY["mac_int12"] * 1e-12,
                               "step_conditioning": _step_conditioning_json(sysm, model,
                                                                            cond)},
            "iterations": {"total": S, "dense": n_dense, "sparse": n_sparse},
            "offchip_fraction": res, "footprint_bytes": fp, "blocks": per_block}


def _policies(sysm: System, bm: str, res: dict, ep_per_block: bool) -> list:
    """The static schedule's per-block policies an iteration tries, keeping the fastest
    [choice]: (mode, residency, off-chip first, system) for per-block on-chip cycles,
    per-block max(on, off-chip), and per-block off-chip first (an iteration bound by the sum
    of the blocks' off-chip traffic); in EP modes each with and without EPRE sub-runs (their
    extra K_h reads can make an iteration off-chip-bound), and no EP anywhere, so that EP
    is never slower than the mode without it."""
    sub_sys = [sysm] + ([replace(sysm, epre_sub_runs="off")]
                        if bm in NO_EP and sysm.epre_sub_runs != "off" else [])
    out = [(bm, pres, off_first, ss) for ss in sub_sys
           for pres, off_first in ((None, False), (res, False), (res, True))]
    if bm in NO_EP and ep_per_block:
        out.append((NO_EP[bm], None, False, sysm))
    return out


def _step_conditioning_json(sysm: System, model: Model, once) -> dict:
    """``outside_blocks.step_conditioning`` of :func:`evaluate_model`'s result."""
    return {"schedule": sysm.cond_layers, "macs_per_step": model.cond_macs,
            "weight_params": model.cond_params, "outputs_per_step": model.cond_outputs,
            "context_kv": context_kv_work(model),
            "condition_encoder": {"macs": model.enc_macs, "weight_params": model.enc_params},
            "once": once}


def _add_energy(e: dict, sysm: System, n_it: int, act: dict, macs: float, sram_extra: float,
                gm_extra: float, off_bytes: float, lat: float) -> None:
    """Add ``n_it`` iterations' energy (pJ) to ``e``: the blocks' activity ``act`` plus the
    outside layers' ``macs``, SRAM and global-memory bytes, the off-chip bytes, leakage."""
    cfg = sysm.cfg
    e["mac"] += n_it * macs * ENERGY["mac_int12"]
    e["shift_add"] += n_it * act["shift_adds"] * ENERGY["shift_add"]
    local = (cfg.imem_depth * cfg.width / 8 + cfg.wmem_depth * cfg.width / 8) / 2
    e["sram"] += n_it * (act["sram_bytes"] + sram_extra) * sram_pj_per_byte(local)
    e["gm"] += n_it * (act["gm_bytes"] + gm_extra) * ENERGY["gm_byte"]
    e["offchip"] += n_it * off_bytes * sysm.offchip_pj_per_byte
    e["cfse"] += n_it * act["cfse_elements"] * ENERGY["cfse_element"]
    e["leakage"] += n_it * lat * sysm.leak_w * 1e12


def _outside_sram_bytes(cfg: Config, macs: float) -> float:
    """Local SRAM bytes of ``macs`` of the layers outside the blocks (dense GEMMs at peak)."""
    return 3 * macs / cfg.lanes * (cfg.width / 8) / 4


def _cond_once(sysm: System, model: Model, res: dict, tot: dict, bound_time: dict):
    """What ``cond_layers = "batched"`` runs before the first step: the step conditioning of
    every step (one GEMM of S x ``cond_macs`` MACs), the condition encoder and the
    contexts' K / V projections (once: the condition does not change;
    :func:`context_kv_work`; the encoder's outputs feed them and the step conditioning
    within the pass). Their outputs stay in the
    global memory after the activations and the FFN-Reuse caches (:func:`_residency`); the
    fraction that does not fit is written off chip and read back every step (its share: a
    step's conditioning, all the K / V). Dense at the cores' peak, their weights read once
    (off chip the fraction of ``once_weights`` not resident, through the global memory).
    Adds the pass to
    ``tot`` and ``bound_time`` and returns its figures (None if the model has neither)."""
    once = _once_work(model)
    ctx, macs = once["context_kv"], once["macs"]
    if not macs:
        return None
    cfg = sysm.cfg
    Wb = cfg.width / 8
    w_bytes = once["params"] * Wb
    on_s = macs / (cfg.peak_macs * sysm.dscs) / sysm.hz
    off_bytes = res["once_weights"] * w_bytes \
        + res["cond_outputs"] * model.iterations * model.cond_outputs * COND_OUT_BYTES \
        + res["context_kv"] * ctx["outputs"] * Wb
    off_s = off_bytes / (sysm.offchip_gb_per_s * 1e9)
    lat = max(on_s, off_s)
    bound_time["off-chip" if off_s > on_s else "compute"] += lat
    none = dict.fromkeys(("shift_adds", "sram_bytes", "gm_bytes", "cfse_elements"), 0.0)
    _add_energy(tot["energy"], sysm, 1, none, macs, _outside_sram_bytes(cfg, macs),
                w_bytes + ctx["outputs"] * Wb, off_bytes, lat)
    for k, v in (("latency_s", lat), ("onchip_s", on_s), ("offchip_s", off_s),
                 ("macs", macs), ("outside_s", on_s)):
        tot[k] += v
    tot["parts"]["outside"] = tot["parts"].get("outside", 0.0) + on_s
    return {"latency_s": lat, "onchip_s": on_s, "offchip_s": off_s, "offchip_bytes": off_bytes,
            "macs": macs, "context_kv_macs": ctx["macs"], "encoder_macs": model.enc_macs}


# ---- GPU roofline ---------------------------------------------------------------------------
def gpu_estimate(model: Model, gpu: str, cond_layers: str = SCHEDULES["cond_layers"][0]
                 ) -> dict:
    """Roofline *estimate* of one generation on ``gpu`` (dense: GPUs do not exploit the
    sparsity): per GEMM max(2 MACs / peak, (A + B + C bytes) / bandwidth); the layers outside
    the blocks as one GEMM of their MACs and weights; on the system's schedule
    (``cond_layers``) the step conditioning of every step at once, its outputs read back a
    step, the condition encoder and the contexts' K / V once (``batched``), or all of them
    every step; energy = power x time."""
    if cond_layers not in SCHEDULES["cond_layers"]:
        raise ExionError(f"cond_layers = {cond_layers!r} is invalid: must be one of "
                         f"{', '.join(SCHEDULES['cond_layers'])}")
    g = GPUS[gpu]
    be = g["bytes_per_el"]
    per_step = cond_layers == "per-step"
    t = once = 0.0

    def gemm(M, N, K, count=1):
        return count * max(2 * M * N * K / g["ops_per_s"],
                           (M * K + K * N + M * N) * be / g["bytes_per_s"])

    for b in model.blocks:
        T, d, F, H, B = b.T, b.d, b.ffn, b.heads, b.batch
        dh = b.d_head
        x = 0.0
        for _ in range(2 if b.self_attn2 else 1):
            x += gemm(B * T, 3 * d, d) + gemm(B * T, d, d)
            x += gemm(T, T, dh, B * H) + gemm(T, dh, T, B * H)
        if b.context is not None:
            Tc, dc = b.context
            kv = gemm(b.contexts * Tc, 2 * d, dc)    # the contexts' K / V
            x += gemm(B * T, d, d, 2) + (kv if per_step else 0.0)
            once += 0.0 if per_step else b.count * kv
            x += gemm(T, Tc, dh, B * H) + gemm(T, dh, Tc, B * H)
        x += gemm(B * T, F * (2 if b.geglu else 1), d) + gemm(B * T, d, F)
        t += b.count * x
    o_macs = model.other_macs + per_step * model.cond_layers["macs"]
    o_params = model.other_params + per_step * model.cond_layers["params"]
    t += max(2 * o_macs / g["ops_per_s"], o_params * be / g["bytes_per_s"])
    if not per_step:
        t += model.cond_outputs * be / g["bytes_per_s"]
    t *= model.iterations
    if not per_step and model.once_macs:
        once += max(2 * model.once_macs / g["ops_per_s"],
                    (model.cond_layers["params"] + model.iterations * model.cond_outputs)
                    * be / g["bytes_per_s"])
    t += once
    return {"gpu": g["name"], "latency_s": t, "energy_j": t * g["watts"],
            "estimate": "roofline (ideal: peak compute or full bandwidth per GEMM)"}

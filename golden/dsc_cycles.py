"""Cycle model of the DSC core (``hw/dsc.py``) running a descriptor program.

The core is sequential: per descriptor it fetches (``FETCH`` 1 cycle, ``FETCH_DATA`` 1 +
``desc_beats`` cycles: the read command, then one beat per cycle, ``DECODE`` 1 cycle), then
runs the descriptor's body. With a memory that never stalls (commands taken at once, read
data from the cycle after the command, a write response the cycle after a burst's last
beat -- ``sim/tb_dsc.py`` with ``stall = 0``):

==============  ============================================================================
op              body cycles
==============  ============================================================================
END             0 (``busy`` falls with ``DECODE``)
IMEM/GMEM/OMEM  ``count * per + 2`` (command, one beat per cycle, the last item's write);
_LOAD           1 if ``count == 0``. ``per`` = beats per item (:func:`item_beats`; a
                ``bcast`` OMEM_LOAD: ``obc``)
OMEM_STORE      :func:`omem_store_body`: ``2 + count * per_omem + 2`` (the first address's
                OMEM read and latch, every address's beats back to back -- the next
                address is read while the current one is sent --, the last response;
                with ``per_omem = 1`` each later address also takes a latch cycle);
                1 if ``count == 0``
GEMM            ``count * per_mask + 2`` while the engine takes the mask at full rate, then
                until the gemm engine is idle (at least 2 more cycles): the engine's own
                time, which this model *estimates* (:func:`gemm_estimate`) -- the gemm engine
                has no exact cycle model (``tests/test_gemm_rtl.py`` bounds it), so the DSC's
                exact figure is "everything but the engine", and RTL tests check it exactly
                with the engine's measured part substituted.
                Overlapped (``overlap`` set): the mask stream only (:func:`gemm_load`
                estimates it: ``count * per_mask + 2``); the engine then computes beside
                the next descriptors until the cycle a plain GEMM's body would end. The
                ``engine`` output is high from a GEMM's DECODE to that cycle: the bench
                measures both parts from it (``sim.dsc_program.gemm_bodies``).
GELU            :func:`gelu_body`: ``count * per_acc + 6 + per_word + 4`` (read, GELU unit
                and write overlap); 1 if ``count == 0``. Exact.
FFNR            :func:`ffnr_body`: DENSE (histogram, threshold), then MASK (dense) or
                DELTA (sparse); 1 if ``count == 0``. Exact on toy.
SOFTMAX,        :func:`row_body`: ``count * per_in + w * (1 + per_word) + fixed + 5``
LAYERNORM       (``w = ceil(n / L)`` words a row, ``fixed`` the unit's
                :func:`exion.golden.cfse_cycles.fixed_cycles`); 1 if ``count == 0``. Exact.
EPRE_XLOAD,     as the loads, ``per`` = ``eword`` (Le 16-bit containers); an EPRE_KLOAD
EPRE_KLOAD,     with ``kpack``: :func:`kload_packed_body` (key rows of ``ceil(d_head W /
EPRE_WLOAD      D)`` beats into the transpose buffer, each row block's Kh writes beside the
                next block's beats, the last block's writes), exact
EPRE            :func:`epre_body`: 1 + the EPRE's run + :data:`EPRE_FIXED`. Exact on toy.
                Overlapped (``overlap`` set): 1 (the hand-over); the run goes on beside
                the next descriptors and the EPRE is idle again ``1 + run`` cycles after
                the hand-over's cycle.
EPRE_STORE      :func:`epre_store_body`: ``count * emask +`` :data:`EPRE_STORE_FIXED` (the
                mask FIFO's rows through the output buffer, the last write response)
GMEM_EFILL      ``count + 1`` (one EPRE W-memory read a cycle, the last word's GMEM write;
                no memory beat); 0 if ``count == 0``
GELU_OMEM       :func:`gelu_omem_body`: ``count`` groups of L OMEM reads and R words through
                the GELU unit and the output buffer, simulated per cycle; exact
EPRE_KOMEM      :func:`komem_body`: per row block of R keys its ``glen`` = d_head OMEM
                reads, one capture cycle, then ``h_words`` Kh writes per key row of the
                block: ``d_head + 1 + rows h_words``; 0 if ``count == 0``; exact, no
                memory beat
OMEM_STORE      with ``ktee``: :func:`store_ktee_body`, the store's body or, if later, the
ktee             cycle after the last row block's keys are written into the Kh banks
==============  ============================================================================

**Interlock**: END, EPRE_XLOAD, EPRE_KLOAD, EPRE_KOMEM, EPRE_WLOAD, EPRE, EPRE_STORE, an
OMEM_STORE with ``ktee`` (its keys go into the Kh banks) and a GMEM_LOAD
with ``tee`` (its words also go to the EPRE's W memory; otherwise a plain GMEM_LOAD) stay in
DECODE while an overlapped EPRE run is busy or queued -- except an EPRE_WLOAD into a W
buffer neither run reads (``ubase`` in the other :func:`epre_w_half` words: the double
buffer), a queued EPRE (``k_given`` and ``k_wait``: only while the one-run slot is full),
an EPRE_STORE with ``kq`` (until the mask FIFO holds its rows, :data:`EPRE_ROWS_EARLY`
cycles before its run's EPRE is idle) and an OMEM_STORE with ``ktee`` and ``kq`` (until
its Kh buffer's last queued reader has ended); a queued run starts in the first idle cycle
of the EPRE after its hand-over and enters stage 2 the cycle after its stage 1 and its
keys (the cycle the tee's last Kh write is done) are both done (``_EpreTimeline``);
END, IMEM_LOAD, GMEM_LOAD, OMEM_LOAD, GEMM, OMEM_STORE, GELU_OMEM, GMEM_EFILL and EPRE_KOMEM
stay there
while an overlapped GEMM's engine time runs. Their time includes that wait. Every other
descriptor runs beside the EPRE and the engine at its own time. The run's ``cycles``
counter is the sum over its descriptors (END included), waits included.
"""

from __future__ import annotations

import math

from exion.config import CAU_COLS_PER_CYCLE, Config, index_bits
from exion.errors import ExionError

from .cfse_cycles import fixed_cycles, phase_latencies
from .cycles import epre_phase_cycles, epre_run_cycles, sdue_cycles
from .ffn_reuse import num_bins
from .ffnr_cycles import DEFAULT_P, HIST_LATENCY, SEARCH_FIXED

#: GELU + requant pipeline depth of the CFSE (hw/cfse.py ``GELU_LATENCY``; tests compare)
GELU_LATENCY = 6

__all__ = ["OPS", "item_beats", "desc_beats", "overhead", "descriptor_cycles",
           "gemm_estimate", "gelu_body", "row_body", "ffnr_body", "FFNR_FIXED", "epre_body",
           "epre_mask_bits", "epre_w_half", "EPRE_FIXED", "epre_run", "epre_store_body",
           "EPRE_STORE_FIXED",
           "EPRE_INTERLOCKED", "ENGINE_INTERLOCKED", "gemm_load", "gelu_omem_body",
           "omem_store_body",
           "GELU_OMEM_FIXED", "komem_body", "store_ktee_body", "kload_packed_body",
           "krow_beats", "kh_words",
           "program_cycles"]

#: op codes (hw/dsc.py's ``OPS``; tests/test_dsc_rtl.py checks they agree)
OPS = {"END": 0, "IMEM_LOAD": 1, "GMEM_LOAD": 2, "OMEM_LOAD": 3, "GEMM": 4, "OMEM_STORE": 5,
       "GELU": 6, "SOFTMAX": 7, "LAYERNORM": 8, "FFNR": 9, "EPRE_XLOAD": 10,
       "EPRE_WLOAD": 11, "EPRE": 12, "EPRE_STORE": 13, "GELU_OMEM": 14, "EPRE_KLOAD": 15,
       "GMEM_EFILL": 16, "EPRE_KOMEM": 17}
#: ops that wait in DECODE while an overlapped EPRE run is busy (hw/dsc.py)
EPRE_INTERLOCKED = ("END", "EPRE_XLOAD", "EPRE_WLOAD", "EPRE", "EPRE_STORE", "EPRE_KLOAD",
                    "EPRE_KOMEM")
#: ops that wait in DECODE while an overlapped GEMM's engine time runs (hw/dsc.py)
ENGINE_INTERLOCKED = ("END", "IMEM_LOAD", "GMEM_LOAD", "OMEM_LOAD", "GEMM", "OMEM_STORE",
                      "GELU_OMEM", "GMEM_EFILL", "EPRE_KOMEM")
_NAMES = {v: k for k, v in OPS.items()}


def item_beats(cfg: Config, bus_bits: int) -> dict:
    """Bus beats per item (hw/dsc.py ``item_beats``): an operand word (L 16-bit
    containers; ``oword``: packed W-bit, the IMEM / GMEM loads' item), an OMEM address (R
    A-bit results packed; ``obc``: one broadcast result),
    a mask beat (``hw.cau.mask_layout``
    with the runtime sort bit: R * cols_per_cycle cv bits, last, 16-bit block, ways, sort),
    an accumulator word (L 64-bit containers), a softmax word (L 16-bit logits + L keep
    bits)."""
    mbits = cfg.rows * CAU_COLS_PER_CYCLE + 1 + 16 + cfg.merge_ways.bit_length() + 1
    return {"word": math.ceil(16 * cfg.lanes / bus_bits),
            "oword": math.ceil(cfg.width * cfg.lanes / bus_bits),
            "omem": math.ceil(cfg.acc_width * cfg.rows / bus_bits),
            "obc": math.ceil(cfg.acc_width / bus_bits),
            "mask": math.ceil(mbits / bus_bits),
            "acc": math.ceil(64 * cfg.lanes / bus_bits),
            "smx": math.ceil(17 * cfg.lanes / bus_bits),
            "eword": math.ceil(16 * cfg.epre_lane_count / bus_bits),
            "emask": math.ceil(epre_mask_bits(cfg) / bus_bits),
            "krow": krow_beats(cfg, cfg.dsc_epre_dims[2], bus_bits)}


def krow_beats(cfg: Config, d_head: int, bus_bits: int) -> int:
    """Beats of one EPRE_KLOAD ``kpack`` key row: d_head W-bit elements packed from bit 0
    (hw/dsc.py ``kl_per``)."""
    return math.ceil(int(d_head) * cfg.width / bus_bits)


def kh_words(cfg: Config, d_head: int) -> int:
    """Kh-bank words of one key of ``d_head`` elements: ``ceil(d_head / Le)`` (a descriptor's
    ``h_words`` as the host writes it)."""
    return -(-int(d_head) // cfg.epre_lane_count)


def kload_packed_body(n_keys: int, per: int, h_words: int, rows: int) -> int:
    """Body of an EPRE_KLOAD with ``kpack`` (issue 19, 2026-12-07): ``n_keys`` key rows of
    ``per`` beats each (``ceil(d_head W / D)``) into the transpose buffer, each row block
    (``rows`` = R keys, or the last keys) written into the Kh banks, ``h_words`` words a
    key, one a cycle, from the cycle after its last row is taken. Simulated per key with a
    memory that never stalls: the command in cycle 0, beats from cycle 1; key i is ready
    the cycle after its last beat (the next key's beats start the cycle it is taken); a
    row r that does not end its block is taken once the previous block's writes have left
    row r (``start + 1 + min(r + 1, n_prev) h_words``), a block's last row once they are
    all done (``start + 1 + n_prev h_words``); the descriptor ends the cycle after the last
    block's last write. 1 if ``n_keys == 0``. With ``per > h_words`` every key is a row
    block of its own (written while the next key's beats arrive): a key costs ``per``
    and the descriptor ends ``h_words + 1`` cycles after the last key is taken."""
    if n_keys <= 0:
        return 1
    if per > h_words:
        rows = 1
    start, n_prev = None, 0          # the emission of the previous block: start, rows
    ready, left, r = per + 1, n_keys, 0
    t = 0
    for _ in range(n_keys):
        closing = r + 1 == rows or r + 1 == left
        t = ready
        if start is not None:
            need = n_prev if closing else min(r + 1, n_prev)
            t = max(t, start + 1 + need * h_words)
        ready = t + per
        if closing:
            start, n_prev, left, r = t, r + 1, left - (r + 1), 0
        else:
            r += 1
    return t + 1 + n_prev * h_words


def epre_w_half(cfg: Config) -> int:
    """W-memory words of one of the DSC EPRE's two W buffers (``hw.epre.EpreSizes.w_half``:
    Wq^T then Wk^T of one head, ``2 dh_max ceil(d_max / Le)`` of ``cfg.dsc_epre_dims``;
    tests/test_dsc_rtl.py checks they agree). A run reads the buffer its ``w_buf`` field
    names; an EPRE_WLOAD into the other runs beside it (:func:`program_cycles`)."""
    _, d_max, dh_max, _, _ = cfg.dsc_epre_dims
    return 2 * dh_max * math.ceil(d_max / cfg.epre_lane_count)


def epre_mask_bits(cfg: Config) -> int:
    """Bits of the DSC EPRE's mask item (``hw.epre.mask_layout``): row index, dominant flag,
    ``n_max`` mask bits (``cfg.dsc_epre_dims``)."""
    n_max = cfg.dsc_epre_dims[0]
    return index_bits(n_max) + 1 + n_max


def epre_body(cfg: Config, d: dict) -> int:
    """Body of an EPRE descriptor (``d["ep"]``: the run's fields, as the host builder
    annotates them): one cycle handing the run over, the EPRE's own run
    (:func:`exion.golden.cycles.epre_run_cycles` with the units / selectors of
    ``cfg.dsc_epre_dims``, insertion selectors whatever ``cfg.epre_selector_kind``), then
    :data:`EPRE_FIXED` cycles (the last mask item's beat behind the output buffer, the
    write response, the FSM's idle check; measured on toy). The selector emits a mask row
    at most every cycle and the output buffer takes an item every ``emask + 1`` cycles;
    with ``S < U`` (toy) rows come ``2 N_k + SEL_FIXED`` cycles apart, so the output never
    back-pressures the EPRE. Exact on toy; 1 if ``count == 0``."""
    if int(d.get("count", 0)) == 0:
        return 1
    if int(d.get("overlap", 0)):
        return 1
    return 1 + epre_run(cfg, d) + EPRE_FIXED


def epre_run(cfg: Config, d: dict) -> int:
    """Busy cycles of the EPRE run an EPRE descriptor starts (``d["ep"]``: the run's
    fields): :func:`exion.golden.cycles.epre_run_cycles` with the DSC EPRE's units and
    selectors (insertion selectors), exact keys when the run has ``k_given``."""
    return epre_run_parts(cfg, d)[1]


def epre_run_parts(cfg: Config, d: dict) -> tuple[int, int]:
    """(stage 1's cycles, all busy cycles) of the run :func:`epre_run` counts: a ``k_wait``
    run leaves stage 1 ``1 + stage 1`` cycles after it is taken (or the cycle after its
    keys are in, if later: ``KWAIT``) and is busy ``run - stage 1`` cycles more."""
    ep = d["ep"]
    le = cfg.epre_lane_count
    _, _, _, units, selectors = cfg.dsc_epre_dims
    args = (cfg, int(ep["n_q"]), int(ep["n_k"]), int(ep["d_words"]) * le, int(ep["d_head"]),
            units, le, selectors, "insertion")
    kg = bool(int(ep.get("k_given", 0)))
    return (epre_phase_cycles(*args, k_given=kg)["stage1"],
            epre_run_cycles(*args, k_given=kg))


#: constant part of an EPRE body beyond the hand-over and the run (see :func:`epre_body`)
EPRE_FIXED = 2

#: constant part of an EPRE_STORE body beyond its beats (see :func:`epre_store_body`)
EPRE_STORE_FIXED = 3


def epre_store_body(cfg: Config, count: int, bus_bits: int) -> int:
    """Body of an EPRE_STORE: ``count`` mask rows, all in the FIFO (the interlock waited for
    the run), through the output buffer at ``emask`` beats each, then the last write
    response (:data:`EPRE_STORE_FIXED`). 1 if ``count == 0``."""
    if count == 0:
        return 1
    return count * item_beats(cfg, bus_bits)["emask"] + EPRE_STORE_FIXED


#: cycles of a GELU_OMEM body after its last output beat (the write response, the FSM's
#: check): measured on toy, checked on every test and on exion16
GELU_OMEM_FIXED = 2


def gelu_omem_body(cfg: Config, count: int, bus_bits: int) -> int:
    """Body of a GELU_OMEM descriptor (``hw/dsc.py``): ``count`` groups, each L OMEM reads
    (one a cycle; GO_READ), one cycle for the last column's capture (GO_LAST), then R
    words offered to the GELU unit (GO_EMIT: one per cycle the unit advances); the unit's
    ``GELU_LATENCY``-stage pipeline stalls as a whole while its output is valid and not
    taken; its words go through the two-item output buffer at ``per_word`` beats each
    (``hw.dsc._out_stream``: ready = the second item free). Simulated per cycle, the
    register updates in the RTL's order; :data:`GELU_OMEM_FIXED` cycles follow the last
    beat. 1 if ``count == 0``."""
    if count == 0:
        return 1
    R, L = cfg.rows, cfg.lanes
    n_out = count * R
    fsm, i, r, k = "read", 0, 0, 0
    pipe = [False] * GELU_LATENCY
    out, written = _OutBuffer(item_beats(cfg, bus_bits)["word"]), 0
    c = 0
    while True:
        yv = pipe[-1]
        take = yv and out.ready
        adv = take or not yv                   # the unit's output register empty or taken
        if out.step(take):
            written += 1
            if written == n_out:
                return c + 1 + GELU_OMEM_FIXED
        # the GELU unit's pipeline and the group FSM
        inp = fsm == "emit"
        if adv:
            pipe = [inp] + pipe[:-1]
        if fsm == "read":
            i += 1
            if i == L:
                fsm = "last"
        elif fsm == "last":
            fsm = "emit"
        elif fsm == "emit" and adv:
            r += 1
            if r == R:
                r, i, k = 0, 0, k + 1
                fsm = "drain" if k == count else "read"
        c += 1


def komem_body(cfg: Config, count: int, glen: int, h_words: int | None = None) -> int:
    """Body of an EPRE_KOMEM descriptor (``hw/dsc.py``): ``count`` key rows in row blocks of
    R; per row block one OMEM read a column of its ``glen`` = d_head, one cycle for the last
    column's capture, then ``h_words`` Kh-bank writes a key row (the descriptor's field, as
    the RTL takes it; default ``ceil(d_head / Le)``, what the host writes)."""
    R = cfg.rows
    hw = kh_words(cfg, glen) if h_words is None else h_words
    return sum(glen + 1 + min(R, count - t0) * hw for t0 in range(0, max(0, count), R))


def store_ktee_body(cfg: Config, d: dict, per_omem: int) -> int:
    """Body of an OMEM_STORE with ``ktee`` (``hw/dsc.py``): the store's
    (:func:`omem_store_body`), unless the Kh writes of the last row block's keys end later.
    Address k is latched ``2 + k max(per_omem, 2)`` cycles after DECODE; a latched column
    of K_h's window (``kt_c0 .. + glen - 1`` of each row block's ``kt_ncols``) goes into the
    transpose buffer, and the window's last one starts the block's ``min(R, keys left) *
    h_words`` Kh writes, one a cycle from the next cycle. The RTL holds a window column's
    latch while the previous block's keys are still written; the model does not, so it
    refuses a store where that would happen (the host spaces the windows)."""
    base, free = _ktee_times(cfg, d, per_omem)
    return max(base, free)


def _ktee_times(cfg: Config, d: dict, per_omem: int) -> tuple[int, int]:
    """(the plain store's body, the first cycle after DECODE its last Kh write is done) of
    an OMEM_STORE (:func:`store_ktee_body`; 0 for the second without ``ktee``)."""
    n = int(d.get("count", 0))
    base = omem_store_body(n, per_omem)
    if not int(d.get("ktee", 0)) or n == 0:
        return base, 0
    R = cfg.rows
    ncols, c0, dh = int(d["kt_ncols"]), int(d["kt_c0"]), int(d["glen"])
    left, hw = int(d["n_k"]), int(d["h_words"])
    step = max(per_omem, 2)
    free = 0                  # the first cycle the Kh writes are done
    for k in range(n):
        col = k % ncols
        if not c0 <= col < c0 + dh:
            continue
        t = 2 + k * step
        if t < free:
            raise ExionError(f"OMEM_STORE ktee: row block {k // ncols}'s K_h window comes "
                             f"{free - t} cycles before the previous block's keys are "
                             f"written (kt_ncols = {ncols}, d_head = {dh}, h_words = {hw})")
        if col == c0 + dh - 1 and left > 0:
            rows = min(R, left)
            left -= rows
            free = t + 1 + rows * hw
    return base, free


def desc_beats(bus_bits: int) -> int:
    return max(1, 256 // bus_bits)


def overhead(bus_bits: int) -> int:
    """Fetch and decode cycles of every descriptor."""
    return 3 + desc_beats(bus_bits)


def gelu_body(cfg: Config, count: int, bus_bits: int) -> int:
    """Body of a GELU descriptor (``count`` accumulator words in, operand words out).

    The read command goes out in the body's first cycle, beats arrive one per cycle from the
    next, so the last word is assembled after ``count * per_acc`` beats and enters the GELU
    unit one cycle later; it leaves ``GELU_LATENCY`` (6) cycles after that into the output
    buffer, whose ``per_word`` beats go out from the next cycle; the write response follows
    the last beat by one cycle, the FSM sees it one cycle later and leaves the next: in all
    ``count * per_acc + 6 + per_word + 4``. Exact while the input is the bottleneck
    (``per_acc >= per_word + 1``: the output buffer takes a word every ``per_word + 1``
    cycles), which holds for every L >= 2; 1 if ``count == 0``."""
    ib = item_beats(cfg, bus_bits)
    if count == 0:
        return 1
    if ib["acc"] < ib["word"] + 1:
        raise ExionError(f"gelu_body: the model needs per_acc >= per_word + 1 (L = "
                         f"{cfg.lanes}, bus {bus_bits} bits)")
    return count * ib["acc"] + GELU_LATENCY + ib["word"] + 4


def row_body(cfg: Config, op: str, count: int, n: int, bus_bits: int) -> int:
    """Body of a SOFTMAX or LAYERNORM descriptor: ``count`` input words (rows of ``w =
    ceil(n / L)`` words; ``per_in`` beats each: ``smx`` for softmax, ``word`` for layer
    norm) in, as many operand words (``per_word`` beats) out.

    As :func:`gelu_body`, the last word enters the unit ``count * per_in + 1`` cycles into
    the body. Without back-pressure the unit passes its last row in three phases
    (``docs/cfse.md``) and its last output leaves ``w + fixed + 1 + (w - 1) * per_word``
    cycles after the last input (the last row's C pass at one word per ``per_word`` cycles,
    the rate at which the output buffer empties), then ``per_word`` beats and the same 4
    cycles of write response as GELU: ``count * per_in + w * (1 + per_word) + fixed + 5``.
    That closed form misses one effect (exion16, found by its first run): phase C's
    pipeline (``pc`` stages from the issue to the output register) stalls as a whole
    while the output buffer is full, so the gaps between rows inside it are not squeezed
    out; with several beats per word and rows of >= 3 words the last row leaves up to
    ``(w - 2) * 6`` cycles later. :func:`_row_c_pass` simulates phase C and the output
    buffer per cycle (rows offered every ``w * per_in`` cycles, B never stalls) and the
    closed form of a single row without back-pressure fixes its offset. 1 if ``count ==
    0``. Exact for rows that fit the unit (``n <= cfg.dsc_row_max``; the DSC does not
    restream)."""
    if count == 0:
        return 1
    ib = item_beats(cfg, bus_bits)
    fn = {"SOFTMAX": "softmax", "LAYERNORM": "layernorm"}[op]
    per_in = ib["smx"] if fn == "softmax" else ib["word"]
    w = -(-int(n) // cfg.lanes)
    depth = phase_latencies(fn)["pc"]
    one_row = w * per_in + 2 * w + fixed_cycles(fn) + 5      # closed form: w words, per_word 1
    offset = one_row - _row_c_pass(w, w, per_in, 1, depth)
    return _row_c_pass(int(count), w, per_in, ib["word"], depth) + offset


class _OutBuffer:
    """The DSC's two-item output buffer (``hw.dsc._out_stream``) on a memory that takes a
    beat every cycle: ``ready`` (the unit may hand over an item) while the second item is
    free; ``per_word`` beats an item, one a cycle."""

    def __init__(self, per_word: int):
        self.per = per_word
        self.rvalid = self.qvalid = False
        self.rbeat = 0

    @property
    def ready(self) -> bool:
        return not self.qvalid

    def step(self, take: bool) -> bool:
        """One cycle, ``take``: the unit hands over an item now; True if an item's last
        beat goes out in this cycle."""
        last = self.rvalid and self.rbeat == self.per - 1
        self.rbeat += int(self.rvalid)
        if not self.rvalid or last:
            if self.qvalid or take:
                self.rvalid, self.rbeat, self.qvalid = True, 0, False
            else:
                self.rvalid = False
        elif take:
            self.qvalid = True
        return last


def _row_c_pass(count: int, w: int, per_in: int, per_word: int, depth: int) -> int:
    """Cycle of the last output beat of a row op, up to a constant: row r's scalars reach
    phase C at ``(r + 1) * w * per_in``; C pops a row (one cycle when idle, none between
    queued rows) and issues a word per advance into a ``depth``-stage pipeline that
    advances when its output register is empty or taken; the DSC's two-item output buffer
    (``hw.dsc._out_stream``: ``ready`` = the second item free) sends ``per_word`` beats per
    item, one a cycle."""
    rows = -(-count // w)
    pipe = [False] * depth
    idle, nxt, word, c = True, 0, 0, 0
    out, written = _OutBuffer(per_word), 0
    while True:
        yv = pipe[-1]
        take = yv and out.ready
        adv = take or not yv                   # output register empty or taken
        if out.step(take):
            written += 1
            if written == count:
                return c
        if adv:
            ready = nxt < rows and (nxt + 1) * w * per_in <= c
            issue = not idle
            if idle:
                if ready:
                    idle, nxt, word = False, nxt + 1, 0
            elif word == w - 1:
                if ready:
                    nxt, word = nxt + 1, 0
                else:
                    idle = True
            else:
                word += 1
            pipe = [issue] + pipe[:-1]
        c += 1


def ffnr_body(cfg: Config, d: dict, bus_bits: int) -> int:
    """Body of an FFNR descriptor (``count`` = T * NW operand words of H, or of H_d).

    Both kinds start with the unit's DENSE command: ``count * per_word`` cycles of input
    (one word per ``per_word`` beats), then the histogram pipeline and the threshold search
    (``HIST_LATENCY + bins + SEARCH_FIXED``, :mod:`exion.golden.ffnr_cycles`). A dense
    descriptor then runs MASK: ``aux`` mask items from the emitter, one per ``q = P / Q``
    cycles (``Q = min(P, L)``), written at ``per_mask`` beats each behind the two-item
    output buffer: the last beat leaves ``max(aux * q + per_mask, q + aux * per_mask)``
    cycles in (emitter-bound, or buffer-bound after the first item); a sparse one runs DELTA: ``count`` H' words in and delta words out
    at one per ``per_word`` cycles, then the last word's beats. The remaining constant
    (:data:`FFNR_FIXED`: two command hand-overs, the read latency, the unit's idle detect,
    the write response; 9 dense, 10 sparse: DELTA's extra H_d read stage) was measured on
    toy and holds for every shape tested there and for 32- and 128-bit buses
    (``tests/test_dsc_rtl.py``, the latter in Amaranth's simulator); 1 if ``count == 0``."""
    n = int(d.get("count", 0))
    if n == 0:
        return 1
    ib = item_beats(cfg, bus_bits)
    dense = n * ib["word"] + HIST_LATENCY + num_bins(1 << (cfg.width - 1)) + SEARCH_FIXED
    if d.get("sparse"):
        return dense + n * ib["word"] + ib["word"] + FFNR_FIXED["sparse"]
    q, pm, nm = DEFAULT_P // min(DEFAULT_P, cfg.lanes), ib["mask"], int(d.get("aux", 0))
    return dense + max(nm * q + pm, q + nm * pm) + FFNR_FIXED["dense"]


#: constant part of an FFNR body (see :func:`ffnr_body`)
FFNR_FIXED = {"dense": 9, "sparse": 10}


def omem_store_body(count: int, per_omem: int) -> int:
    """Body of an OMEM_STORE of ``count`` addresses of ``per_omem`` beats: ST_ADDR and
    ST_LATCH for the first address, the beats of every address back to back (the core reads
    the next address while it sends the current one, ``hw.dsc`` ``st_pre``; an address of
    one beat is sent before that read is back, so each later one passes ST_LATCH again),
    then the drain of the last write response (2). 1 if ``count == 0``."""
    if count == 0:
        return 1
    return 2 + count * per_omem + (count - 1) * int(per_omem == 1) + 2


def gemm_estimate(cfg: Config, d: dict, bus_bits: int) -> int:
    """Estimated body of a GEMM descriptor: the mask load, then the SDUE's passes
    (``d["passes"]`` passes of ``kwords`` words, annotated by the host builder) after the
    first pass's weight fetch."""
    ib = item_beats(cfg, bus_bits)
    load = d["count"] * ib["mask"] + 2
    passes = int(d.get("passes", 0))
    kw = int(d["kwords"])
    engine = sdue_cycles(cfg, [kw] * passes) + kw if passes else 0
    return max(load + 2, engine + 4)


def gemm_load(cfg: Config, d: dict, bus_bits: int) -> int:
    """Estimated body of an overlapped GEMM descriptor: its mask stream, ``count *
    per_mask + 2`` (as a load: command, one beat per cycle, the last item into the
    engine), while the engine takes the mask at full rate."""
    return int(d["count"]) * item_beats(cfg, bus_bits)["mask"] + 2


def descriptor_cycles(cfg: Config, d: dict, bus_bits: int = 64,
                      gemm_body: int | None = None) -> int:
    """Cycles of one descriptor (fetch included, interlock waits not); ``gemm_body``: a
    GEMM body measured elsewhere (an overlapped GEMM's: its mask stream), else
    :func:`gemm_estimate` (:func:`gemm_load` for an overlapped GEMM)."""
    op = _NAMES.get(int(d["op"]))
    ib = item_beats(cfg, bus_bits)
    n = int(d.get("count", 0))
    if op == "END":
        body = 0
    elif op in ("IMEM_LOAD", "GMEM_LOAD", "OMEM_LOAD", "EPRE_XLOAD", "EPRE_WLOAD",
                "EPRE_KLOAD"):
        per = {"OMEM_LOAD": ib["obc"] if int(d.get("bcast", 0)) else ib["omem"],
               "EPRE_XLOAD": ib["eword"], "EPRE_KLOAD": ib["eword"],
               "EPRE_WLOAD": ib["eword"]}.get(op, ib["oword"])
        if op == "EPRE_KLOAD" and int(d.get("kpack", 0)):
            body = kload_packed_body(n, krow_beats(cfg, d["glen"], bus_bits),
                                     int(d["h_words"]), cfg.rows)
        else:
            body = n * per + 2 if n else 1
    elif op == "GMEM_EFILL":
        body = n + 1 if n else 0      # one W read a cycle, the last word's GMEM write
    elif op == "OMEM_STORE":
        body = store_ktee_body(cfg, d, ib["omem"])
    elif op == "GEMM" and int(d.get("overlap", 0)) and gemm_body is None:
        body = gemm_load(cfg, d, bus_bits)
    elif op == "GEMM":
        body = gemm_estimate(cfg, d, bus_bits) if gemm_body is None else gemm_body
    elif op == "GELU":
        body = gelu_body(cfg, n, bus_bits)
    elif op == "GELU_OMEM":
        body = gelu_omem_body(cfg, n, bus_bits)
    elif op == "EPRE_KOMEM":
        body = komem_body(cfg, n, int(d.get("glen", 0)),
                          int(d["h_words"]) if "h_words" in d else None)
    elif op in ("SOFTMAX", "LAYERNORM"):
        body = row_body(cfg, op, n, int(d.get("n", 0)), bus_bits)
    elif op == "FFNR":
        body = ffnr_body(cfg, d, bus_bits)
    elif op == "EPRE":
        body = epre_body(cfg, d)
    elif op == "EPRE_STORE":
        body = epre_store_body(cfg, n, bus_bits)
    else:
        body = 0     # the core stops with bad_op in DECODE
    return overhead(bus_bits) + body


#: an EPRE_STORE with ``kq`` leaves DECODE this many cycles before its run's EPRE is idle
#: (its last row is in the mask FIFO; measured on toy and exion16)
EPRE_ROWS_EARLY = 1


class _EpreTimeline:
    """The DSC's EPRE runs in program order (``hw/dsc.py``): a run handed over directly
    (``overlap``) starts in its hand-over cycle; a queued one (``k_given`` and ``k_wait``)
    sits in the one-run slot from its hand-over cycle and is taken in the first cycle the
    EPRE is idle; a ``k_wait`` run enters stage 2 the cycle after both its stage 1 and
    its keys (``full`` of its Kh buffer, set by a ``kq`` OMEM_STORE's last key) are done;
    a queued run with ``k_hold`` (a sub-run) leaves the buffer full for the next run on it.
    ``end`` = the first idle cycle after a run."""

    def __init__(self, cfg: Config):
        self.cfg, self.runs, self.stored, self.full = cfg, [], 0, {}

    def add(self, hand: int, d: dict) -> int:
        ep = d.get("ep", {})
        s1, run = epre_run_parts(self.cfg, d)
        q = bool(int(ep.get("k_given", 0))) and bool(int(ep.get("k_wait", 0)))
        kb = int(ep.get("k_buf", 0))
        hold = q and bool(int(ep.get("k_hold", 0)))
        kappa = self.full.pop(kb, None) if q else 0
        if hold and kappa is not None:
            self.full[kb] = kappa          # the next sub-run finds the keys in
        self.runs.append({"h": hand, "q": q, "wb": int(ep.get("w_buf", 0)), "kb": kb,
                          "s1": s1, "run": run, "hold": hold, "kappa": kappa})
        return run

    def _resolve(self):
        prev = None
        for r in self.runs:
            if "end" not in r:
                r["start"] = r["h"] if prev is None else max(r["h"], prev)
                if r["kappa"] is None:
                    return
                s2 = (max(r["start"] + r["s1"], r["kappa"]) if r["q"]
                      else r["start"] + r["s1"]) + 1
                r["end"] = s2 + r["run"] - r["s1"]
            prev = r["end"]

    def _end(self, r) -> int:
        self._resolve()
        if "end" not in r:
            raise ExionError("DSC program: a descriptor waits for an EPRE run whose keys no "
                             "earlier OMEM_STORE (kq) tees (the program would not end)")
        return r["end"]

    def all_end(self) -> int:
        return self._end(self.runs[-1]) if self.runs else 0

    def wbuf_end(self, b: int) -> int:
        """The cycle no running or queued run reads W buffer ``b`` any more."""
        return max((self._end(r) for r in self.runs if r["wb"] == b), default=0)

    def slot_free(self) -> int:
        """The first cycle the slot is empty (the last run taken)."""
        if not self.runs or not self.runs[-1]["q"]:
            return 0
        if len(self.runs) > 1:
            self._end(self.runs[-2])
        self._resolve()
        return self.runs[-1]["start"] + 1

    def rows_ready(self) -> int:
        """The cycle the oldest run whose rows no EPRE_STORE took has them in the FIFO."""
        if self.stored >= len(self.runs):
            raise ExionError("DSC program: an EPRE_STORE (kq) with no EPRE run before it")
        r = self.runs[self.stored]
        self.stored += 1
        return self._end(r) - EPRE_ROWS_EARLY

    def keys_free(self, b: int) -> int:
        """The first cycle Kh buffer ``b`` is not full (its last reader ended)."""
        done = [r for r in self.runs if r["q"] and r["kb"] == b and r["kappa"] is not None]
        if done and done[-1]["hold"]:
            raise ExionError(f"DSC program: keys teed into Kh buffer {b} while its last run "
                             "holds it (k_hold; the program would not end)")
        return self._end(done[-1]) + 1 if done else 0

    def keys_in(self, b: int, kappa: int):
        """Kh buffer ``b`` is full from cycle ``kappa`` (for the oldest run waiting on it)."""
        for r in self.runs:
            if r["q"] and r["kb"] == b and r["kappa"] is None:
                r["kappa"] = kappa
                if not r["hold"]:
                    return
        self.full[b] = kappa


def _epre_ready(cfg: Config, tl: _EpreTimeline, op: str, d: dict) -> int:
    """The first cycle descriptor ``d`` may leave DECODE as far as the EPRE goes
    (``hw/dsc.py``'s interlock): a queued EPRE when the slot is empty, an EPRE_STORE with
    ``kq`` when its rows are in, an OMEM_STORE with ``ktee`` and ``kq`` when its Kh buffer
    is free, an EPRE_WLOAD when no run reads its W buffer, the other EPRE-interlocked ops
    (and a ``tee`` GMEM_LOAD, an OMEM_STORE with ``ktee``) when every run is done."""
    ep, kq = d.get("ep", {}), int(d.get("kq", 0))
    if op == "EPRE" and int(d.get("overlap", 0)) and int(ep.get("k_given", 0)) \
            and int(ep.get("k_wait", 0)):
        return tl.slot_free()
    if op == "EPRE_STORE" and kq:
        return tl.rows_ready() if int(d.get("count", 0)) else 0
    if op == "OMEM_STORE" and int(d.get("ktee", 0)):
        return tl.keys_free(int(d.get("k_buf", 0))) if kq else tl.all_end()
    if op == "EPRE_WLOAD":
        return tl.wbuf_end(int(int(d.get("ubase", 0)) >= epre_w_half(cfg)))
    if op in EPRE_INTERLOCKED or (op == "GMEM_LOAD" and int(d.get("tee", 0))):
        return tl.all_end()
    return 0


def program_cycles(cfg: Config, descs: list, bus_bits: int = 64,
                   gemm_bodies: list | None = None) -> dict:
    """Per-descriptor and total cycles; ``gemm`` = the engine's time (plain GEMM bodies
    and overlapped GEMMs' background cycles, estimated or as given), ``exact`` = the
    cycles outside plain GEMM bodies and engine waits (the part this model gets exactly).

    ``gemm_bodies``: one entry per GEMM descriptor, the engine's measured part -- a plain
    GEMM's body, or an overlapped GEMM's ``(load, body)``: its mask stream, and the body it
    would have as a plain GEMM (the cycles until its engine is idle).

    An overlapped EPRE run and an overlapped GEMM's engine time are timed beside the
    descriptors after them: the interlocked descriptors wait in DECODE until both are
    done. ``epre_wait`` / ``engine_wait`` = the cycles interlocked descriptors waited (the
    exposed part), ``epre_hidden`` / ``engine_hidden`` = the busy cycles other descriptors
    covered."""
    per, gemm, k, plain = [], 0, 0, 0
    oh = overhead(bus_bits)
    t, waited, busy = 0, 0, 0
    tl = _EpreTimeline(cfg)
    eng_free, e_waited, e_busy = 0, 0, 0
    for d in descs:
        body = None
        op = _NAMES.get(int(d["op"]))
        ov = op == "GEMM" and int(d.get("overlap", 0))
        if op == "GEMM":
            given = None if gemm_bodies is None else gemm_bodies[k]
            k += 1
            if ov:
                load, full = ((gemm_load(cfg, d, bus_bits), gemm_estimate(cfg, d, bus_bits))
                              if given is None else (int(given[0]), int(given[1])))
                body = load
                gemm += full
            else:
                body = gemm_estimate(cfg, d, bus_bits) if given is None else given
                gemm += body
                plain += body
        dec = t + oh - 1                     # the descriptor's first DECODE cycle
        w_ep = max(0, _epre_ready(cfg, tl, op, d) - dec)
        w_en = max(0, eng_free - dec) if op in ENGINE_INTERLOCKED else 0
        wait = max(w_ep, w_en)
        c = descriptor_cycles(cfg, d, bus_bits, body) + wait
        if op == "EPRE" and int(d.get("overlap", 0)) and int(d.get("count", 0)):
            busy += tl.add(t + wait + oh, d)        # hand-over in cycle t + wait + oh
        if op == "OMEM_STORE" and int(d.get("kq", 0)) and int(d.get("ktee", 0)):
            tl.keys_in(int(d.get("k_buf", 0)),
                       dec + wait + _ktee_times(cfg, d, item_beats(cfg, bus_bits)["omem"])[1])
        if ov:
            eng_free = t + wait + oh + full         # a plain GEMM's body would end here
            e_busy += full - load
        waited += w_ep
        e_waited += w_en
        per.append(c)
        t += c
    total = sum(per)
    by_op: dict = {}
    for d, c in zip(descs, per):
        name = _NAMES.get(int(d["op"]), "?")
        by_op[name] = by_op.get(name, 0) + c
    return {"per_desc": per, "total": total, "gemm": gemm,
            "exact": total - plain - e_waited,
            "by_op": by_op, "epre_wait": waited, "epre_hidden": busy - waited,
            "engine_wait": e_waited, "engine_hidden": e_busy - e_waited}

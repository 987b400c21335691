"""The DSC core (SPEC 4.5, issue 16): a descriptor-driven stream DMA around the units.

The host writes a *program* (a list of 32-byte descriptors, ``docs/dsc.md``) and the
operands, each in its unit's own beat format, into host memory; ``start`` runs the program
at ``prog_base``. The core fetches one descriptor at a time over the memory port
(``hw/memif.py``: burst reads and writes, never AXI), moves the described data between host
memory and the unit, runs the unit, and goes on until an ``END`` descriptor.

Descriptor (256 bits, little-endian; bit ranges of the 32 bytes):

=========  ==========  ===================================================================
bits       field       meaning
=========  ==========  ===================================================================
0..7       op          0 END, 1 IMEM_LOAD, 2 GMEM_LOAD, 3 OMEM_LOAD, 4 GEMM, 5 OMEM_STORE,
                      6 GELU, 7 SOFTMAX, 8 LAYERNORM, 9 FFNR, 10 EPRE_XLOAD,
                      11 EPRE_WLOAD, 12 EPRE, 13 EPRE_STORE, 14 GELU_OMEM, 15 EPRE_KLOAD,
                      16 GMEM_EFILL, 17 EPRE_KOMEM
8..15      stage       shown on ``ctrl.stage`` while the descriptor runs (host's label)
16         accumulate  GEMM: add into OMEM (FFN-Reuse's delta FC2 on the cached Y_d)
17         overlap     EPRE: run in the background (its mask rows into the mask FIFO);
                      GEMM: the engine computes in the background once its mask is in
17         bcast       OMEM_LOAD: one result per item, written to all R rows of the address
18         tee         GMEM_LOAD: the words also go to the EPRE's W memory (below)
32..63     count       items: words (loads), mask beats (GEMM), OMEM addresses (store),
                      accumulator words (GELU), input words (SOFTMAX, LAYERNORM, FFNR),
                      groups of L OMEM addresses (GELU_OMEM), key rows (EPRE_KOMEM)
64..95     src         byte address of the first beat read (loads, GEMM, GELU, ...)
96..127    dst         byte address of the first beat written (OMEM_STORE, GELU, ...)
128..159   ubase       first unit address (IMEM / GMEM / OMEM word address; GELU_OMEM:
                      the first OMEM address read); FFNR:
                      ``aux`` (dense: mask items out; sparse: address of H')
160..175   glen        unit addresses advance in groups of ``glen`` consecutive words ...
176..191   gstride     ... and each group starts ``gstride`` after the previous one
192..207   kwords      GEMM setup: K/L words of every pass; GMEM_LOAD with ``tee``:
                      ``tee_base``, the EPRE W address of the first word teed;
                      GMEM_EFILL: the EPRE W address of the first word read
192..197   shift       EPRE_KOMEM and OMEM_STORE with ``ktee`` (:data:`KEY_FIELDS`): the
200..207   h_words     keys' requantisation shift, Kh words per key row ``ceil(d_head /
208..223   kt_ncols    Le)``; OMEM_STORE: addresses per row block, K_h's first column in
224..239   kt_c0       it (d_head = ``glen``), and the keys ``n_k``
240..255   n_k
18         ktee        OMEM_STORE: K_h's columns also go into the EPRE's Kh banks (below)
18         kpack       EPRE_KLOAD: the keys come as packed key rows (below), ``h_words``
                      (bits 200..207) Kh words a key, d_head = ``glen``
19         kq          OMEM_STORE with ``ktee``: the keys of a queued run, into Kh buffer
                      ``k_buf`` (bit 198); EPRE_STORE: wait for the rows (below, "Queue")
208..223   ncols       GEMM setup: OMEM stride of a row block
224..231   regions     GEMM setup: WMEM regions the fetch may fill ahead
192..206   in_mult     GELU (in place of the GEMM setup): ``GeluParams`` of
208..213   in_shift    ``golden.cfse.gelu_requant`` (:data:`GELU_FIELDS`)
216..230   out_mult
232..237   out_shift
192..207   n           SOFTMAX / LAYERNORM (:data:`ROW_FIELDS`): row length (1..n_max)
208..223   gamma       LAYERNORM: Q.11 gamma and beta of every element, ``eps_q``
224..239   beta
240..255   eps
192..207   t           FFNR (:data:`FFNR_FIELDS`): tokens T, hidden units N,
208..223   n           ``s_code = s * 10**6``, sparse (DENSE then DELTA) or dense
224..243   s_code      (DENSE then MASK)
244        sparse
128..255   run         EPRE (:data:`EPRE_RUN_LSB`): the ``hw.epre.run_layout`` value
=========  ==========  ===================================================================

The EPRE (``hw.epre.EPRE``, sized by :func:`dsc_epre_sizes` from ``cfg.dsc_epre_dims``):
EPRE_XLOAD writes ``count`` EPRE words (Le 16-bit containers) to its X banks, word i to
bank ``i mod U`` at ``ubase + i // U``; EPRE_KLOAD writes exact keys into its Kh banks the
same way (a run with ``k_given``, docs/epre.md); EPRE_WLOAD writes ``count`` words to its W
memory (the ``glen`` / ``gstride`` walk: Wq^T rows, then Wk^T rows at ``dh_max * dw_max``).
The W memory holds two such buffers of ``w_half`` words (issue 19; ``EpreSizes.w_half``):
a run reads the one its ``w_buf`` run field names, from ``w_buf * w_half``. EPRE
starts a run with the descriptor's run fields and writes its ``count`` mask rows
(``hw.epre.mask_layout`` values) to ``dst`` through the output buffer; it ends when they
are acknowledged and the EPRE is idle.

**EPRE_KLOAD kpack** (bit 18, issue 19: a split head's other keys over the port at W bits):
``count`` key rows, row t being key t's ``glen`` = d_head W-bit elements packed densely
(element c at bits ``c W``, the IMEM_LOAD item's packing) in ``ceil(glen W / D)`` beats,
not ``ceil(d_head / Le)`` EPRE words of Le 16-bit containers (exion16 at 64 bits, d_head
128: 24 beats a key instead of 48). Each row goes into row ``t mod R`` of the key path's
transpose buffer (below, EPRE_KOMEM); a row block's last row (R keys, or the last key;
every key when its beats outnumber its ``h_words``) starts the emission of its rows into
the Kh banks, ``h_words`` words a key, one a cycle,
key t to bank ``t mod U`` at ``ubase + (t // U) h_words + hw``, beside the next block's
beats: a row is taken once the emission has left its row of the buffer, a block's last row
once the emission is done. The descriptor ends the cycle after the last block's last Kh
write (``golden.dsc_cycles.kload_packed_body``). Lanes past d_head are zero. A ``glen`` of
0 or above the EPRE's ``dh_max`` stops the run with ``bad_op``.

**GMEM_LOAD tee** (issue 18 item 3, one weight stream for the SDUE and the EPRE): with
``tee`` set, every GMEM word the load writes also goes into the EPRE's W memory, its L
W-bit elements at lanes ``(off L) mod Le`` of EPRE word ``tee_base + n``, ``off`` the word's
place in its ``glen`` group (the walk's group is one weight column, ``glen`` = K / L words)
and ``n`` counting the EPRE words written: a word is written when its last lane slot is
filled or its column ends, the lanes not filled are zero. So a GMEM_LOAD of d_head Q (or K)
columns of K = d rows leaves the EPRE exactly the Wq^T (Wk^T) rows EPRE_WLOAD would write
(``ceil(K / L) L`` and ``ceil(K / Le) Le`` lanes cover the same words when ``Le mod L = 0``;
built only then: :func:`tee_supported`, else a ``tee`` GMEM_LOAD stops with ``bad_op``). A
``tee`` GMEM_LOAD waits in DECODE while the EPRE runs (as EPRE_WLOAD does), and its beats
and cycles are a plain GMEM_LOAD's. The host uses it for the Q / K columns of a Q|K|V
product whose weights are the EPRE's (``sim.dsc_program``, ``share_w``).

**GMEM_EFILL** (op 16, issue 19: the EPRE's weights crossing the port once): the tee's
inverse. ``count`` GMEM words, written at the GMEM_LOAD walk (``ubase`` / ``glen`` /
``gstride``), come from the EPRE's W memory instead of the port: word n (``off`` its place
in its ``glen`` group, one weight column) is lanes ``(off L) mod Le .. + L - 1`` of W word
``tee_base + m``, ``m`` advancing after a word's last lane slot or its column's end -- the
same map as the tee, so a GMEM_EFILL of a head's d_head Q (K) columns at the W address
EPRE_WLOAD wrote Wq^T (Wk^T) to puts exactly the GMEM words a GMEM_LOAD of those columns
would. One word a cycle through the W memory's second read port (``hw.epre.EPRE.w_r``; the
EPRE's run only reads W, so it may run beside), no memory beat; it touches GMEM, so it
waits for an overlapped GEMM (:data:`ENGINE_INTERLOCKED`); built when the tee is
(:func:`tee_supported`), else ``bad_op``. The host uses it for the Q_h / K_h columns of a
Q|K|V product after head h's EPRE (``sim.dsc_program``, ``share_w``).

**EPRE_KOMEM** (op 17, issue 19: exact keys over an on-core path): the keys' K rows from the
SDUE's OMEM into the EPRE's Kh banks, for a run with ``k_given``, no memory beat. The K_h
accumulators of ``count`` key rows sit in OMEM as a GEMM leaves them: row block b (keys
``b R .. b R + R - 1``, one result per row of an address) at ``ubase + b gstride``, column
j of the ``glen`` = d_head columns at ``+ j``. Per row block the columns are read one a
cycle into an R x ``dh_max`` transpose buffer, each result requantised on capture (the
cycle after its read) as stage 1 requantises Kh_acc, ``saturate(acc >> shift, W)``
(``golden.predict.omem_keys``); then the block's keys are written one Kh word a cycle, key
t's ``h_words`` words to Kh bank ``t mod U`` at words ``(t // U) h_words + hw`` (the
EPRE's ``kh_w``, EPRE_KLOAD's layout). Cycles per row block: d_head + 1 + rows h_words.
It writes the Kh banks and reads OMEM, so it waits for an overlapped EPRE run and an
overlapped GEMM (both interlocks).

**OMEM_STORE ktee** (bit 18, issue 19: the keys teed by the store of the tile holding
them): every address the store latches is a column of its row block (``kt_ncols``
addresses a block); the columns ``kt_c0 .. kt_c0 + glen - 1`` are K_h's, captured into the
same transpose buffer (requantised), and the window's last one starts the block's Kh
writes (``min(R, keys left)`` keys of ``n_k``), one a cycle beside the store's beats. A
window column whose latch would come while the previous block's keys are still written
waits; the store ends once the last Kh write is done. It waits for an overlapped EPRE run
(interlock). The block schedule stores each head's K_h | V_h tile this way
(``sim.dsc_program``, exact keys).

**Queue** (issue 19: exact keys without waiting for them in order): the EPRE has two Kh
buffers (``EpreSizes.k_bufs``; a run's ``k_buf`` run field names its one, from Kh word
``k_buf * h_depth``). An overlapped EPRE whose run has ``k_given`` and ``k_wait`` is
*queued*: it goes into a one-run slot (waiting in DECODE only while the slot is full) and
the core goes on; the slot's run starts the first cycle the EPRE is idle, runs stage 1
(the query side) and waits before stage 2 until its Kh buffer is *full*. An OMEM_STORE
with ``ktee`` and ``kq`` tees the keys into Kh buffer ``k_buf`` (its words at ``k_buf *
h_depth`` on): it waits in DECODE until that buffer is not full (the queued run that read
it has ended) and no run that is not queued is busy, and its last key marks the buffer
full; a queued run's end empties its buffer. An EPRE_STORE with ``kq`` waits only until
the mask FIFO holds its ``count`` rows (rows of runs in order: a queued run does not empty
the FIFO), not for the EPRE to be idle. An EPRE_WLOAD goes beside when neither the running
nor the queued run reads its W buffer. The block schedule with exact keys queues every run
(``sim.dsc_program._queued_order``): ``WLOAD_0, EPRE_0, WLOAD_1, EPRE_1, kv_0, [kv_(h+1),
EPRE_STORE_h, q_h, WLOAD_(h+2), EPRE_(h+2)]``, run h + 1's stage 1 beside head h + 1's
K_h | V_h tile.

**Overlap** (issue 16 item 2, issue 18 item 3): an EPRE descriptor with ``overlap`` set only
hands the run over and goes on with the next descriptor; the EPRE predicts in the background
and its mask rows go into a mask FIFO (``n_max`` rows, emptied when such a run starts).
EPRE_STORE writes ``count`` rows from the FIFO to ``dst`` through the output buffer
(``bad_op`` if the FIFO holds fewer). EPRE_XLOAD, EPRE_KLOAD, EPRE_WLOAD, EPRE, EPRE_STORE
and END wait in DECODE until the EPRE is idle (the interlock: the EPRE's memories and the
FIFO are not touched while it runs), except an EPRE_WLOAD whose ``ubase`` lies in the W
buffer the running run does not read (the host keeps the whole walk there): it fills the
next head's Wq^T / Wk^T beside the run; every other op runs beside it. The host puts the work
that does not need the prediction (the K / V projection tiles) between an overlapped EPRE
and its EPRE_STORE.

A GEMM descriptor with ``overlap`` set streams its mask beats and goes on with the next
descriptor while the engine computes (``engine`` is high from a GEMM's DECODE until the
engine is idle, the cycle a plain GEMM leaves GEMM_WAIT); IMEM_LOAD, GMEM_LOAD, OMEM_LOAD,
GEMM, OMEM_STORE, GELU_OMEM and END wait in DECODE until it is low
(:data:`ENGINE_INTERLOCKED`). The host
puts CFSE work that does not need this GEMM's result (the previous head's softmax, the
previous tile's GELU, a dense iteration's FFN-Reuse mask) between an overlapped GEMM and
the OMEM_STORE that reads its result.

**GELU_OMEM** (op 14, the CFSE fed from the SDUE's output): GELU + requantisation of the
results still in OMEM, with no accumulator crossing the port. ``count`` groups of L OMEM
addresses from ``ubase`` (group k: ``ubase + k L .. + L - 1``, each address R results, one
per row of its row block) go through an R x L transpose buffer: L reads (one a cycle, the
data the cycle after), then R words into the GELU unit, word r = row r's L results (lane i
from address ``k L + i``), so a group is L hidden units of R tokens. Out go ``count * R``
operand words (the GELU op's output item), group by group, row by row, through the output
buffer; the descriptor ends when the last is acknowledged. The GELU parameters sit where the
GELU op's do (:data:`GELU_FIELDS`). It reads OMEM, so it waits for an overlapped GEMM
(:data:`ENGINE_INTERLOCKED`). The host ends every FC1 tile with it in place of OMEM_STORE
and runs no GELU op (``sim.dsc_program.block_jobs``, ``fuse_gelu``).

SOFTMAX, LAYERNORM and FFNR follow GELU's pattern (read -> unit -> write, overlapped;
``docs/dsc.md`` section 2 has the item formats): SOFTMAX reads words of L Q.11 logits
each followed by L keep bits (``ceil(17 L / D)`` beats) through ``hw.cfse.SoftmaxUnit`` and
``golden.dsc.prob_requant`` (keep 0 -> 0) to W-bit operand words; LAYERNORM reads Q.11
words through ``hw.cfse.LayerNormUnit`` to Q.11 words; FFNR runs ``hw.ffnr.FFNR``'s DENSE on
H (or H_d) words, then MASK (mask items out) or DELTA (H' words in, ``H' - H_d`` words out).
The row units take rows of up to ``cfg.dsc_row_max`` and the FFN-Reuse unit an H of up to
``cfg.dsc_ffnr_dims`` (:func:`dsc_ffnr_sizes`): the digits DiTs' sizes, not the standalone
units' ``k_max`` (issue 16); the host keeps anything larger.

Item formats (the host lays them out; ``D`` = bus bits): an operand word (L elements) is
``L`` 16-bit little-endian containers (each the sign-extended W-bit element) in
``ceil(16 L / D)`` beats, except that IMEM_LOAD and GMEM_LOAD take it packed (element l at
bits ``l W``, ``ceil(W L / D)`` beats); an OMEM address is R A-bit results packed densely (result r at
bits ``r A``, two's complement) in ``ceil(A R / D)`` beats, or with ``bcast`` one A-bit
result in ``ceil(A / D)`` beats that OMEM_LOAD writes to all R rows (a row-constant preload:
a bias, or zeros); a mask beat is the ``hw.cau.mask_layout`` value in
``ceil(bits / D)`` beats. IMEM_LOAD writes word ``i`` to bank ``i mod R``; GMEM_LOAD and
OMEM_LOAD write one word / address per item. A GEMM descriptor sets the engine's ``setup``,
streams its mask beats and waits until the engine is idle. A GELU descriptor streams
``count`` accumulator words (L results in 64-bit containers, ``ceil(64 L / D)`` beats) from
``src`` through the CFSE's GELU + requantisation unit (``hw.cfse.GeluUnit``, bit-exact with
``golden.cfse.gelu_requant``) and writes as many operand words (W-bit H, the IMEM_LOAD item
format) to ``dst``: read, unit and write overlap; it ends when the last write is
acknowledged.

Error flags (``ctrl.error``, sticky for the run; :data:`ERROR_FLAGS`):

* bit 0 ``rd_err``: a read beat came back with an error response (the run goes on);
* bit 1 ``wr_err``: a write response carried an error (the run goes on);
* bit 2 ``bad_op``: an unknown op code, or a SOFTMAX / LAYERNORM / FFNR descriptor whose
  ``n`` / ``t`` / ``s_code`` the unit cannot take (the run stops);
* bit 3 ``overflow``: the gemm engine's CAU saw a row block wider than ``max_cols``.

Timing (no memory stalls; ``golden/dsc_cycles.py`` is the exact model): every step is
sequential -- fetch, then the descriptor's transfer, then the unit -- except an overlapped
EPRE run and an overlapped GEMM's engine time, which run beside the descriptors after them. The CFSE's GELU,
softmax and layer norm, the FFN-Reuse unit and the EPRE are behind the DMA; any other op
code stops the run with ``bad_op`` (``docs/dsc.md``, "status").
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import Out

from exion.config import CAU_COLS_PER_CYCLE, Config
from exion.errors import ExionError

from .cau import mask_layout
from .epre import EPRE, EpreSizes, run_layout
from .epre import mask_layout as epre_mask_layout
from .cfse import GeluUnit, LayerNormUnit, SoftmaxUnit
from .ffnr import FFNR, FfnrOp
from .gemm import SparseGemm, forward_gmem, gmem_port_signature
from .memif import dsc_control_signature, mem_master_signature

__all__ = ["DscCore", "ERROR_FLAGS", "OPS", "EPRE_INTERLOCKED", "ENGINE_INTERLOCKED",
           "GELU_FIELDS", "ROW_FIELDS",
           "FFNR_FIELDS", "DESC_BYTES", "EPRE_RUN_LSB", "item_beats", "dsc_epre_sizes",
           "TEE_BIT", "TEE_BASE", "tee_supported", "KEY_FIELDS", "KTEE_BIT", "KQ_BIT",
           "KPACK_BIT", "dsc_ffnr_sizes"]

#: error bit -> (name, meaning); the register map lists these.
ERROR_FLAGS = {
    0: ("rd_err", "a read beat returned SLVERR/DECERR"),
    1: ("wr_err", "a write response returned SLVERR/DECERR"),
    2: ("bad_op", "unknown or unsupported descriptor op (run stopped)"),
    3: ("overflow", "gemm engine: a row block wider than max_cols"),
}

#: op name -> code
OPS = {"END": 0, "IMEM_LOAD": 1, "GMEM_LOAD": 2, "OMEM_LOAD": 3, "GEMM": 4, "OMEM_STORE": 5,
       "GELU": 6, "SOFTMAX": 7, "LAYERNORM": 8, "FFNR": 9, "EPRE_XLOAD": 10,
       "EPRE_WLOAD": 11, "EPRE": 12, "EPRE_STORE": 13, "GELU_OMEM": 14, "EPRE_KLOAD": 15,
       "GMEM_EFILL": 16, "EPRE_KOMEM": 17}

#: ops that wait in DECODE while the EPRE runs (an overlapped run in the background)
EPRE_INTERLOCKED = ("END", "EPRE_XLOAD", "EPRE_WLOAD", "EPRE", "EPRE_STORE", "EPRE_KLOAD",
                    "EPRE_KOMEM")

#: ops that wait in DECODE while the gemm engine computes an overlapped GEMM (they touch
#: the engine's memories, its setup or its mask stream)
ENGINE_INTERLOCKED = ("END", "IMEM_LOAD", "GMEM_LOAD", "OMEM_LOAD", "GEMM", "OMEM_STORE",
                      "GELU_OMEM", "GMEM_EFILL", "EPRE_KOMEM")

#: EPRE descriptor: the EPRE's ``run_layout`` value sits at bits 128.. (in place of
#: ubase / glen / gstride / the GEMM setup); ``count`` = query rows (mask items written).
EPRE_RUN_LSB = 128

#: GELU descriptor: ``GeluParams`` bit ranges of the 256-bit descriptor (in place of the
#: GEMM setup fields kwords / ncols / regions).
GELU_FIELDS = {"in_mult": (192, 15), "in_shift": (208, 6), "out_mult": (216, 15),
               "out_shift": (232, 6)}

#: SOFTMAX / LAYERNORM descriptors: row length ``n`` and the layer norm's scalar ``gamma``,
#: ``beta`` (Q.11, the same for every element) and ``eps_q`` (in place of the GEMM setup).
ROW_FIELDS = {"n": (192, 16), "gamma": (208, 16), "beta": (224, 16), "eps": (240, 16)}

#: FFNR descriptor: the FFN-Reuse unit's command fields (``aux``, bits 128..159 in place of
#: ``ubase``: the mask items written (dense) or the address of H' (sparse)).
FFNR_FIELDS = {"t": (192, 16), "n": (208, 16), "s_code": (224, 20), "sparse": (244, 1)}

#: EPRE_KOMEM / OMEM_STORE ``ktee`` fields (lsb, bits): the keys' requantisation shift, Kh
#: words per key row; OMEM_STORE only: addresses per row block, K_h's first column, keys
KEY_FIELDS = {"shift": (192, 6), "k_buf": (198, 1), "h_words": (200, 8),
              "kt_ncols": (208, 16), "kt_c0": (224, 16), "n_k": (240, 16)}
#: OMEM_STORE ``ktee`` bit: K_h's window also goes into the EPRE's Kh banks
KTEE_BIT = 18
#: ``kq`` bit (issue 19, queued runs): OMEM_STORE with ``ktee``: the keys of a waiting run,
#: into Kh buffer ``k_buf`` once it is free, marking it full after the last key; EPRE_STORE:
#: wait for its rows in the mask FIFO, not for the EPRE to be idle
KQ_BIT = 19

#: EPRE_KLOAD ``kpack`` bit (issue 19, 2026-12-07): the keys come as key rows of d_head
#: (``glen``) W-bit elements packed densely (``ceil(glen W / D)`` beats a key), not as Kh
#: words of Le 16-bit containers; ``h_words`` (:data:`KEY_FIELDS`) Kh words a key
KPACK_BIT = 18

#: GMEM_LOAD ``tee`` bit and ``tee_base`` field (lsb, bits): its words also go to the EPRE
TEE_BIT = 18
TEE_BASE = (192, 16)

DESC_BYTES = 32
_MAX_REGIONS = 4


def dsc_ffnr_sizes(cfg: Config) -> dict:
    """The DSC's FFN-Reuse unit (``hw.ffnr.FFNR`` keyword sizes): its H_d cache
    ``cfg.dsc_ffnr_dims``, a one-word-per-row-block Y_d cache (the DSC keeps Y_d in host
    memory) and a histogram counting at most one cache of values."""
    t_max, n_max = cfg.dsc_ffnr_dims
    return {"t_max": t_max, "n_max": n_max, "d_max": 1, "hist_max": t_max * n_max}


def dsc_epre_sizes(cfg: Config) -> EpreSizes:
    """The DSC's EPRE: maxima, units and selectors of ``cfg.dsc_epre_dims``."""
    n_max, d_max, dh_max, units, selectors = cfg.dsc_epre_dims
    return EpreSizes(cfg, units, n_max, d_max, dh_max, selectors, "insertion", w_bufs=2,
                     k_bufs=2)


def tee_supported(cfg: Config) -> bool:
    """Whether the DSC builds the GMEM_LOAD tee: an EPRE word of Le lanes is a whole number
    of GMEM words of L lanes (``Le mod L = 0``: exion16 96 / 16, toy 4 / 4)."""
    return cfg.epre_lane_count % cfg.lanes == 0


def item_beats(cfg: Config, bus_bits: int) -> dict:
    """Bus beats per item: operand word (16-bit containers; ``oword``: packed W-bit, the
    IMEM / GMEM loads' item), OMEM address (R results, packed A-bit), one broadcast
    OMEM result (``obc``), mask beat, accumulator
    word (L results in 64-bit containers, the GELU op's input), softmax word (L 16-bit
    Q.11 logits, then L keep bits: the SOFTMAX op's input), EPRE word (Le 16-bit
    containers: the EPRE loads' input), EPRE mask item (``hw.epre.mask_layout``: row,
    dominant, mask bits)."""
    mbits = mask_layout(cfg, CAU_COLS_PER_CYCLE, True).size
    ebits = epre_mask_layout(dsc_epre_sizes(cfg)).size
    return {"word": math.ceil(16 * cfg.lanes / bus_bits),
            "oword": math.ceil(cfg.width * cfg.lanes / bus_bits),
            "omem": math.ceil(cfg.acc_width * cfg.rows / bus_bits),
            "obc": math.ceil(cfg.acc_width / bus_bits),
            "mask": math.ceil(mbits / bus_bits),
            "acc": math.ceil(64 * cfg.lanes / bus_bits),
            "smx": math.ceil(17 * cfg.lanes / bus_bits),
            "eword": math.ceil(16 * cfg.epre_lane_count / bus_bits),
            "emask": math.ceil(ebits / bus_bits),
            "krow": math.ceil(cfg.width * cfg.dsc_epre_dims[2] / bus_bits)}


def _burst_len(addr, rem, D: int):
    """Beats of the next burst: min(256, rem, beats to the next 4 KiB boundary)."""
    sh = (D // 8).bit_length() - 1
    to4k = (Const(4096, 13) - addr[:12]) >> sh
    a = Mux(rem < 256, rem, 256)
    return Mux(to4k < a, to4k, a)


class DscCore(wiring.Component):
    """Descriptor-driven DSC core around the gemm engine.

    Parameters
    ----------
    cfg : Config
    bus_bits : int
        Memory port data width (default ``cfg.dsc_bus_bits`` if the config has it, else 64).
    epre_unit_boxes : bool
        The EPRE's dot-product units as black boxes (``hw.epre.EPRE``): for hierarchical
        synthesis only.
    dpu_module : str or None
        The SDUE's DPUs as black boxes of this module (``hw.sdue.SDUE``): what the
        generator emits.

    Members
    -------
    start, prog_base, iteration, reuse_n, mode, busy, done, error, cycles, passes, stage,
    engine
        The control port, flattened (``hw.memif.dsc_control_signature``); ``engine``: an
        overlapped GEMM's engine time is running.
    mem : Out(mem_master_signature(bus_bits))
        Burst memory master.
    gmem : Out(gmem_port_signature(cfg))
        Only with ``cfg.gmem_ports``: the gemm engine's GMEM ports (``hw.gemm``), for a
        synthesis top whose global buffer is outside the FPGA.
    """

    def __init__(self, cfg: Config, bus_bits: int | None = None, *,
                 epre_unit_boxes: bool = False, dpu_module: str | None = None):
        D = bus_bits or getattr(cfg, "dsc_bus_bits", None) or 64
        if D not in (32, 64, 128, 256):
            self._MustUse__silence = True
            raise ExionError(f"DscCore: bus_bits = {D} must be 32, 64, 128 or 256")
        self.cfg = cfg
        self.bus_bits = D
        self.epre_unit_boxes = epre_unit_boxes
        self.dpu_module = dpu_module
        members = dict(dsc_control_signature().members)
        members["mem"] = Out(mem_master_signature(D))
        if cfg.gmem_ports:
            members["gmem"] = Out(gmem_port_signature(cfg))
        super().__init__(members)

    def constants(self) -> dict:
        return {"bus_bits": self.bus_bits, "desc_bytes": DESC_BYTES,
                "cols_per_cycle": CAU_COLS_PER_CYCLE, "max_regions": _MAX_REGIONS,
                **{f"beats_{k}": v for k, v in item_beats(self.cfg, self.bus_bits).items()}}

    def elaborate(self, platform):
        """Stages in data order, each a helper below sharing one namespace ``s``: the
        descriptor register, the read engine (bursts), the assembler (beats -> items), the
        unit sinks, the write engine (``OMEM_STORE``), the counters and the FSM."""
        m = Module()
        s = SimpleNamespace(D=self.bus_bits, BB=self.bus_bits // 8,
                            ib=item_beats(self.cfg, self.bus_bits),
                            desc_beats=max(1, 256 // self.bus_bits))
        s.gemm = SparseGemm(self.cfg, max_regions=_MAX_REGIONS, dpu_module=self.dpu_module)
        m.submodules.gemm = s.gemm
        if self.cfg.gmem_ports:
            forward_gmem(m, self.cfg, self.gmem, s.gemm.gmem)
        self._descriptor(m, s)
        self._read_engine(m, s)
        self._assembler(m, s)
        self._sinks(m, s)
        self._write_engine(m, s)
        self._counters(m, s)
        self._gelu(m, s)
        self._rowops(m, s)
        self._ffnr(m, s)
        self._epre(m, s)
        self._gelu_omem(m, s)
        self._keys(m, s)
        with m.FSM(name="dsc"):
            self._fsm_fetch(m, s)
            self._fsm_decode(m, s)
            self._fsm_load(m, s)
            self._fsm_store(m, s)
            self._fsm_gelu(m, s)
            self._fsm_rowop(m, s)
            self._fsm_ffnr(m, s)
            self._fsm_epre(m, s)
            self._fsm_gelu_omem(m, s)
            self._fsm_efill(m, s)
            self._fsm_komem(m, s)
        return m

    def _descriptor(self, m, s):
        """The fetched descriptor and its fields; the program counter."""
        s.desc = desc = Signal(s.desc_beats * s.D, name="desc")
        s.op, s.stage = desc[0:8], desc[8:16]
        s.count, s.src, s.dst = desc[32:64], desc[64:96], desc[96:128]
        s.ubase, s.glen, s.gstride = desc[128:160], desc[160:176], desc[176:192]
        s.bcast = desc[17]              # OMEM_LOAD (EPRE, GEMM: ``overlap``, the same bit)
        s.pc = Signal(32, name="pc")
        m.d.comb += self.stage.eq(s.stage)

    def _read_engine(self, m, s):
        """Read bursts from ``rd_addr``, ``rd_left`` beats; latches read errors."""
        mem, D, BB = self.mem, s.D, s.BB
        s.rd_addr = Signal(32, name="rd_addr")
        s.rd_left = Signal(40, name="rd_left")
        s.rd_go = Signal(name="rd_go")
        blen = Signal(9, name="rd_blen")
        m.d.comb += [blen.eq(_burst_len(s.rd_addr, s.rd_left, D)),
                     mem.rd_cmd.valid.eq(s.rd_go & (s.rd_left != 0)),
                     mem.rd_cmd.payload.addr.eq(s.rd_addr),
                     mem.rd_cmd.payload.len.eq(blen - 1)]
        with m.If(mem.rd_cmd.valid & mem.rd_cmd.ready):
            m.d.sync += [s.rd_addr.eq(s.rd_addr + blen * BB), s.rd_left.eq(s.rd_left - blen)]
        with m.If(mem.rd_data.valid & mem.rd_data.ready & mem.rd_data.payload.err):
            m.d.sync += self.error[0].eq(1)
        with m.If(s.gemm.overflow & self.busy):
            m.d.sync += self.error[3].eq(1)

    def _assembler(self, m, s):
        """Collects ``per`` beats into one item (``asm``) and hands it to the sink."""
        mem, D = self.mem, s.D
        maxper = max(s.ib.values())
        s.per = Signal(range(maxper + 1), name="per")
        s.asm = asm = Signal(maxper * D, name="asm")
        # counts an item's beats and, in FETCH_DATA, a descriptor's (more on small configs)
        s.asm_cnt = asm_cnt = Signal(range(max(maxper, s.desc_beats)), name="asm_cnt")
        s.pending = Signal(name="pending")        # asm holds a complete item for the sink
        s.items_in = Signal(32, name="items_in")    # items assembled so far
        s.items_out = Signal(32, name="items_out")  # items the sink consumed
        s.sink_ready = Signal(name="sink_ready")
        s.consume = Signal(name="consume")
        s.loading = Signal(name="loading")
        m.d.comb += [
            s.consume.eq(s.pending & s.sink_ready),
            mem.rd_data.ready.eq(s.loading & (s.items_in != s.count) &
                                 (~s.pending | s.consume)),
        ]
        beat_in = mem.rd_data.valid & mem.rd_data.ready
        with m.If(s.consume):
            m.d.sync += [s.pending.eq(0), s.items_out.eq(s.items_out + 1)]
        with m.If(beat_in & s.loading):
            with m.Switch(asm_cnt):
                for i in range(maxper):
                    with m.Case(i):
                        m.d.sync += asm[i * D:(i + 1) * D].eq(mem.rd_data.payload.data)
            with m.If(asm_cnt == s.per - 1):
                m.d.sync += [asm_cnt.eq(0), s.pending.eq(1), s.items_in.eq(s.items_in + 1)]
            with m.Else():
                m.d.sync += asm_cnt.eq(asm_cnt + 1)

    def _sinks(self, m, s):
        """Unit write ports fed from ``asm``; the unit address walk (groups of ``glen``)."""
        cfg, gemm, asm = self.cfg, s.gemm, s.asm
        R, L, W, A = cfg.rows, cfg.lanes, cfg.width, cfg.acc_width
        s.bank = bank = Signal(range(max(R, self.cfg.dsc_epre_dims[3])), name="bank")
        s.off = off = Signal(16, name="off")
        s.gb = gb = Signal(32, name="gbase")
        s.uaddr = uaddr = Signal(32, name="uaddr")
        m.d.comb += uaddr.eq(s.ubase + gb + off)
        word = asm[:W * L]              # IMEM_LOAD / GMEM_LOAD: a packed operand word
        is_imem = s.op == OPS["IMEM_LOAD"]
        is_ex = (s.op == OPS["EPRE_XLOAD"]) | (s.op == OPS["EPRE_KLOAD"])
        U = self.cfg.dsc_epre_dims[3]
        m.d.comb += [
            gemm.imem_w.addr.eq(uaddr), gemm.gmem_w.addr.eq(uaddr),
            gemm.omem_w.addr.eq(uaddr),
            gemm.imem_w.data.as_value().eq(Cat(word for _ in range(R))),
            gemm.gmem_w.data.as_value().eq(word),
            gemm.omem_w.data.as_value().eq(Mux(s.bcast, Cat(asm[:A] for _ in range(R)),
                                               asm[:A * R])),
            gemm.mask.payload.as_value().eq(asm[:len(gemm.mask.payload.as_value())]),
        ]
        s.advance = advance = Signal(name="advance")
        with m.If(s.consume):
            with m.If(is_imem):
                m.d.sync += bank.eq(Mux(bank == R - 1, 0, bank + 1))
                m.d.comb += advance.eq(bank == R - 1)
            with m.Elif(is_ex):     # EPRE X / Kh: word i to bank i mod U (the host orders them)
                m.d.sync += bank.eq(Mux(bank == U - 1, 0, bank + 1))
                m.d.comb += advance.eq(bank == U - 1)
            with m.Else():
                m.d.comb += advance.eq(1)
        with m.If(advance):
            with m.If(off + 1 >= s.glen):
                m.d.sync += [off.eq(0), gb.eq(gb + s.gstride)]
            with m.Else():
                m.d.sync += off.eq(off + 1)

    def _write_engine(self, m, s):
        """``OMEM_STORE``: write commands and their responses; the data side (its own burst
        bookkeeping, the same split as the commands) sends ``sbuf`` beat by beat."""
        mem, D, BB = self.mem, s.D, s.BB
        s.wr_addr = Signal(32, name="wr_addr")
        s.wr_left = Signal(40, name="wr_left")
        s.wr_go = Signal(name="wr_go")
        wblen = Signal(9, name="wr_blen")
        s.outstanding = outstanding = Signal(16, name="wr_outstanding")
        m.d.comb += [wblen.eq(_burst_len(s.wr_addr, s.wr_left, D)),
                     mem.wr_cmd.valid.eq(s.wr_go & (s.wr_left != 0)),
                     mem.wr_cmd.payload.addr.eq(s.wr_addr),
                     mem.wr_cmd.payload.len.eq(wblen - 1),
                     mem.wr_resp.ready.eq(1)]
        cmd_fire = mem.wr_cmd.valid & mem.wr_cmd.ready
        resp_fire = mem.wr_resp.valid & mem.wr_resp.ready
        with m.If(cmd_fire):
            m.d.sync += [s.wr_addr.eq(s.wr_addr + wblen * BB), s.wr_left.eq(s.wr_left - wblen)]
        with m.If(cmd_fire & ~resp_fire):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~cmd_fire & resp_fire):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If(resp_fire & mem.wr_resp.payload.err):
            m.d.sync += self.error[1].eq(1)
        s.d_addr = Signal(32, name="wd_addr")
        s.d_left = Signal(40, name="wd_left")
        s.d_burst = Signal(9, name="wd_burst")     # beats left in the current burst
        s.sbuf = Signal(s.ib["omem"] * D, name="sbuf")
        s.sbeat = Signal(range(max(2, s.ib["omem"])), name="sbeat")
        s.sa = Signal(32, name="store_addr")
        dblen = Signal(9, name="wd_blen")
        m.d.comb += [dblen.eq(_burst_len(s.d_addr, s.d_left, D)),
                     s.gemm.omem_r.addr.eq(s.ubase + s.sa)]
        s.cur_burst = Mux(s.d_burst == 0, dblen, s.d_burst)
        with m.Switch(s.sbeat):
            for i in range(s.ib["omem"]):
                with m.Case(i):
                    m.d.comb += mem.wr_data.payload.data.eq(s.sbuf[i * D:(i + 1) * D])
        m.d.comb += mem.wr_data.payload.last.eq(s.cur_burst == 1)

    def _counters(self, m, s):
        """Run cycles, passes of this run, the one-cycle ``done``."""
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        s.p0 = Signal(32, name="passes0")
        m.d.comb += self.passes.eq(s.gemm.passes - s.p0)
        m.d.sync += self.done.eq(0)
        s.settle = Signal(2, name="settle")
        # ``engine``: a GEMM descriptor holds the engine, from its DECODE until the engine
        # is idle; after its mask stream (``eng_bg``) two settle cycles, then the engine's
        # idle check -- GEMM_WAIT's exit condition, also run beside the FSM (overlap)
        s.eng = Signal(name="engine_held")
        s.eng_bg = Signal(name="engine_bg")
        s.eng_free = Signal(name="engine_free")
        m.d.comb += [self.engine.eq(s.eng),
                     s.eng_free.eq(s.eng_bg & (s.settle == 2) & ~s.gemm.busy)]
        with m.If(s.eng_bg):
            with m.If(s.settle != 2):
                m.d.sync += s.settle.eq(s.settle + 1)
            with m.Elif(s.eng_free):
                m.d.sync += [s.eng_bg.eq(0), s.eng.eq(0)]

    @staticmethod
    def _load_items(m, s, n_beats, addr=None):
        """Start reading ``n_beats`` from ``addr`` (default the descriptor's ``src``) into
        the assembler."""
        m.d.sync += [s.rd_addr.eq(s.src if addr is None else addr), s.rd_left.eq(n_beats),
                     s.rd_go.eq(1),
                     s.asm_cnt.eq(0), s.items_in.eq(0), s.items_out.eq(0), s.pending.eq(0),
                     s.bank.eq(0), s.off.eq(0), s.gb.eq(0)]

    def _fsm_fetch(self, m, s):
        """IDLE -> FETCH -> FETCH_DATA: read the descriptor at ``pc``."""
        mem = self.mem
        with m.State("IDLE"):
            with m.If(self.start):
                m.d.sync += [self.busy.eq(1), self.error.eq(0), self.cycles.eq(0),
                             s.pc.eq(self.prog_base), s.p0.eq(s.gemm.passes)]
                m.next = "FETCH"
        with m.State("FETCH"):
            m.d.sync += [s.rd_addr.eq(s.pc), s.rd_left.eq(s.desc_beats), s.rd_go.eq(1),
                         s.asm_cnt.eq(0), s.pc.eq(s.pc + max(DESC_BYTES, s.BB))]
            m.next = "FETCH_DATA"
        with m.State("FETCH_DATA"):
            m.d.comb += mem.rd_data.ready.eq(1)
            with m.If(mem.rd_data.valid):
                with m.Switch(s.asm_cnt):
                    for i in range(s.desc_beats):
                        with m.Case(i):
                            m.d.sync += s.desc[i * s.D:(i + 1) * s.D].eq(
                                mem.rd_data.payload.data)
                m.d.sync += s.asm_cnt.eq(s.asm_cnt + 1)
                with m.If(s.asm_cnt == s.desc_beats - 1):
                    m.d.sync += [s.asm_cnt.eq(0), s.rd_go.eq(0)]
                    m.next = "DECODE"

    def _fsm_decode(self, m, s):
        """DECODE: start the descriptor's transfer (or end / stop on an unknown op); the ops
        of :data:`EPRE_INTERLOCKED` stay here while the EPRE runs, those of
        :data:`ENGINE_INTERLOCKED` while an overlapped GEMM's engine time runs."""
        with m.State("DECODE"):
            wait = Signal(name="interlock")
            busy, pend = s.ep.busy, s.ep_pend
            # an EPRE_WLOAD into the W buffer neither the running nor the queued run
            # reads goes beside them
            wbuf = s.ubase >= s.eps.w_half
            other = ((s.op == OPS["EPRE_WLOAD"]) & (~busy | (wbuf != s.ep_wbuf))
                     & (~pend | (wbuf != s.ep_pwbuf)))
            kq = s.desc[KQ_BIT]
            ep_wait = Signal(name="epre_interlock")
            with m.If((s.op == OPS["EPRE"]) & s.ep_q):      # a queued run: the slot
                m.d.comb += ep_wait.eq(pend)
            with m.Elif((s.op == OPS["EPRE_STORE"]) & kq):  # its rows, not an idle EPRE
                m.d.comb += ep_wait.eq((busy | pend) & (s.ep_fifo.r_level < s.count))
            with m.Elif(s.kt_on & kq):      # a waiting run's keys: their buffer is free
                m.d.comb += ep_wait.eq(s.ep_full.bit_select(s.keyf["k_buf"], 1)
                                       | (busy & ~s.ep_kwait))
            with m.Else():
                m.d.comb += ep_wait.eq(
                    (busy | pend) & ~other
                    & (Cat(s.op == OPS[o] for o in EPRE_INTERLOCKED).any() | s.tee | s.kt_on))
            m.d.comb += wait.eq(
                ep_wait | (s.eng & Cat(s.op == OPS[o] for o in ENGINE_INTERLOCKED).any()))
            with m.If(~wait):
                self._decode_op(m, s)

    def _decode_op(self, m, s):
        """DECODE's body once the interlock allows: one case per op."""
        gemm, desc, ib, count = s.gemm, s.desc, s.ib, s.count
        with m.Switch(s.op):
            with m.Case(OPS["END"]):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                m.next = "IDLE"
            with m.Case(OPS["IMEM_LOAD"], OPS["GMEM_LOAD"]):
                with m.If(s.tee & Const(int(not tee_supported(self.cfg)), 1)):
                    m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    self._load_items(m, s, count * ib["oword"])
                    m.d.sync += [s.per.eq(ib["oword"]), s.tee_addr.eq(desc[TEE_BASE[0]:
                                                                         sum(TEE_BASE)]),
                                 s.tee_acc.eq(0), s.tee_slot.eq(0)]
                    m.next = "LOAD"
            with m.Case(OPS["GMEM_EFILL"]):
                with m.If(Const(int(not tee_supported(self.cfg)), 1)):
                    m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
                with m.Elif(count == 0):
                    m.next = "FETCH"
                with m.Else():
                    m.d.sync += [s.tee_addr.eq(desc[TEE_BASE[0]:sum(TEE_BASE)]),
                                 s.tee_slot.eq(0), s.off.eq(0), s.gb.eq(0),
                                 s.items_in.eq(0), s.ef_v.eq(0)]
                    m.next = "EFILL"
            with m.Case(OPS["OMEM_LOAD"]):
                per = Mux(s.bcast, ib["obc"], ib["omem"])
                self._load_items(m, s, count * per)
                m.d.sync += s.per.eq(per)
                m.next = "LOAD"
            with m.Case(OPS["GEMM"]):
                self._load_items(m, s, count * ib["mask"])
                m.d.sync += [s.per.eq(ib["mask"]), s.eng.eq(1),
                             gemm.setup.kwords.eq(desc[192:208]),
                             gemm.setup.ncols.eq(desc[208:224]),
                             gemm.setup.regions.eq(desc[224:232]),
                             gemm.setup.accumulate.eq(desc[16])]
                m.next = "LOAD"
            with m.Case(OPS["OMEM_STORE"]):
                m.d.comb += s.em_reset.eq(1)
                m.d.sync += [s.wr_addr.eq(s.dst), s.wr_left.eq(count * ib["omem"]),
                             s.wr_go.eq(1), s.d_addr.eq(s.dst),
                             s.d_left.eq(count * ib["omem"]), s.d_burst.eq(0),
                             s.sa.eq(0), s.sbeat.eq(0), s.kt_col.eq(0),
                             s.kt_left.eq(s.keyf["n_k"])]
                with m.If(count == 0):
                    m.next = "FETCH"
                with m.Else():
                    m.next = "ST_ADDR"
            with m.Case(OPS["GELU"]):
                self._load_items(m, s, count * ib["acc"])
                m.d.sync += [s.per.eq(ib["acc"]), s.wr_addr.eq(s.dst),
                             s.wr_left.eq(count * ib["word"]), s.wr_go.eq(1),
                             s.d_addr.eq(s.dst), s.d_left.eq(count * ib["word"]),
                             s.d_burst.eq(0), s.sa.eq(0), s.gvalid.eq(0)]
                with m.If(count == 0):
                    m.next = "FETCH"
                with m.Else():
                    m.next = "GELU_RUN"
            with m.Case(OPS["SOFTMAX"], OPS["LAYERNORM"]):
                self._decode_rowop(m, s)
            with m.Case(OPS["FFNR"]):
                self._decode_ffnr(m, s)
            with m.Case(OPS["EPRE_XLOAD"], OPS["EPRE_WLOAD"], OPS["EPRE_KLOAD"]):
                with m.If(s.kpk & ((s.glen == 0) | (s.glen > s.eps.dh_max))):
                    m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
                    m.next = "IDLE"     # a key row the transpose buffer cannot take
                with m.Elif(s.kpk):     # key rows: ceil(glen W / D) beats each
                    self._load_items(m, s, count * s.kl_per)
                    m.d.comb += s.em_reset.eq(1)
                    m.d.sync += [s.per.eq(s.kl_per), s.kl_r.eq(0), s.kt_left.eq(count)]
                    m.next = "LOAD"
                with m.Else():
                    self._load_items(m, s, count * ib["eword"])
                    m.d.sync += s.per.eq(ib["eword"])
                    m.next = "LOAD"
            with m.Case(OPS["EPRE_KOMEM"]):
                with m.If(count == 0):
                    m.next = "FETCH"
                with m.Else():
                    m.d.comb += s.em_reset.eq(1)
                    m.d.sync += [s.kt_base.eq(0), s.kt_col.eq(0), s.kt_left.eq(count)]
                    m.next = "KO_READ"
            with m.Case(OPS["EPRE"]):
                self._decode_epre(m, s)
            with m.Case(OPS["EPRE_STORE"]):
                self._decode_epre_store(m, s)
            with m.Case(OPS["GELU_OMEM"]):
                with m.If(count == 0):
                    m.next = "FETCH"
                with m.Else():
                    self._start_write(m, s, count * self.cfg.rows, ib["word"])
                    m.d.sync += [s.go_k.eq(0), s.go_i.eq(0), s.go_r.eq(0)]
                    m.next = "GO_READ"
            with m.Default():
                m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
                m.next = "IDLE"

    def _fsm_load(self, m, s):
        """LOAD: items into the unit the op names; GEMM_WAIT: until the engine is idle."""
        gemm, consume, R = s.gemm, s.consume, self.cfg.rows
        with m.State("LOAD"):
            m.d.comb += s.loading.eq(1)
            with m.Switch(s.op):
                with m.Case(OPS["IMEM_LOAD"]):
                    m.d.comb += [s.sink_ready.eq(1),
                                 gemm.imem_w.en.eq(Mux(consume, 1 << s.bank, 0))]
                with m.Case(OPS["GMEM_LOAD"]):
                    m.d.comb += [s.sink_ready.eq(1), gemm.gmem_w.en.eq(consume),
                                 s.ep.w_w.en.eq(consume & s.tee & s.tee_last)]
                with m.Case(OPS["OMEM_LOAD"]):
                    m.d.comb += [s.sink_ready.eq(1),
                                 gemm.omem_w.en.eq(Mux(consume, (1 << R) - 1, 0))]
                with m.Case(OPS["GEMM"]):
                    m.d.comb += [gemm.mask.valid.eq(s.pending),
                                 s.sink_ready.eq(gemm.mask.ready)]
                with m.Case(OPS["EPRE_XLOAD"]):
                    m.d.comb += [s.sink_ready.eq(1),
                                 s.ep.x_w.en.eq(Mux(consume, 1 << s.bank, 0))]
                with m.Case(OPS["EPRE_KLOAD"]):
                    with m.If(s.kpk):       # the key rows through the emission (_keys)
                        m.d.comb += s.sink_ready.eq(s.kl_ready)
                    with m.Else():
                        m.d.comb += [s.sink_ready.eq(1),
                                     s.ep.kh_w.en.eq(Mux(consume, 1 << s.bank, 0))]
                with m.Case(OPS["EPRE_WLOAD"]):
                    m.d.comb += [s.sink_ready.eq(1), s.ep.w_w.en.eq(consume)]
            done_now = (s.items_out + consume) == s.count
            with m.If(done_now):
                m.d.sync += s.rd_go.eq(0)
                with m.If(s.kpk & (s.count != 0)):   # the last block's Kh writes
                    m.next = "KL_DRAIN"
                with m.Elif(s.op == OPS["GEMM"]):
                    m.d.sync += [s.settle.eq(0), s.eng_bg.eq(1)]
                    with m.If(s.overlap):
                        m.next = "FETCH"
                    with m.Else():
                        m.next = "GEMM_WAIT"
                with m.Else():
                    m.next = "FETCH"
        with m.State("KL_DRAIN"):              # EPRE_KLOAD kpack: until the last Kh write
            with m.If(s.em_done):
                m.next = "FETCH"
        with m.State("GEMM_WAIT"):             # the settle counter runs in _counters
            with m.If(s.eng_free):
                m.next = "FETCH"

    def _fsm_store(self, m, s):
        """ST_ADDR -> ST_LATCH -> ST_SEND for the first OMEM address, then ST_DRAIN
        (responses). While ST_SEND sends an address's beats, OMEM is already read at the
        next address (``st_pre``: its data is on the read port from the second cycle on),
        so the next address's beats follow the last one with no gap; only an address sent
        in one cycle (``omem`` = 1 beat) passes through ST_LATCH again."""
        mem, R, BB = self.mem, self.cfg.rows, s.BB
        pre = Signal(name="st_pre")      # the read port holds the next address's data
        word = Cat(s.gemm.omem_r.data[r] for r in range(R))
        with m.State("ST_ADDR"):
            m.next = "ST_LATCH"
        with m.State("ST_LATCH"):
            with m.If(~s.kt_hold):
                self._kt_latch(m, s)
                m.d.sync += [s.sbuf.eq(word), s.sbeat.eq(0), pre.eq(0)]
                m.next = "ST_SEND"
        with m.State("ST_SEND"):
            m.d.comb += [mem.wr_data.valid.eq(1), s.gemm.omem_r.addr.eq(s.ubase + s.sa + 1)]
            m.d.sync += pre.eq(1)
            with m.If(mem.wr_data.ready):
                m.d.sync += [s.d_left.eq(s.d_left - 1), s.d_addr.eq(s.d_addr + BB),
                             s.d_burst.eq(s.cur_burst - 1), s.sbeat.eq(s.sbeat + 1)]
                with m.If(s.sbeat == s.ib["omem"] - 1):
                    m.d.sync += s.sa.eq(s.sa + 1)
                    with m.If(s.sa + 1 == s.count):
                        m.next = "ST_DRAIN"
                    with m.Elif(pre & ~s.kt_hold):
                        self._kt_latch(m, s)
                        m.d.sync += [s.sbuf.eq(word), s.sbeat.eq(0), pre.eq(0)]
                    with m.Else():
                        m.next = "ST_LATCH"
        with m.State("ST_DRAIN"):
            with m.If((s.wr_left == 0) & (s.outstanding == 0) & ~s.em_busy):
                m.d.sync += s.wr_go.eq(0)
                m.next = "FETCH"

    def _gelu(self, m, s):
        """The CFSE's GELU + requantisation unit behind the DMA: its input is the assembled
        accumulator word, its parameters the descriptor's, its output one operand word
        (``gbuf``) that the write side sends beat by beat."""
        cfg, L = self.cfg, self.cfg.lanes
        s.gelu = gelu = GeluUnit(cfg)
        m.submodules.gelu = gelu
        par = {k: s.desc[lsb:lsb + bits] for k, (lsb, bits) in GELU_FIELDS.items()}
        m.d.comb += [gelu.par.requant.eq(1), gelu.par.in_mult.eq(par["in_mult"]),
                     gelu.par.in_shift.eq(par["in_shift"]),
                     gelu.par.out_mult.eq(par["out_mult"]),
                     gelu.par.out_shift.eq(par["out_shift"])]
        for lane in range(L):
            m.d.comb += gelu.inp.payload[lane].eq(
                s.asm[64 * lane:64 * lane + gelu.in_bits].as_signed())
        s.gbuf = Signal(16 * L, name="gelu_buf")
        s.gvalid = Signal(name="gelu_buf_valid")
        s.gbeat = Signal(range(max(2, s.ib["word"])), name="gelu_beat")
        m.d.comb += gelu.out.ready.eq(~s.gvalid)
        with m.If(gelu.out.valid & gelu.out.ready):
            m.d.sync += [s.gbuf.eq(Cat(gelu.out.payload[lane] for lane in range(L))),
                         s.gvalid.eq(1), s.gbeat.eq(0)]

    def _fsm_gelu(self, m, s):
        """GELU_RUN: accumulator words in -> GELU unit -> operand words out, until every
        word is written and acknowledged."""
        mem, BB, D, ib = self.mem, s.BB, s.D, s.ib
        with m.State("GELU_RUN"):
            self._feed(m, s, s.gelu.inp)
            m.d.comb += mem.wr_data.valid.eq(s.gvalid)
            with m.Switch(s.gbeat):
                for i in range(ib["word"]):
                    with m.Case(i):
                        m.d.comb += mem.wr_data.payload.data.eq(
                            s.gbuf[i * D:(i + 1) * D])
            with m.If(mem.wr_data.valid & mem.wr_data.ready):
                m.d.sync += [s.d_left.eq(s.d_left - 1), s.d_addr.eq(s.d_addr + BB),
                             s.d_burst.eq(s.cur_burst - 1), s.gbeat.eq(s.gbeat + 1)]
                with m.If(s.gbeat == ib["word"] - 1):
                    m.d.sync += [s.sa.eq(s.sa + 1), s.gvalid.eq(0)]
            with m.If((s.sa == s.count) & (s.wr_left == 0) & (s.outstanding == 0)):
                m.d.sync += [s.wr_go.eq(0), s.rd_go.eq(0)]
                m.next = "FETCH"

    def _feed(self, m, s, stream, gate=1):
        """The assembled items into a unit's input ``stream`` (valid / ready, gated by
        ``gate``): the sink takes an item when the unit does, and the read engine stops
        after the descriptor's last item."""
        m.d.comb += [s.loading.eq(1), stream.valid.eq(s.pending & gate),
                     s.sink_ready.eq(stream.ready & gate)]
        with m.If((s.items_out + s.consume) == s.count):
            m.d.sync += s.rd_go.eq(0)

    def _rowops(self, m, s):
        """The CFSE's softmax and layer-norm units behind the DMA. Their input is the
        assembled word (L Q.11 values; a softmax word also carries L keep bits, which wait
        in ``keep_fifo`` for the word's probabilities); their output, requantised (softmax:
        ``golden.dsc.prob_requant``, kept entries only) or as is (layer norm), goes to the
        two-item output buffer (:meth:`_out_stream`) that the write side sends beat by
        beat (one word per ``word`` beats)."""
        cfg, L, W = self.cfg, self.cfg.lanes, self.cfg.width
        s.sm = sm = SoftmaxUnit(cfg, n_max=cfg.dsc_row_max)
        s.ln = ln = LayerNormUnit(cfg, n_max=cfg.dsc_row_max)
        m.submodules.softmax = sm
        m.submodules.layernorm = ln
        s.rf = {k: s.desc[lsb:lsb + bits] for k, (lsb, bits) in ROW_FIELDS.items()}
        s.is_sm = s.op == OPS["SOFTMAX"]
        s.kf = kf = SyncFIFOBuffered(width=L, depth=sm.depth + 64)
        m.submodules.keep_fifo = kf
        m.d.comb += [sm.n.eq(s.rf["n"]), ln.n.eq(s.rf["n"]), ln.eps.eq(s.rf["eps"]),
                     kf.w_data.eq(s.asm[16 * L:17 * L])]
        for lane in range(L):
            v = s.asm[16 * lane:16 * lane + 16].as_signed()
            m.d.comb += [sm.x.payload[lane].eq(v), ln.x.payload[lane].eq(v),
                         ln.gb.payload.gamma[lane].eq(s.rf["gamma"].as_signed()),
                         ln.gb.payload.beta[lane].eq(s.rf["beta"].as_signed())]
        s.gi = Signal(range(ln.n_lim + 1), name="gb_addr")
        m.d.comb += ln.gb.payload.addr.eq(s.gi)
        nb = max(s.ib["word"], s.ib["mask"], s.ib["emask"])
        s.rbuf = Signal(nb * s.D, name="out_buf")
        s.rvalid = Signal(name="out_buf_valid")
        s.qbuf = Signal(nb * s.D, name="out_queue")
        s.qvalid = Signal(name="out_queue_valid")
        s.rbeat = Signal(range(max(2, nb)), name="out_beat")
        s.oper = Signal(range(nb + 1), name="out_per")
        s.n_out = Signal(32, name="out_items")
        wmax = (1 << (W - 1)) - 1
        probs = []
        for lane in range(L):
            num = sm.y.payload[lane] * wmax
            q, r = num >> 15, num[:15]
            up = (r > 0x4000) | ((r == 0x4000) & q[0])
            probs.append(Mux(kf.r_data[lane], q + up, 0)[:16])
        s.sm_word = Cat(probs)
        s.ln_word = Cat(Value.cast(ln.y.payload[lane])[:16] for lane in range(L))

    def _decode_rowop(self, m, s):
        """DECODE of SOFTMAX / LAYERNORM: start the read (``count`` words) and the write
        (as many operand words); ``n`` must be in 1..n_max (else ``bad_op``)."""
        ib, count, n = s.ib, s.count, s.rf["n"]
        per_in = Mux(s.is_sm, ib["smx"], ib["word"])
        with m.If(count == 0):
            m.next = "FETCH"
        with m.Elif((n == 0) | (n > s.sm.n_max)):
            m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
            m.next = "IDLE"
        with m.Else():
            self._load_items(m, s, count * per_in)
            m.d.sync += [s.per.eq(per_in), s.gi.eq(0)]
            self._start_write(m, s, count, ib["word"])
            m.next = "ROW_RUN"

    @staticmethod
    def _start_write(m, s, n_out, per_out):
        """Set up the write side for ``n_out`` items of ``per_out`` beats to ``dst``."""
        m.d.sync += [s.wr_addr.eq(s.dst), s.wr_left.eq(n_out * per_out), s.wr_go.eq(1),
                     s.d_addr.eq(s.dst), s.d_left.eq(n_out * per_out), s.d_burst.eq(0),
                     s.sa.eq(0), s.rvalid.eq(0), s.qvalid.eq(0), s.n_out.eq(n_out),
                     s.oper.eq(per_out)]

    def _out_stream(self, m, s, yv, ydata, idle=1):
        """Inside a state: the unit's output items (``yv``, ``ydata``) into a two-item
        output buffer: ``rbuf`` is sent beat by beat, ``qbuf`` waits behind it. The unit's
        ``ready`` is ``~qvalid``, a register: no combinational path from the memory's
        ``wr_data.ready`` to the unit (and through it to ``rd_data.ready``). One item per
        ``oper`` beats. Leaves for FETCH once ``n_out`` items are written and
        acknowledged (and ``idle``: the unit is done). Returns the unit's ``ready`` and the take strobe."""
        mem, BB, D = self.mem, s.BB, s.D
        nb = max(s.ib["word"], s.ib["mask"], s.ib["emask"])
        m.d.comb += mem.wr_data.valid.eq(s.rvalid)
        with m.Switch(s.rbeat):
            for i in range(nb):
                with m.Case(i):
                    m.d.comb += mem.wr_data.payload.data.eq(s.rbuf[i * D:(i + 1) * D])
        fire = mem.wr_data.valid & mem.wr_data.ready
        last = fire & (s.rbeat == s.oper - 1)
        rready = Signal(name=f"out_ready_{len(s.__dict__)}")
        take = Signal(name=f"out_take_{len(s.__dict__)}")
        m.d.comb += [rready.eq(~s.qvalid), take.eq(yv & rready)]
        with m.If(fire):
            m.d.sync += [s.d_left.eq(s.d_left - 1), s.d_addr.eq(s.d_addr + BB),
                         s.d_burst.eq(s.cur_burst - 1), s.rbeat.eq(s.rbeat + 1)]
        with m.If(last):
            m.d.sync += s.sa.eq(s.sa + 1)
        with m.If(~s.rvalid | last):
            with m.If(s.qvalid):
                m.d.sync += [s.rbuf.eq(s.qbuf), s.rvalid.eq(1), s.rbeat.eq(0),
                             s.qvalid.eq(0)]
            with m.Elif(take):
                m.d.sync += [s.rbuf.eq(ydata), s.rvalid.eq(1), s.rbeat.eq(0)]
            with m.Else():
                m.d.sync += s.rvalid.eq(0)
        with m.Elif(take):
            m.d.sync += [s.qbuf.eq(ydata), s.qvalid.eq(1)]
        with m.If((s.sa == s.n_out) & (s.wr_left == 0) & (s.outstanding == 0) & idle):
            m.d.sync += [s.wr_go.eq(0), s.rd_go.eq(0)]
            m.next = "FETCH"
        return rready, take

    def _fsm_rowop(self, m, s):
        """ROW_RUN: words in -> softmax / layer-norm unit -> operand words out, until every
        word is written and acknowledged (the layer norm's gamma / beta words are written
        in the first ``ceil(n / L)`` cycles, before its first row needs them)."""
        L = self.cfg.lanes
        sm, ln, kf = s.sm, s.ln, s.kf
        with m.State("ROW_RUN"):
            with m.If(s.is_sm):
                self._feed(m, s, sm.x, gate=kf.w_rdy)
                m.d.comb += kf.w_en.eq(s.consume)
            with m.Else():
                self._feed(m, s, ln.x)
                with m.If(s.gi * L < s.rf["n"]):
                    m.d.comb += ln.gb.valid.eq(1)
                    m.d.sync += s.gi.eq(s.gi + 1)
            yv = Mux(s.is_sm, sm.y.valid, ln.y.valid)
            rready, take = self._out_stream(m, s, yv, Mux(s.is_sm, s.sm_word, s.ln_word))
            m.d.comb += [sm.y.ready.eq(rready & s.is_sm), ln.y.ready.eq(rready & ~s.is_sm),
                         kf.r_en.eq(take & s.is_sm)]

    def _ffnr(self, m, s):
        """The FFN-Reuse unit behind the DMA (``hw.ffnr.FFNR``, its Y_d cache unused): H
        words (operand words, W-bit) into its ``h`` port; its mask beats (the GEMM's mask
        item format) or delta beats (``H' - H_d`` where the mask is set, W+1 bits in 16-bit
        containers) to the output buffer."""
        cfg, L, W = self.cfg, self.cfg.lanes, self.cfg.width
        s.ff = ff = FFNR(cfg, **dsc_ffnr_sizes(cfg))
        m.submodules.ffnr = ff
        s.ffr = {k: s.desc[lsb:lsb + bits] for k, (lsb, bits) in FFNR_FIELDS.items()}
        s.aux = s.desc[128:160]
        s.ffph = Signal(name="ffnr_phase")      # 0: DENSE (histogram, threshold) running
        m.d.comb += [ff.y.valid.eq(0), ff.y_out.ready.eq(0), ff.hist_addr.eq(0),
                     ff.cmd.payload.t.eq(s.ffr["t"]), ff.cmd.payload.n.eq(s.ffr["n"]),
                     ff.cmd.payload.d.eq(0), ff.cmd.payload.s_code.eq(s.ffr["s_code"]),
                     ff.cmd.payload.op.eq(Mux(~s.ffph, FfnrOp.DENSE,
                                              Mux(s.ffr["sparse"], FfnrOp.DELTA,
                                                  FfnrOp.MASK)))]
        for lane in range(L):
            m.d.comb += ff.h.payload[lane].eq(s.asm[16 * lane:16 * lane + W].as_signed())
        s.ff_delta = Cat(_sext(Value.cast(ff.delta.payload[lane]), 16) for lane in range(L))
        s.ff_mask = Value.cast(ff.mask.payload)

    def _decode_ffnr(self, m, s):
        """DECODE of FFNR: check t, n, s_code against the unit; set up the write side
        (dense: ``aux`` mask items; sparse: ``count`` delta words)."""
        ib, count, ffr, sz = s.ib, s.count, s.ffr, s.ff.sizes
        with m.If(count == 0):
            m.next = "FETCH"
        with m.Elif((ffr["t"] == 0) | (ffr["t"] > sz.t_max) | (ffr["n"] == 0) |
                    (ffr["n"] > sz.n_max) | (ffr["s_code"] >= sz.den)):
            m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
            m.next = "IDLE"
        with m.Else():
            m.d.sync += s.ffph.eq(0)
            with m.If(ffr["sparse"]):
                self._start_write(m, s, count, ib["word"])
            with m.Else():
                self._start_write(m, s, s.aux, ib["mask"])
            m.next = "FF_CMD"

    def _fsm_ffnr(self, m, s):
        """FF_CMD (a unit command) -> FF_IN (DENSE: ``count`` H words from ``src``; until
        the threshold is found) -> FF_CMD -> FF_OUT (dense: MASK, its beats written;
        sparse: DELTA, ``count`` H' words from ``aux`` in, delta words out)."""
        ff, ib, sparse = s.ff, s.ib, s.ffr["sparse"]
        with m.State("FF_CMD"):
            m.d.comb += ff.cmd.valid.eq(1)
            with m.If(ff.cmd.ready):
                with m.If(~s.ffph):
                    self._load_items(m, s, s.count * ib["word"])
                    m.d.sync += s.per.eq(ib["word"])
                    m.next = "FF_IN"
                with m.Else():
                    with m.If(sparse):
                        self._load_items(m, s, s.count * ib["word"], s.aux)
                    m.next = "FF_OUT"
        with m.State("FF_IN"):
            self._feed(m, s, ff.h)
            with m.If((s.items_out == s.count) & ~ff.busy):
                m.d.sync += s.ffph.eq(1)
                m.next = "FF_CMD"
        with m.State("FF_OUT"):
            with m.If(sparse):
                self._feed(m, s, ff.h)
            yv = Mux(sparse, ff.delta.valid, ff.mask.valid)
            rready, _ = self._out_stream(m, s, yv, Mux(sparse, s.ff_delta, s.ff_mask))
            m.d.comb += [ff.delta.ready.eq(rready & sparse), ff.mask.ready.eq(rready & ~sparse)]

    def _epre(self, m, s):
        """The EPRE behind the DMA (``hw.epre.EPRE``, sizes :func:`dsc_epre_sizes`): X words
        into its banks (``EPRE_XLOAD``, word i to bank i mod U at ``ubase + i // U``; exact
        keys into its Kh banks the same way, ``EPRE_KLOAD``),
        Wq^T / Wk^T words into its W memory (``EPRE_WLOAD``, the ``glen`` / ``gstride``
        address walk), the run descriptor from the EPRE descriptor's bits 128..; its mask
        rows (``hw.epre.mask_layout`` values) to the output buffer."""
        cfg = self.cfg
        s.eps = sz = dsc_epre_sizes(cfg)
        s.ep = ep = EPRE(cfg, units=sz.units, n_max=sz.n_max, d_max=sz.d_max,
                         dh_max=sz.dh_max, selectors=sz.selectors, selector_kind=sz.kind,
                         epre_unit_boxes=self.epre_unit_boxes, w_bufs=sz.w_bufs,
                         w_read=True, k_bufs=sz.k_bufs)
        m.submodules.epre = ep
        Le, W = cfg.epre_lane_count, cfg.width
        ew = Cat(s.asm[16 * lane:16 * lane + W] for lane in range(Le))
        rl = run_layout(cfg, sz)
        s.erun_bits = rl.size
        self._tee(m, s, ep, ew)
        eaddr = s.ubase + s.gb + s.off       # EPRE_XLOAD / EPRE_KLOAD: word i // U
        drun = s.desc[EPRE_RUN_LSB:EPRE_RUN_LSB + s.erun_bits]
        s.ep_wbuf = Signal(name="epre_w_buf")      # the W buffer of the run handed over last
        self._queue(m, s, ep, rl, drun)
        m.d.comb += [ep.x_w.addr.eq(eaddr), ep.kh_w.addr.eq(eaddr),
                     ep.h_r.addr.eq(0), ep.h_r.k.eq(0),
                     ep.run.payload.as_value().eq(Mux(s.ep_pend, s.ep_prun, drun))]
        for u in range(sz.units):
            m.d.comb += ep.x_w.data[u].as_value().eq(ew)
        m.d.comb += ep.kh_w.data.as_value().eq(ew)
        s.ep_mask = Value.cast(ep.mask.payload)
        s.overlap = s.desc[17]
        s.ep_bg = Signal(name="epre_background")   # the run's rows go to the FIFO
        s.ep_flush = Signal(name="epre_fifo_flush")
        s.ep_took = Signal(range(sz.n_max + 2), name="epre_store_taken")   # EP_STORE's rows
        fifo = SyncFIFOBuffered(width=len(s.ep_mask), depth=sz.n_max)
        s.ep_fifo = fifo
        m.submodules.epre_fifo = ResetInserter(s.ep_flush)(fifo)
        m.d.sync += s.ep_flush.eq(0)
        m.d.comb += [fifo.w_data.eq(s.ep_mask), fifo.w_en.eq(ep.mask.valid & s.ep_bg)]
        with m.If(s.ep_bg):
            m.d.comb += ep.mask.ready.eq(fifo.w_rdy)

    def _queue(self, m, s, ep, rl, drun):
        """Queued runs (issue 19): an overlapped EPRE whose run has ``k_given`` and
        ``k_wait`` (``ep_q``) goes into a one-run slot (``ep_pend``, ``ep_prun``) and the
        core goes on; the slot's run starts when the EPRE is idle. ``ep_full[b]``: Kh buffer
        b holds the keys of a waiting run (set by a ``kq`` OMEM_STORE's last key, cleared
        when the queued run that read it ends, unless that run has ``k_hold``: a sub-run
        keeps its head's keys for the next one); it is the EPRE's ``keys_ok``.
        ``ep_wbuf`` / ``ep_kbuf`` / ``ep_kwait`` / ``ep_khold``: W and Kh buffer of the run
        handed over last, whether it came through the slot and whether it holds its keys."""
        def bit(name):
            return drun[rl[name].offset]
        s.ep_q = Signal(name="epre_queued")
        s.ep_pend = Signal(name="epre_pending")
        s.ep_prun = Signal(s.erun_bits, name="epre_pending_run")
        s.ep_full = Signal(2, name="epre_keys_full")
        s.ep_kbuf = Signal(name="epre_k_buf")
        s.ep_kwait = Signal(name="epre_k_wait")
        s.ep_khold = Signal(name="epre_k_hold")
        busy_q = Signal(name="epre_busy_q")
        prun = s.ep_prun
        s.ep_pwbuf = prun[rl["w_buf"].offset]
        m.d.comb += [s.ep_q.eq(s.desc[17] & bit("k_given") & bit("k_wait")),
                     ep.keys_ok.eq(s.ep_full)]
        m.d.sync += busy_q.eq(ep.busy)
        with m.If(s.ep_pend):
            m.d.comb += ep.run.valid.eq(1)
        with m.If(s.ep_pend & ep.run.ready):
            m.d.sync += [s.ep_pend.eq(0), s.ep_wbuf.eq(s.ep_pwbuf), s.ep_kwait.eq(1),
                         s.ep_kbuf.eq(prun[rl["k_buf"].offset]),
                         s.ep_khold.eq(prun[rl["k_hold"].offset])]
        with m.If(busy_q & ~ep.busy & s.ep_kwait & ~s.ep_khold):   # a queued run ended
            m.d.sync += s.ep_full.bit_select(s.ep_kbuf, 1).eq(0)

    def _tee(self, m, s, ep, ew):
        """The W memory's write side: EPRE_WLOAD's words (``ew``, the walk's address), or a
        ``tee`` GMEM_LOAD's: GMEM words gathered lane slot by lane slot into ``tee_acc``
        (``Le / L`` slots), written at ``tee_addr`` when the last slot is filled or the
        word's ``glen`` group (its weight column) ends."""
        cfg = self.cfg
        Le, L, W = cfg.epre_lane_count, cfg.lanes, cfg.width
        slots = max(1, Le // L)
        s.tee = Signal(name="tee")
        s.tee_acc = acc = Signal(W * Le, name="tee_acc")
        s.tee_slot = slot = Signal(range(max(2, slots)), name="tee_slot")   # 1 bit at least
        s.tee_addr = taddr = Signal(len(ep.w_w.addr), name="tee_addr")
        s.tee_last = last = Signal(name="tee_last")
        s.ef_v = Signal(name="efill_valid")       # GMEM_EFILL: a W word read last cycle
        s.ef_slot = Signal.like(slot, name="efill_slot")
        s.ef_addr = Signal(32, name="efill_addr")
        m.d.comb += s.tee.eq((s.op == OPS["GMEM_LOAD"]) & s.desc[TEE_BIT])
        waddr = Signal.like(ep.w_w.addr, name="epre_w_addr")
        wdata = Signal(W * Le, name="epre_w_data")
        m.d.comb += [waddr.eq(s.ubase + s.gb + s.off), wdata.eq(ew)]
        if tee_supported(cfg):
            word, step = s.asm[:W * L], W * L
            merged = Signal(W * Le, name="tee_word")
            for k in range(slots):
                m.d.comb += merged[k * step:(k + 1) * step].eq(
                    Mux(slot == k, word, acc[k * step:(k + 1) * step]))
            m.d.comb += last.eq((slot == slots - 1) | (s.off + 1 >= s.glen))
            with m.If(s.tee & s.loading & s.consume):
                self._slot_step(m, s)
                m.d.sync += acc.eq(Mux(last, 0, merged))
            with m.If(s.tee):
                m.d.comb += [waddr.eq(taddr), wdata.eq(merged)]
        m.d.comb += [ep.w_w.addr.eq(waddr), ep.w_w.data[0].as_value().eq(wdata)]

    @staticmethod
    def _slot_step(m, s):
        """One step of the tee's lane-slot walk (the GMEM_LOAD tee and GMEM_EFILL): after a
        word's last lane slot or its column's end (``tee_last``) the next EPRE word, else
        the next slot."""
        with m.If(s.tee_last):
            m.d.sync += [s.tee_slot.eq(0), s.tee_addr.eq(s.tee_addr + 1)]
        with m.Else():
            m.d.sync += s.tee_slot.eq(s.tee_slot + 1)

    def _decode_epre(self, m, s):
        """DECODE of EPRE: ``count`` mask items out (the run's query rows); an overlapped
        run (``overlap``) empties the mask FIFO and routes the rows into it; a queued one
        (``ep_q``) goes into the slot and keeps the FIFO's rows."""
        with m.If(s.count == 0):
            m.next = "FETCH"
        with m.Elif(s.ep_q):
            m.d.sync += [s.ep_bg.eq(1), s.ep_pend.eq(1),
                         s.ep_prun.eq(s.desc[EPRE_RUN_LSB:EPRE_RUN_LSB + s.erun_bits])]
            m.next = "EP_RUN"
        with m.Elif(s.overlap):
            m.d.sync += [s.ep_bg.eq(1), s.ep_flush.eq(1)]
            m.next = "EP_RUN"
        with m.Else():
            m.d.sync += s.ep_bg.eq(0)
            self._start_write(m, s, s.count, s.ib["emask"])
            m.next = "EP_RUN"

    def _decode_epre_store(self, m, s):
        """DECODE of EPRE_STORE: ``count`` mask rows from the FIFO out (``bad_op`` if it
        holds fewer)."""
        with m.If(s.count == 0):
            m.next = "FETCH"
        with m.Elif(s.ep_fifo.r_level < s.count):
            m.d.sync += [self.error[2].eq(1), self.busy.eq(0), self.done.eq(1)]
            m.next = "IDLE"
        with m.Else():
            self._start_write(m, s, s.count, s.ib["emask"])
            m.d.sync += s.ep_took.eq(0)
            m.next = "EP_STORE"

    def _fsm_epre(self, m, s):
        """EP_RUN (hand the run to the EPRE; an overlapped run goes on with the next
        descriptor) -> EP_OUT (its mask rows to memory, until every item is acknowledged
        and the EPRE is idle); EP_STORE: the FIFO's rows to memory."""
        ep, fifo = s.ep, s.ep_fifo
        with m.State("EP_RUN"):
            with m.If(s.ep_q):          # queued: the slot hands it over (``_queue``)
                m.next = "FETCH"
            with m.Elif(ep.run.ready & s.ep_bg):
                m.next = "FETCH"
            with m.Elif(ep.run.ready):
                m.next = "EP_OUT"
            with m.If(~s.ep_q):
                m.d.comb += ep.run.valid.eq(1)
                m.d.sync += [s.ep_wbuf.eq(ep.run.payload.w_buf), s.ep_kwait.eq(0),
                             s.ep_kbuf.eq(ep.run.payload.k_buf)]
        with m.State("EP_OUT"):
            rready, _ = self._out_stream(m, s, ep.mask.valid, s.ep_mask, ~ep.busy)
            m.d.comb += ep.mask.ready.eq(rready)
        with m.State("EP_STORE"):      # exactly its rows: a queued run's may follow them
            more = s.ep_took != s.n_out
            _, take = self._out_stream(m, s, fifo.r_rdy & more, fifo.r_data)
            m.d.comb += fifo.r_en.eq(take)
            with m.If(take):
                m.d.sync += s.ep_took.eq(s.ep_took + 1)

    def _gelu_omem(self, m, s):
        """GELU_OMEM's transpose buffer: ``tb`` holds L columns of R results (column i from
        the group's i-th OMEM address, captured the cycle after its read), and ``go_word``
        is row ``go_r``'s L results, the GELU unit's input word."""
        cfg = self.cfg
        R, L, A = cfg.rows, cfg.lanes, cfg.acc_width
        s.tb = Signal(L * R * A, name="gelu_tbuf")
        s.go_k = Signal(32, name="go_group")
        s.go_i = Signal(range(L + 1), name="go_issue")
        s.go_r = Signal(range(max(2, R)), name="go_row")
        s.go_cap = Signal(name="go_capture")
        s.go_ci = Signal(range(max(2, L)), name="go_capture_col")
        m.d.sync += s.go_cap.eq(0)
        col = Cat(s.gemm.omem_r.data[r] for r in range(R))
        with m.If(s.go_cap):
            with m.Switch(s.go_ci):
                for i in range(L):
                    with m.Case(i):
                        m.d.sync += s.tb[i * R * A:(i + 1) * R * A].eq(col)
        s.go_word = Signal(L * A, name="go_word")
        with m.Switch(s.go_r):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += s.go_word.eq(Cat(s.tb[(i * R + r) * A:(i * R + r + 1) * A]
                                                 for i in range(L)))

    def _fsm_efill(self, m, s):
        """EFILL (GMEM_EFILL): one W-memory read issued a cycle at ``tee_addr`` (the tee's
        lane-slot walk), its L-lane slot written to GMEM the cycle after at the walk's
        address; FETCH once the last word is written."""
        cfg, gemm = self.cfg, s.gemm
        L, W = cfg.lanes, cfg.width
        if not tee_supported(cfg):       # DECODE stops a GMEM_EFILL with bad_op
            return
        with m.State("EFILL"):
            issue = s.items_in != s.count
            m.d.comb += [s.ep.w_r.addr.eq(s.tee_addr), s.advance.eq(issue)]
            m.d.sync += [s.ef_v.eq(issue), s.ef_slot.eq(s.tee_slot), s.ef_addr.eq(s.uaddr)]
            with m.If(issue):
                m.d.sync += s.items_in.eq(s.items_in + 1)
                self._slot_step(m, s)
            with m.If(s.ef_v):
                m.d.comb += [gemm.gmem_w.en.eq(1), gemm.gmem_w.addr.eq(s.ef_addr),
                             gemm.gmem_w.data.as_value().eq(
                                 Value.cast(s.ep.w_r.data).word_select(s.ef_slot, W * L))]
            with m.If(~issue):
                m.next = "FETCH"

    def _keys(self, m, s):
        """Exact keys into the EPRE's Kh banks on the core (issue 19; EPRE_KOMEM and an
        OMEM_STORE with ``ktee``). ``kt_tb``, the transpose buffer: a row block's d_head
        columns, R keys x ``dh_max`` W-bit values; column ``kt_ci`` is captured from the OMEM
        read port's R results when ``kt_cap`` is high, each requantised as stage 1
        requantises Kh_acc, ``saturate(acc >> shift, W)``. The emission engine writes the
        block's key rows into the Kh banks one word a cycle, key by key and each key's
        ``h_words`` words in order (key t to bank ``t mod U`` at ``(t // U) h_words + hw``,
        continuing from the previous block; ``em_reset`` starts at key 0); ``em_start``
        starts it with ``em_rows_in`` keys, ``em_busy`` is high while it writes, ``em_done``
        in the cycle of its last word. Lanes past d_head (``glen``) are zero."""
        cfg, ep = self.cfg, s.ep
        R, W, Le = cfg.rows, cfg.width, cfg.epre_lane_count
        U, dhm = s.eps.units, s.eps.dh_max
        hwm = -(-dhm // Le)
        kf = {k: s.desc[lsb:lsb + bits] for k, (lsb, bits) in KEY_FIELDS.items()}
        s.keyf = kf
        s.kt_tb = tb = Signal(dhm * R * W, name="kt_tbuf")
        s.kpk = Signal(name="kload_packed")     # an EPRE_KLOAD of key rows (_kload_rows)
        s.kt_cap = Signal(name="kt_capture")
        s.kt_ci = Signal(range(max(2, dhm)), name="kt_capture_col")
        hi, lo = (1 << (W - 1)) - 1, -(1 << (W - 1))
        keys = []
        for r in range(R):
            q = Value.cast(s.gemm.omem_r.data[r]).as_signed() >> kf["shift"]
            keys.append(Mux(q > hi, hi, Mux(q < lo, lo, q))[:W])
        with m.If(s.kt_cap):
            with m.Switch(s.kt_ci):
                for c in range(dhm):
                    with m.Case(c):
                        m.d.sync += tb[c * R * W:(c + 1) * R * W].eq(Cat(keys))
        # the walks: EPRE_KOMEM's reads (``kt_base`` + ``kt_col``, captured a cycle later:
        # ``ko_cap`` / ``ko_ci``), an OMEM_STORE's latched addresses (``kt_col`` over the
        # row block, ``st_cap`` in K_h's window ``kt_win``); ``kt_left`` keys to emit
        s.kt_on = Signal(name="ktee")
        s.kt_col = Signal(16, name="kt_col")
        s.kt_base = Signal(32, name="kt_base")
        s.kt_left = Signal(16, name="kt_left")
        s.ko_cap = Signal(name="ko_capture")
        s.ko_ci = Signal(range(max(2, dhm)), name="ko_capture_col")
        s.st_cap = Signal(name="st_capture")
        s.kt_win = Signal(name="kt_window")
        s.kt_hold = Signal(name="kt_hold")
        m.d.sync += s.ko_cap.eq(0)
        m.d.comb += [
            s.kt_on.eq((s.op == OPS["OMEM_STORE"]) & s.desc[KTEE_BIT]),
            s.kt_win.eq(s.kt_on & (s.kt_col >= kf["kt_c0"]) & (s.kt_col < kf["kt_c0"] + s.glen)),
            s.kt_cap.eq(s.ko_cap | s.st_cap),
            s.kt_ci.eq(Mux(s.ko_cap, s.ko_ci, s.kt_col - kf["kt_c0"])),
        ]
        s.em_busy = Signal(name="em_busy")
        s.em_start = Signal(name="em_start")
        s.em_reset = Signal(name="em_reset")
        s.em_rows_in = Signal(range(R + 1), name="em_rows_in")
        s.em_rows = Signal(range(R + 1), name="em_rows")
        s.em_r = Signal(range(max(2, R)), name="em_row")
        s.em_hw = Signal(range(max(2, hwm)), name="em_word_index")
        s.em_bank = Signal(range(max(2, U)), name="em_bank")
        s.em_gaddr = Signal.like(ep.kh_w.addr, name="em_gaddr")   # (t // U) h_words
        s.em_done = Signal(name="em_done")
        # lanes past min(Le, dh_max) never hold a key element: the word is that wide, and
        # the Kh write zero-extends it; lane i of word hw is column hw Le + i
        word = Signal(min(Le, dhm) * W, name="em_word")
        lanes = [[(hw, hw * Le + i) for hw in range(hwm) if hw * Le + i < dhm]
                 for i in range(min(Le, dhm))]
        with m.Switch(s.em_r):
            for r in range(R):
                with m.Case(r):
                    for i, opts in enumerate(lanes):
                        lane = word[i * W:(i + 1) * W]
                        with m.Switch(s.em_hw):
                            for hw, c in opts:
                                with m.Case(hw):
                                    m.d.comb += lane.eq(Mux(c < s.glen,
                                                            tb[(c * R + r) * W:
                                                               (c * R + r + 1) * W], 0))
        last_hw = s.em_hw + 1 >= kf["h_words"]
        wrap = s.em_bank == U - 1
        m.d.comb += s.kt_hold.eq(s.kt_win & s.em_busy)   # the buffer is still emitted
        kq = s.kt_on & s.desc[KQ_BIT]          # a queued run's keys: Kh buffer k_buf
        with m.If(s.em_reset):
            m.d.sync += [s.em_bank.eq(0),
                         s.em_gaddr.eq(Mux(s.kpk, s.ubase,
                                           Mux(kq & kf["k_buf"], s.eps.h_depth, 0)))]
        with m.If(s.em_start):
            m.d.sync += [s.em_busy.eq(1), s.em_rows.eq(s.em_rows_in), s.em_r.eq(0),
                         s.em_hw.eq(0)]
        with m.If(s.em_busy):
            m.d.comb += [ep.kh_w.en.eq(1 << s.em_bank),
                         ep.kh_w.addr.eq(s.em_gaddr + s.em_hw),
                         ep.kh_w.data.as_value().eq(word)]
            with m.If(last_hw):
                m.d.sync += [s.em_hw.eq(0), s.em_r.eq(s.em_r + 1),
                             s.em_bank.eq(Mux(wrap, 0, s.em_bank + 1)),
                             s.em_gaddr.eq(Mux(wrap, s.em_gaddr + kf["h_words"],
                                               s.em_gaddr))]
                with m.If(s.em_r + 1 >= s.em_rows):
                    m.d.comb += s.em_done.eq(1)
                    m.d.sync += s.em_busy.eq(0)
                    with m.If(kq & (s.kt_left == 0)):   # the last key: the buffer is full
                        m.d.sync += s.ep_full.bit_select(kf["k_buf"], 1).eq(1)
            with m.Else():
                m.d.sync += s.em_hw.eq(s.em_hw + 1)
        self._kload_rows(m, s, tb)

    def _kload_rows(self, m, s, tb):
        """EPRE_KLOAD with ``kpack`` (``kpk``): each key row (``glen`` = d_head W-bit
        elements, element c at bits ``c W`` of the item, ``kl_per`` beats) goes into row
        ``kl_r`` of the transpose buffer; a row block's last row (R rows, or the keys' last)
        starts the emission of its rows; a key of more beats than Kh words (``kl_per >
        h_words``) is a block of its own. A row may be taken while the previous block is
        still written once the emission has left that row (``kl_r < em_r``); a block's last
        row waits until the emission is done (``kl_ready``)."""
        cfg, D = self.cfg, s.D
        R, W, dhm = cfg.rows, cfg.width, s.eps.dh_max
        s.kl_per = Signal.like(s.per, name="kload_row_beats")
        s.kl_r = Signal(range(max(2, R)), name="kload_row")
        s.kl_ready = Signal(name="kload_ready")
        # a key whose beats outnumber its Kh words is a row block of its own: written as
        # soon as it is in, while the next key's beats arrive
        one = s.kl_per > s.keyf["h_words"]
        closing = (s.kl_r + 1 == R) | (s.kl_r + 1 == s.kt_left) | one
        m.d.comb += [
            s.kpk.eq((s.op == OPS["EPRE_KLOAD"]) & s.desc[KPACK_BIT]),
            s.kl_per.eq((s.glen * W + D - 1) >> (D.bit_length() - 1)),
            s.kl_ready.eq(~s.em_busy | ((s.kl_r < s.em_r) & ~closing)),
        ]
        with m.If(s.consume & s.kpk):
            with m.Switch(s.kl_r):
                for r in range(R):
                    with m.Case(r):
                        m.d.sync += [tb[(c * R + r) * W:(c * R + r + 1) * W]
                                     .eq(s.asm[c * W:(c + 1) * W]) for c in range(dhm)]
            with m.If(closing):
                m.d.comb += [s.em_start.eq(1), s.em_rows_in.eq(s.kl_r + 1)]
                m.d.sync += [s.kt_left.eq(s.kt_left - (s.kl_r + 1)), s.kl_r.eq(0)]
            with m.Else():
                m.d.sync += s.kl_r.eq(s.kl_r + 1)

    def _fsm_komem(self, m, s):
        """KO_READ (a row block's ``glen`` columns, one OMEM read a cycle, each captured the
        cycle after) -> KO_LAST (the last column's capture; the emission starts) -> KO_EMIT
        (until its last key word) -> KO_READ for the next row block, or FETCH after the last
        key. ``kt_col`` counts the columns issued, ``kt_left`` the keys not yet emitted."""
        R = self.cfg.rows
        with m.State("KO_READ"):
            m.d.comb += s.gemm.omem_r.addr.eq(s.ubase + s.kt_base + s.kt_col)
            m.d.sync += [s.ko_cap.eq(1), s.ko_ci.eq(s.kt_col), s.kt_col.eq(s.kt_col + 1)]
            with m.If(s.kt_col + 1 >= s.glen):
                m.next = "KO_LAST"
        with m.State("KO_LAST"):
            rows = Mux(s.kt_left < R, s.kt_left, R)
            m.d.comb += [s.em_start.eq(1), s.em_rows_in.eq(rows)]
            m.d.sync += s.kt_left.eq(s.kt_left - rows)
            m.next = "KO_EMIT"
        with m.State("KO_EMIT"):
            with m.If(s.em_done):
                with m.If(s.kt_left == 0):
                    m.next = "FETCH"
                with m.Else():
                    m.d.sync += [s.kt_base.eq(s.kt_base + s.gstride), s.kt_col.eq(0)]
                    m.next = "KO_READ"

    def _kt_latch(self, m, s):
        """An OMEM_STORE's address is latched: with ``ktee`` a column of K_h's window
        (``kt_c0 .. + glen - 1`` of the ``kt_ncols`` addresses of a row block) goes into the
        transpose buffer, and the window's last column starts the emission of the block's
        keys (``min(R, kt_left)``); ``kt_col`` advances over the row block."""
        kf, R = s.keyf, self.cfg.rows
        m.d.comb += s.st_cap.eq(s.kt_win)
        with m.If(s.kt_on & (s.kt_col + 1 == kf["kt_c0"] + s.glen) & (s.kt_left != 0)):
            rows = Mux(s.kt_left < R, s.kt_left, R)
            m.d.comb += [s.em_start.eq(1), s.em_rows_in.eq(rows)]
            m.d.sync += s.kt_left.eq(s.kt_left - rows)
        m.d.sync += s.kt_col.eq(Mux(s.kt_col + 1 >= kf["kt_ncols"], 0, s.kt_col + 1))

    def _fsm_gelu_omem(self, m, s):
        """GO_READ (L OMEM reads, one a cycle) -> GO_LAST (the last column's capture) ->
        GO_EMIT (R words into the GELU unit, one per cycle it takes one) -> GO_READ for the
        next group, or GO_DRAIN after the last; the GELU unit's words go out through the
        output buffer (:meth:`_out_stream`) in every state, which leaves for FETCH once the
        ``count * R`` words are written and acknowledged."""
        cfg, gelu = self.cfg, s.gelu
        R, L, A = cfg.rows, cfg.lanes, cfg.acc_width
        gword = Cat(gelu.out.payload[lane] for lane in range(L))

        def out():
            rready, _ = self._out_stream(m, s, gelu.out.valid, gword)
            m.d.comb += gelu.out.ready.eq(rready)
        with m.State("GO_READ"):
            m.d.comb += s.gemm.omem_r.addr.eq(s.ubase + s.go_k * L + s.go_i)
            m.d.sync += [s.go_cap.eq(1), s.go_ci.eq(s.go_i), s.go_i.eq(s.go_i + 1)]
            out()
            with m.If(s.go_i == L - 1):
                m.next = "GO_LAST"
        with m.State("GO_LAST"):
            out()
            m.next = "GO_EMIT"
        with m.State("GO_EMIT"):
            m.d.comb += gelu.inp.valid.eq(1)
            for lane in range(L):
                m.d.comb += gelu.inp.payload[lane].eq(
                    s.go_word[A * lane:A * (lane + 1)].as_signed())
            out()
            with m.If(gelu.inp.ready):
                m.d.sync += s.go_r.eq(s.go_r + 1)
                with m.If(s.go_r == R - 1):
                    m.d.sync += [s.go_r.eq(0), s.go_k.eq(s.go_k + 1), s.go_i.eq(0)]
                    with m.If(s.go_k + 1 == s.count):
                        m.next = "GO_DRAIN"
                    with m.Else():
                        m.next = "GO_READ"
        with m.State("GO_DRAIN"):
            out()


def _sext(v, bits: int):
    """Sign-extend the signed value ``v`` to ``bits`` bits."""
    n = len(v)
    return Cat(v, v[n - 1].replicate(bits - n)) if bits > n else v[:bits]

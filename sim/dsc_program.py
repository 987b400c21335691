"""Host side of the DSC core: descriptor programs and memory images (``docs/dsc.md``).

The host turns the core GEMMs of a block iteration (``golden.dsc``'s ``rec["gemms"]``,
per sample) into one program for ``hw.dsc.DscCore``: per product, the gemm engine's tiles
(:func:`exion.sim.gemm_rtl.plan_tiles`, the same host layout the ``gemm`` bench uses), and
per tile the descriptors

    IMEM_LOAD (A's row blocks)  GMEM_LOAD (B's columns)  OMEM_LOAD (bias / Y_d preload)
    GEMM (mask beats, accumulate)  [IMEM_LOAD + GEMM of a second A part]  OMEM_STORE

then ``END``. Every item lives in host memory in the unit's own beat format (``hw/dsc.py``
docstring), written with bulk NumPy (no per-word Python); results come back the same way.

FFN-Reuse's delta FC2 ``Y_d + (H' - H_d) W2`` has W+1-bit inputs; the host splits them
into two W-bit parts ``a1 = clip(delta)``, ``a2 = delta - a1`` that the engine accumulates
on the preloaded ``Y_d`` **[choice]** (exact: two products over the same tiles).

Eager prediction (:class:`PredictJob`): X once (EPRE_XLOAD), per head Wq^T / Wk^T
(EPRE_WLOAD, or teed from the Q|K|V product's own GMEM_LOAD: :func:`_tee_split`) and a run
(EPRE) writing one mask item per query row; the host derives the Q.K^T mask and the Q / K /
V row-skip lists from them. Where the tee does not apply, the product's Q_h / K_h columns
come from the EPRE's W memory instead (GMEM_EFILL; overlapped with two W buffers:
:func:`_efill_overlap`, sequential: :func:`_efill_split`), so the weights still cross the
port once.

Imports no Amaranth except through ``hw`` for the layouts the hardware uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from exion.config import CAU_COLS_PER_CYCLE, Config
from exion.errors import ExionError
from exion.golden.conmerge import conmerge
from exion.golden.dsc_cycles import kh_words, krow_beats

from .gemm_rtl import GemmCase, assemble, plan_tiles
from .payload import pack

__all__ = ["GemmJob", "GeluJob", "SoftmaxJob", "LayerNormJob", "FfnrJob", "PredictJob",
           "epre_job_from_record", "epre_fits",
           "gelu_job_from_record", "softmax_job_from_record", "layernorm_job_from_record",
           "ffnr_job_from_record", "ffnr_fits", "block_jobs", "split_qkv", "block_program",
           "EP_SCHEDULES", "DscProgram",
           "jobs_from_record", "build_program", "read_results", "encode_desc", "decode_desc",
           "program_beats", "stage_durations", "gemm_bodies"]

_FIELDS = (  # name, lsb, bits (hw/dsc.py's descriptor table)
    ("op", 0, 8), ("stage", 8, 8), ("accumulate", 16, 1), ("count", 32, 32),
    ("src", 64, 32), ("dst", 96, 32), ("ubase", 128, 32), ("glen", 160, 16),
    ("gstride", 176, 16), ("kwords", 192, 16), ("ncols", 208, 16), ("regions", 224, 8),
    ("bcast", 17, 1),
)
_GELU_OP, _SOFTMAX_OP, _LAYERNORM_OP, _FFNR_OP, _GELU_OMEM_OP = 6, 7, 8, 9, 14
#: the GELU op's fields in place of kwords / ncols / regions (hw/dsc.py ``GELU_FIELDS``)
_GELU_FIELDS = _FIELDS[:9] + (("in_mult", 192, 15), ("in_shift", 208, 6),
                              ("out_mult", 216, 15), ("out_shift", 232, 6))
#: SOFTMAX / LAYERNORM fields (hw/dsc.py ``ROW_FIELDS``; gamma / beta two's complement)
_ROW_FIELDS = _FIELDS[:9] + (("n", 192, 16), ("gamma", 208, 16), ("beta", 224, 16),
                             ("eps", 240, 16))

#: FFNR fields (hw/dsc.py ``FFNR_FIELDS``; ``aux`` in place of ``ubase``)
_FFNR_FIELDS = _FIELDS[:6] + (("aux", 128, 32), ("t", 192, 16), ("n", 208, 16),
                              ("s_code", 224, 20), ("sparse", 244, 1))


#: EPRE fields (hw/dsc.py ``EPRE_RUN_LSB``: the EPRE's run_layout value from bit 128)
_EPRE_OP = 12
_EPRE_FIELDS = _FIELDS[:6] + (("overlap", 17, 1), ("run", 128, 128))


#: GEMM fields: ``overlap`` (bit 17) in place of OMEM_LOAD's ``bcast``
_GEMM_OP = 4
_GEMM_FIELDS = _FIELDS[:12] + (("overlap", 17, 1),)

#: GMEM_LOAD fields: ``tee`` (bit 18) and ``tee_base`` (hw/dsc.py ``TEE_BIT``, ``TEE_BASE``)
_GMEM_OP = 2
_GMEM_FIELDS = _FIELDS[:9] + (("tee", 18, 1), ("tee_base", 192, 16))
#: GMEM_EFILL fields: the GMEM walk and ``tee_base`` (the W address of the first word read)
_EFILL_OP = 16
_EFILL_FIELDS = _FIELDS[:9] + (("tee_base", 192, 16),)
#: EPRE_KOMEM fields (hw/dsc.py ``KEY_FIELDS``): the keys' shift, Kh words per key row
_KOMEM_OP = 17
_KOMEM_FIELDS = _FIELDS[:9] + (("shift", 192, 6), ("h_words", 200, 8))
#: EPRE_KLOAD fields: ``kpack`` (hw/dsc.py ``KPACK_BIT``: key rows, W-bit elements packed)
#: and ``h_words`` (Kh words a key)
_KLOAD_OP = 15
_KLOAD_FIELDS = _FIELDS[:9] + (("kpack", 18, 1), ("h_words", 200, 8))
#: OMEM_STORE fields: ``ktee`` (hw/dsc.py ``KTEE_BIT``), ``kq`` (``KQ_BIT``) and
#: ``KEY_FIELDS``
_STORE_OP = 5
_STORE_FIELDS = _KOMEM_FIELDS + (("ktee", 18, 1), ("kq", 19, 1), ("k_buf", 198, 1),
                                 ("kt_ncols", 208, 16), ("kt_c0", 224, 16), ("n_k", 240, 16))
#: EPRE_STORE fields: ``kq`` (hw/dsc.py ``KQ_BIT``: wait for the rows, not an idle EPRE)
_EPRE_STORE_OP = 13
_EPRE_STORE_FIELDS = _FIELDS[:9] + (("kq", 19, 1),)


def _fields(op: int) -> tuple:
    if op == _GEMM_OP:
        return _GEMM_FIELDS
    if op == _GMEM_OP:
        return _GMEM_FIELDS
    if op == _EFILL_OP:
        return _EFILL_FIELDS
    if op == _KOMEM_OP:
        return _KOMEM_FIELDS
    if op == _KLOAD_OP:
        return _KLOAD_FIELDS
    if op == _STORE_OP:
        return _STORE_FIELDS
    if op == _EPRE_STORE_OP:
        return _EPRE_STORE_FIELDS
    if op == _EPRE_OP:
        return _EPRE_FIELDS
    if op == _FFNR_OP:
        return _FFNR_FIELDS
    if op in (_SOFTMAX_OP, _LAYERNORM_OP):
        return _ROW_FIELDS
    return _GELU_FIELDS if op in (_GELU_OP, _GELU_OMEM_OP) else _FIELDS


def encode_desc(d: dict) -> bytes:
    """A descriptor dict -> its 32 bytes (unset fields 0)."""
    v = 0
    for name, lsb, bits in _fields(int(d.get("op", 0))):
        x = int(d.get(name, 0))
        if not 0 <= x < (1 << bits):
            raise ExionError(f"descriptor field {name} = {x} does not fit {bits} bits")
        v |= x << lsb
    return v.to_bytes(32, "little")


def decode_desc(raw: bytes) -> dict:
    v = int.from_bytes(raw[:32], "little")
    return {name: (v >> lsb) & ((1 << bits) - 1) for name, lsb, bits in _fields(v & 0xFF)}


@dataclass
class GemmJob:
    """``out = where(mask, base + sum(a_parts) @ b, base)`` for one sample."""

    name: str
    a_parts: list            # [(M, K)] W-bit parts, summed by accumulation
    b: np.ndarray            # (K, N)
    mask: np.ndarray         # (M, N) bool
    base: np.ndarray         # (M, N) OMEM preload
    expect: np.ndarray | None = None
    overlap: bool = False    # tiles run beside the preceding PredictJob's EPRE runs
    gelu: dict | None = None  # GeluParams: GELU_OMEM in place of OMEM_STORE (expect = H)
    #: per tile, load and reduce over only the K rows some row of the tile's A needs
    #: (``GemmCase.gather``: FC2's gathered W2 rows, P.V's unselected keys); None = where
    #: it applies, one A part (:func:`_gather_of`)
    gather: bool | None = None


def _gather_of(job: GemmJob) -> bool:
    """Whether the host gathers ``job``'s K rows **[choice]**: by default wherever A is one
    part (with two parts each would need its own GMEM rows); a tile whose A has no all-zero
    column is laid out as without it."""
    return (len(job.a_parts) == 1) if job.gather is None else bool(job.gather)


@dataclass
class GeluJob:
    """``out = golden.cfse.gelu_requant(acc, params)`` on the core's CFSE GELU unit: ``acc``
    (T, N) FC1 accumulators, ``params`` a ``GeluParams`` (or its dict)."""

    name: str
    acc: np.ndarray
    params: dict
    expect: np.ndarray | None = None
    beside: bool = False     # runs beside the previous GEMM job's last GEMM (overlapped)


@dataclass
class SoftmaxJob:
    """``prob_requant(where(keep, softmax_fx(logits), 0))`` on the core's CFSE softmax unit:
    ``logits`` (rows, n) Q.11 (masked entries already FX_MIN: the host's), ``keep`` (rows,
    n) bool."""

    name: str
    logits: np.ndarray
    keep: np.ndarray
    expect: np.ndarray | None = None
    beside: bool = False     # runs beside the previous GEMM job's last GEMM (overlapped)


@dataclass
class LayerNormJob:
    """``layernorm_fx(x, gamma, beta, eps)`` on the core's CFSE layer-norm unit: ``x`` (rows,
    n) Q.11, ``gamma`` / ``beta`` Q.11 scalars (every element's), ``eps`` = ``eps_q``."""

    name: str
    x: np.ndarray
    gamma: int = 1 << 11
    beta: int = 0
    eps: int = 1
    expect: np.ndarray | None = None


@dataclass
class FfnrJob:
    """The FFN-Reuse unit (``golden.ffn_reuse.ffnr``, magnitude rule, target sparsity
    ``s``): dense (``h_new`` None): the mask ``|H| >= theta`` of ``h`` (T, N); sparse: the
    FC2 delta input ``where(mask(h), h_new - h, 0)`` with ``h`` = H_d and ``h_new`` = H'."""

    name: str
    h: np.ndarray
    s: float
    h_new: np.ndarray | None = None
    expect: np.ndarray | None = None
    beside: bool = False     # runs beside the previous GEMM job's last GEMM (overlapped)


@dataclass
class PredictJob:
    """Eager prediction of one block iteration on the core's EPRE, every head on the same
    X: ``x`` (T, d) W-bit LN1 output (modulated, quantised), ``wq`` / ``wk`` per head (d,
    d_head), ``shifts`` (heads, 2) the host's stage-1 shifts, ``q_th_int`` (heads,) or None
    (rule off). ``expect`` (heads, T, T + 1) bool: the score mask, then the dominant flag.
    ``k_exact``: per head the keys' K rows as the SDUE computed them: the EPRE predicts with
    exact keys (EPRE_KLOAD into its Kh banks, run flag ``k_given``, only Wq^T loaded); with
    ``k_pack`` as key rows, each key's d_head W-bit elements packed densely (``kpack``:
    ``ceil(d_head W / D)`` beats a key instead of ``ceil(d_head / Le)`` EPRE words).
    ``q_split`` (queued runs only, issue 19): each head's queries scored in **sub-runs**
    starting at row 0 and at these rows (multiples of the EPRE's units; run field
    ``q_base``), every sub-run but the last with ``k_hold`` so the head's keys stay in its
    Kh buffer, each with its EPRE_STORE into the head's mask rows.
    ``k_acc``: per head the keys' K_h accumulators (N_k, d_head) as the SDUE leaves them in
    OMEM (here an OMEM_LOAD puts them there), and ``k_shift`` per head (None: the ideal
    host's ``stage1_shift``): EPRE_KOMEM requantises them into the Kh banks on the core
    (``golden.predict.omem_keys``), no key crossing the port; exclusive with ``k_exact``.
    ``k_path``: ``"komem"`` (EPRE_KOMEM) or ``"store"`` (an OMEM_STORE with ``ktee`` of a
    tile holding K_h among other columns: the keys go into the Kh banks as the store reads
    them; the tile's other columns are the host's filler), or ``"block"`` (a block's EP with
    exact keys: head h's K_h | V_h tile of the Q|K|V product, computed by the SDUE, tees
    them as it is stored -- only in the overlapped schedule with the EPRE's weights shared,
    :func:`_efill_overlap`; ``k_acc`` is then what the host expects, not data it loads)."""

    name: str
    x: np.ndarray
    wq: list
    wk: list
    k: float
    shifts: np.ndarray
    q_th_int: np.ndarray | None = None
    polarity: str = "top1"
    lod_terms: int = 2
    expect: np.ndarray | None = None
    k_exact: list | None = None     # per head (N_k, d_head): exact keys (``wk`` unused)
    k_acc: list | None = None       # per head (N_k, d_head): K_h accumulators in OMEM
    k_shift: list | None = None     # per head: EPRE_KOMEM's shift (None: stage1_shift)
    k_path: str = "komem"           # k_acc into the Kh banks: "komem", "store", "block"
    k_queue: bool = True            # "block": queued runs (``_queued_order``), else in order
    q_early: bool = False           # queued: Q_h dense before EPRE_STORE_h (``split_qkv``)
    k_pack: bool = False            # k_exact: EPRE_KLOAD of packed key rows (``kpack``)
    q_split: tuple = ()             # queued: sub-runs' first query rows after 0 (``q_base``)

    @property
    def exact(self) -> bool:
        """Whether the EPRE takes exact keys (``k_exact`` or ``k_acc``; run flag ``k_given``)."""
        return self.k_exact is not None or self.k_acc is not None

    def exact_keys(self, cfg: Config) -> list | None:
        """Per head the keys the EPRE's Kh banks get (``k_exact``, or ``k_acc`` through
        ``golden.predict.omem_keys``), or None (stage 1 predicts them)."""
        from exion.golden.predict import omem_keys
        if self.k_acc is None:
            return self.k_exact
        if self.k_exact is not None:
            raise ExionError(f"EPRE job {self.name}: give k_exact or k_acc, not both")
        return [omem_keys(cfg, a, self.key_fields(cfg, h)["shift"])
                for h, a in enumerate(self.k_acc)]

    def key_fields(self, cfg: Config, h: int) -> dict:
        """Head h's fields of the descriptor that moves ``k_acc[h]`` into the Kh banks
        (EPRE_KOMEM, OMEM_STORE ``ktee``): its shift (``k_shift[h]``, else the ideal host's
        ``golden.predict.stage1_shift``), ``h_words`` and ``glen`` = d_head."""
        from exion.golden.predict import stage1_shift
        acc = np.asarray(self.k_acc[h], np.int64)
        sh = (self.k_shift or [None] * len(self.k_acc))[h]
        return {"shift": stage1_shift(acc, cfg.width) if sh is None else int(sh),
                "h_words": kh_words(cfg, acc.shape[1]), "glen": acc.shape[1]}


def epre_fits(cfg: Config, n: int, d: int, d_head: int) -> bool:
    """Whether EP of ``n`` tokens, width ``d``, head width ``d_head`` fits the DSC's EPRE
    (``cfg.dsc_epre_dims``); a block that does not runs EP on the host (golden)."""
    n_max, d_max, dh_max = cfg.dsc_epre_dims[:3]
    return n <= n_max and d <= d_max and d_head <= dh_max


def epre_job_from_record(cfg: Config, rec: dict, sample: int = 0) -> PredictJob | None:
    """The block's EP segment (``rec["epre"]``: X, the per-head Wq / Wk slices, stage-1
    shifts, ``q_th_int``) as a :class:`PredictJob`, or None (EP off). ``expect`` is
    ``golden.predict.epre`` per head, checked against the recorded score masks and dominant
    rows (which the host turns into the Q.K^T mask and the Q / K / V row-skip lists)."""
    from exion.golden.predict import epre, omem_keys
    ep = rec.get("epre")
    if ep is None:
        return None
    x = np.asarray(ep["x"][sample], np.int64)
    heads = len(ep["wq"])
    sh = np.asarray(ep["shifts"][sample], np.int64)
    qth = None if ep["q_th_int"] is None else np.asarray(ep["q_th_int"][sample], np.int64)
    kacc = ep.get("k_acc")                  # exact keys: the Q|K|V product's K_h (issue 19)
    kacc = None if kacc is None else [np.asarray(kacc[sample][h], np.int64)
                                      for h in range(heads)]
    exp = []
    for h in range(heads):
        th = None if qth is None else int(qth[h])
        if kacc is None:
            r = epre(cfg, x, ep["wq"][h], ep["wk"][h], ep["k"], int(sh[h, 0]), int(sh[h, 1]),
                     th, ep["polarity"], ep["lod_terms"])
        else:
            r = epre(cfg, x, ep["wq"][h], None, ep["k"], int(sh[h, 0]), None, th,
                     ep["polarity"], ep["lod_terms"],
                     k_exact=omem_keys(cfg, kacc[h], int(sh[h, 1])))
        exp.append(np.concatenate([r.score_mask, r.dominant[:, None]], axis=1))
    exp = np.stack(exp)
    rec_exp = np.concatenate([np.asarray(ep["keep"][sample], bool),
                              np.asarray(ep["dominant"][sample], bool)[..., None]], axis=-1)
    if not np.array_equal(exp, rec_exp):
        raise ExionError("rec['epre']: golden.predict.epre does not give the recorded score "
                         "masks / dominant rows")
    extra = {} if kacc is None else {"k_acc": kacc, "k_shift": [int(v) for v in sh[:, 1]],
                                     "k_path": "block"}
    return PredictJob("epre", x, [np.asarray(w, np.int64) for w in ep["wq"]],
                      [np.asarray(w, np.int64) for w in ep["wk"]], ep["k"], sh, qth,
                      ep["polarity"], ep["lod_terms"], exp, **extra)


@dataclass
class DscProgram:
    image: np.ndarray                          # uint8 host memory before the run
    prog_base: int
    descs: list = field(default_factory=list)  # descriptor dicts, in order
    jobs: list = field(default_factory=list)   # GemmJob
    stores: list = field(default_factory=list)  # per job: [(tiles, [(addr, n_items)])]
    bus_bits: int = 64
    cfse_overlap: bool = False                 # CFSE work beside overlapped GEMMs
    shared_w: bool = False                     # EPRE weights cross the port once (below)
    filled_w: bool = False                     # ... by GMEM_EFILL (else by the tee)
    q_early: bool = False                      # exact keys: Q dense beside the runs


def _split_w(cfg: Config, a) -> list:
    a = np.asarray(a, np.int64)
    if a.size == 0 or (a.min() >= cfg.wmin and a.max() <= cfg.wmax):
        return [a]
    a1 = np.clip(a, cfg.wmin, cfg.wmax)
    a2 = a - a1
    if a2.min() < cfg.wmin or a2.max() > cfg.wmax:
        raise ExionError("GEMM input needs more than two W-bit parts")
    return [a1, a2]


def gelu_job_from_record(cfg: Config, rec: dict, sample: int = 0) -> GeluJob:
    """The block's GELU + requant segment (``rec["ffn"]``: FC1 accumulators and the host's
    ``GeluParams``) as a :class:`GeluJob`; ``expect`` is ``golden.cfse.gelu_requant`` of every
    element (on a sparse iteration the block's H takes H_d where the FFN-Reuse mask is 0)."""
    from exion.golden.cfse import GeluParams, gelu_requant
    ffn = rec["ffn"]
    acc = np.asarray(ffn["fc1"][sample], np.int64)
    par = ffn["gelu"][sample]
    exp = gelu_requant(acc, GeluParams(**par), cfg)
    h = np.asarray(ffn["h"][sample])
    keep = np.ones(h.shape, bool) if ffn["mask"] is None else np.asarray(ffn["mask"][sample])
    if not np.array_equal(np.where(keep, exp, h), h):
        raise ExionError("rec['ffn']: gelu_requant(fc1) does not give the recorded H")
    return GeluJob("gelu", acc, dict(par), exp)


def softmax_job_from_record(cfg: Config, rec: dict, sample: int = 0) -> SoftmaxJob:
    """The block's softmax segment (``rec["attn"]``: every head's Q.11 logit rows, the EP
    score mask) as one :class:`SoftmaxJob` of ``heads * T`` rows; ``expect`` is golden's
    ``prob_requant(softmax_fx)`` with masked entries 0, checked against the recorded
    probabilities ``rec["attn"]["p"]``."""
    from exion.golden.cfse import softmax_fx
    from exion.golden.dsc import prob_requant
    at = rec["attn"]
    lq = np.asarray(at["logits"][sample], np.int64)
    n = lq.shape[-1]
    keep = np.ones(lq.shape, bool) if at["keep"] is None else np.asarray(at["keep"][sample],
                                                                         bool)
    exp = prob_requant(np.where(keep, softmax_fx(lq), 0), cfg)
    if not np.array_equal(exp, np.asarray(at["p"][sample])):
        raise ExionError("rec['attn']: prob_requant(softmax_fx(logits)) does not give the "
                         "recorded probabilities")
    return SoftmaxJob("softmax", lq.reshape(-1, n), keep.reshape(-1, n), exp.reshape(-1, n))


def layernorm_job_from_record(cfg: Config, rec: dict, name: str,
                              sample: int = 0) -> LayerNormJob:
    """The block's layer norm ``name`` (``ln1`` / ``ln2``: the host's pre-scaled Q.11 rows,
    gamma 1, beta 0, eps_q 1) as a :class:`LayerNormJob`, checked against the record."""
    from exion.golden.cfse import FX_FRAC, layernorm_fx
    x = np.asarray(rec[name]["x"][sample], np.int64)
    n = x.shape[-1]
    exp = layernorm_fx(x, np.full(n, 1 << FX_FRAC, np.int64), np.zeros(n, np.int64))
    if not np.array_equal(exp, np.asarray(rec[name]["out"][sample])):
        raise ExionError(f"rec[{name!r}]: layernorm_fx(x) does not give the recorded output")
    return LayerNormJob(name, x, 1 << FX_FRAC, 0, 1, exp)


def ffnr_job_from_record(cfg: Config, rec: dict, sample: int = 0) -> FfnrJob | None:
    """The block's FFN-Reuse unit segment (``rec["ffn"]``), or None when the iteration has
    none in the core (FFN-Reuse off, a host-only rule or control, s outside [0, 1)). Dense
    iteration: the mask of H, checked against the mask the block keeps; sparse: the delta
    ``H' - H_d`` where the mask is set (H' = GELU of every FC1 accumulator), checked
    against the block's H and mask."""
    from exion.golden.ffn_reuse import ffnr
    ffn = rec["ffn"]
    ru = ffn.get("reuse") or {}
    if not ru.get("on") or ru.get("rule") != "magnitude" or ru.get("control") is not None \
            or not 0 <= ru.get("s", 1) < 1:
        return None
    if ffn["mask"] is None:
        if ffn["new_mask"] is None:
            return None
        h = np.asarray(ffn["h"][sample], np.int64)
        exp = ffnr(cfg, h, ru["s"]).mask
        if not np.array_equal(exp, np.asarray(ffn["new_mask"][sample], bool)):
            raise ExionError("rec['ffn']: ffnr(H) does not give the recorded FFN-Reuse mask")
        return FfnrJob("ffnr", h, ru["s"], None, exp)
    h_d = np.asarray(ffn["h_d"][sample], np.int64)
    h_new = gelu_job_from_record(cfg, rec, sample).expect
    r = ffnr(cfg, h_d, ru["s"], h_new)
    h = np.asarray(ffn["h"][sample], np.int64)
    if not (np.array_equal(r.mask, np.asarray(ffn["mask"][sample], bool))
            and np.array_equal(r.delta, h - h_d)):
        raise ExionError("rec['ffn']: ffnr(H_d, H') does not give the recorded mask and H")
    return FfnrJob("ffnr", h_d, ru["s"], h_new, r.delta)


def block_jobs(cfg: Config, rec: dict, sample: int = 0, overlap: bool = True,
               cfse_overlap: bool = True, fuse_gelu: bool = True,
               q_dense: bool = False) -> list:
    """Every core segment of a block iteration the DSC runs today, in data order: LN1, EP
    (the EPRE ops, when ``rec`` has EP and it fits :func:`epre_fits`; with ``overlap`` the
    K / V projection runs beside them, :func:`split_qkv`), the
    GEMMs of ``rec["gemms"]`` with the softmax before P.V, LN2 before FC1 and the GELU +
    requant after FC1, followed by the FFN-Reuse unit (the mask of a dense iteration, the
    FC2 delta input of a sparse one). A layer norm / softmax whose rows exceed the CFSE
    row units (``cfg.dsc_row_max``) or an H larger than the FFN-Reuse unit's cache
    (:func:`ffnr_fits`) stays on the host (golden), as before these ops existed.
    ``cfse_overlap``: CFSE work beside the GEMMs that do not need it
    (:func:`overlap_cfse`). ``fuse_gelu`` **[choice]**: FC1 and its GELU become one job,
    ``fc1_gelu``, whose tiles end with GELU_OMEM (the GELU of each tile's results straight
    from OMEM, no accumulator over the port) instead of OMEM_STORE and a GELU op.
    ``q_dense`` (with ``overlap`` and exact keys, issue 19): the Q projection on every row,
    before each head's masks (:func:`split_qkv`, ``PredictJob.q_early``)."""
    jobs = jobs_from_record(cfg, rec, sample)

    def at(pred, after=False):
        return next((i + int(after) for i, j in enumerate(jobs) if pred(j.name)), len(jobs))

    def row_fits(name, key):
        return np.shape(rec[name][key])[-1] <= cfg.dsc_row_max
    if "attn" in rec and row_fits("attn", "logits"):
        jobs.insert(at(lambda n: n.startswith("pv")), softmax_job_from_record(cfg, rec, sample))
    if "ln2" in rec and row_fits("ln2", "x"):
        jobs.insert(at(lambda n: n == "fc1"), layernorm_job_from_record(cfg, rec, "ln2", sample))
    if "ffn" in rec:
        g, i = gelu_job_from_record(cfg, rec, sample), at(lambda n: n == "fc1")
        if fuse_gelu and i < len(jobs):
            f = jobs[i]
            jobs[i] = GemmJob("fc1_gelu", f.a_parts, f.b, f.mask, f.base, g.expect,
                              gelu=dict(g.params))
        else:
            jobs.insert(i + 1, g)
        ff = ffnr_job_from_record(cfg, rec, sample)
        if ff is not None and ffnr_fits(cfg, ff.h.shape):
            jobs.insert(at(lambda n: n in ("gelu", "fc1_gelu"), True), ff)
    ep = rec.get("epre")
    if ep is not None and epre_fits(cfg, *np.shape(ep["x"])[1:], np.shape(ep["wq"][0])[1]):
        i = at(lambda n: n == "qkv")
        pj = epre_job_from_record(cfg, rec, sample)
        pj.q_early = q_dense and overlap and i < len(jobs) and pj.k_path == "block"
        if overlap and i < len(jobs):
            jobs[i:i + 1] = split_qkv(cfg, jobs[i], pj.q_early)
        jobs.insert(i, pj)
    if "ln1" in rec and row_fits("ln1", "x"):
        jobs.insert(0, layernorm_job_from_record(cfg, rec, "ln1", sample))
    return overlap_cfse(cfg, jobs) if cfse_overlap else jobs


def overlap_cfse(cfg: Config, jobs: list) -> list:
    """The block's CFSE work moved beside GEMMs that do not need it **[choice]** (a job
    with ``beside`` runs between the previous GEMM job's last GEMM, then overlapped, and
    that job's OMEM_STORE), keeping every data dependency of the block:

    * softmax per head: head h's rows beside the Q.K^T of head h + 1, the last head's
      beside P.V of head 0 (which needs only head 0's probabilities);
    * GELU per FC1 column group: when FC1's tiles cover equal column groups of a multiple
      of L columns (toy: 64 of 256), FC1 becomes one job per group and the GELU of group
      c runs beside group c + 1's last GEMM (the last group's GELU stays exposed: FC2 and
      the FFN-Reuse unit need all of H);
    * the dense iteration's FFN-Reuse mask beside FC2 (FC2 reads H, not the mask; a
      sparse iteration's delta is FC2's input, so it stays before it).

    LN1 (the first op) and LN2 (after the output projection, FC1's input) have nothing to
    run beside. Returns a new list; ``jobs`` is not changed."""
    out = list(jobs)

    def find(pred):
        return next((i for i, j in enumerate(out) if pred(j)), None)

    # softmax per head
    si = find(lambda j: isinstance(j, SoftmaxJob) and j.name == "softmax")
    scores = [j for j in out if isinstance(j, GemmJob) and j.name.startswith("scores[")]
    if si is not None and len(scores) >= 2:
        sm = out.pop(si)
        rows = [j.expect.shape[0] for j in scores]
        if sum(rows) == sm.logits.shape[0]:
            edges = np.cumsum([0] + rows)
            parts = [SoftmaxJob(f"softmax[{h}]", sm.logits[a:b], sm.keep[a:b],
                                None if sm.expect is None else sm.expect[a:b], beside=True)
                     for h, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
            for h, part in enumerate(parts[:-1]):
                out.insert(out.index(scores[h + 1]) + 1, part)
            p0 = find(lambda j: isinstance(j, GemmJob) and j.name == "pv[0]")
            if p0 is None:
                parts[-1].beside = False
                out.insert(out.index(scores[-1]) + 1, parts[-1])
            else:
                out.insert(p0 + 1, parts[-1])
        else:
            out.insert(si, sm)
    # GELU per FC1 column group
    fi, gi = find(lambda j: j.name == "fc1"), find(lambda j: isinstance(j, GeluJob))
    if fi is not None and gi == fi + 1 and isinstance(out[fi], GemmJob):
        groups = _column_groups(cfg, out[fi])
        if len(groups) >= 2:
            fc1, gelu = out[fi], out[gi]
            new = []
            for c, (a, b) in enumerate(groups):
                new.append(GemmJob(f"fc1[{c}]", fc1.a_parts, fc1.b[:, a:b], fc1.mask[:, a:b],
                                   fc1.base[:, a:b],
                                   None if fc1.expect is None else fc1.expect[:, a:b]))
                if c:
                    pa, pb = groups[c - 1]
                    new.append(replace(gelu, name=f"gelu[{c - 1}]", acc=gelu.acc[:, pa:pb],
                                       expect=None if gelu.expect is None
                                       else gelu.expect[:, pa:pb], beside=True))
            a, b = groups[-1]
            new.append(replace(gelu, name=f"gelu[{len(groups) - 1}]", acc=gelu.acc[:, a:b],
                               expect=None if gelu.expect is None else gelu.expect[:, a:b]))
            out[fi:gi + 1] = new
    # the dense iteration's FFN-Reuse mask beside FC2
    ri = find(lambda j: isinstance(j, FfnrJob) and j.h_new is None)
    if ri is not None and ri + 1 < len(out) and isinstance(out[ri + 1], GemmJob) \
            and out[ri + 1].name == "fc2":
        ff = out.pop(ri)
        out.insert(ri + 1, replace(ff, beside=True))
    return out


def _column_groups(cfg: Config, job: GemmJob) -> list:
    """FC1's column groups, ``[(first, end)]``, when its tiles (:func:`plan_tiles`, every
    input part the same) cover equal, contiguous column ranges of a multiple of L columns
    (the GELU op takes whole words of L hidden units); else ``[]``."""
    case = GemmCase(job.a_parts[0], job.b, job.mask, prev=job.base, accumulate=True,
                    name=job.name)
    cols = []
    for t in plan_tiles(cfg, case):
        c = np.asarray(t.cols)
        rng = (int(c.min()), int(c.max()) + 1)
        if not np.array_equal(c, np.arange(*rng)):
            return []
        if rng not in cols:
            cols.append(rng)
    cols.sort()
    w = cols[0][1] - cols[0][0]
    edges = [a for a, _ in cols] + [cols[-1][1]]
    if (any(b - a != w for a, b in cols) or w % cfg.lanes or edges[0] != 0
            or any(cols[i][1] != cols[i + 1][0] for i in range(len(cols) - 1))
            or edges[-1] != job.b.shape[1]):
        return []
    return cols


EP_SCHEDULES = ("auto", "overlap", "sequential")


def block_program(cfg: Config, rec: dict, sample: int = 0, schedule: str = "auto",
                  bus_bits: int = 64, cfse_overlap: bool | str = "auto",
                  fuse_gelu: bool = True, share_w: bool = True,
                  key_queue: bool = True, q_early: bool | str = "auto",
                  q_split: tuple = ()) -> tuple:
    """A block iteration's jobs and program under an EP ``schedule``: ``overlap`` (EP beside
    the K / V projection), ``sequential`` (EP, then one Q/K/V product) or ``auto`` **[choice]**:
    both are built and the one :func:`exion.golden.dsc_cycles.program_cycles` estimates
    faster is kept (a tie keeps ``sequential``). Overlap pays where the EPRE's runs are
    longer than the extra tile the split costs (toy's one-selector EPRE: yes; exion16's,
    16 selectors, 95 cycles a head: no). Returns ``(jobs, program, schedule used)``; without
    EP in the core both schedules are the same program (``sequential``). ``cfse_overlap``:
    :func:`block_jobs`' (True, False), or ``"auto"`` **[choice]**: the chosen EP schedule
    with and without, keeping the faster estimate (a tie keeps the overlap; splitting the
    softmax per head costs descriptors, which a narrow port can make the larger part);
    ``program.cfse_overlap`` says which. ``fuse_gelu``: :func:`block_jobs`'. ``share_w``:
    :func:`build_program`'s (the EPRE's Wq / Wk teed from the Q|K|V product's GMEM_LOAD
    where it applies, else the product's Q / K columns filled from the EPRE's W memory,
    GMEM_EFILL, where the cycle model estimates that no slower than loading them again
    **[choice]**: the fill always moves fewer beats, but runs the product head by head;
    ``program.shared_w`` says whether it did). ``key_queue``: with exact keys, the runs
    queued (``_queued_order``, the default) or in order (``_double_order``'s ``keys_first``,
    the design before the queue). ``q_early`` (queued exact keys only): each head's Q
    projection on every row, before its EPRE_STORE, beside its run (True), after it with
    the dominant rows skipped (False), or ``"auto"`` **[choice]**: both, keeping the faster
    estimate (a tie keeps False, which computes fewer rows); ``program.q_early`` says
    which. ``q_split`` (queued exact keys only): each head's EPRE sub-runs' first query rows
    after 0 (``PredictJob.q_split``)."""
    from exion.golden.dsc_cycles import program_cycles
    if schedule not in EP_SCHEDULES:
        raise ExionError(f"EP schedule {schedule!r}: expected one of {', '.join(EP_SCHEDULES)}")
    if cfse_overlap not in (True, False, "auto"):
        raise ExionError(f"cfse_overlap {cfse_overlap!r}: expected True, False or 'auto'")
    if q_early not in (True, False, "auto"):
        raise ExionError(f"q_early {q_early!r}: expected True, False or 'auto'")
    exact = rec.get("epre") is not None and rec["epre"].get("k_acc") is not None
    if exact and (schedule == "sequential" or not share_w):   # only the store tee
        raise ExionError("exact keys (ep_keys = 'exact') need the overlapped EP schedule "
                         "with the EPRE's weights shared; drop --ep-schedule sequential "
                         "/ --no-shared-weights")
    if tuple(q_split) and not (exact and key_queue):
        raise ExionError("EPRE sub-runs (q_split) need exact keys (ep_keys = 'exact') with "
                         "the key queue on")
    kw = dict(sample=sample, schedule="overlap" if exact else schedule, bus_bits=bus_bits,
              cfse_overlap=cfse_overlap, fuse_gelu=fuse_gelu, share_w=share_w,
              key_queue=key_queue, q_split=tuple(q_split))
    if not (exact and key_queue) or q_early is False:
        return _block_program(cfg, rec, q_dense=False, **kw)
    if q_early is True:
        return _block_program(cfg, rec, q_dense=True, **kw)
    late, early = (_block_program(cfg, rec, q_dense=q, **kw) for q in (False, True))
    return early if (program_cycles(cfg, early[1].descs, bus_bits)["total"]
                     < program_cycles(cfg, late[1].descs, bus_bits)["total"]) else late


def _block_program(cfg: Config, rec: dict, sample: int, schedule: str, bus_bits: int,
                   cfse_overlap: bool | str, fuse_gelu: bool, share_w: bool, key_queue: bool,
                   q_dense: bool, q_split: tuple = ()) -> tuple:
    """:func:`block_program` for one ``q_dense`` (checked arguments)."""
    from exion.golden.dsc_cycles import program_cycles

    def block_jobs_q(*a, **kw):
        jobs = block_jobs(*a, q_dense=q_dense, **kw)
        for j in jobs:
            if isinstance(j, PredictJob) and j.k_path == "block":
                j.k_queue, j.q_split = key_queue, q_split
        return jobs
    co = cfse_overlap is not False
    cand: dict = {}
    if schedule != "sequential":
        jobs = block_jobs_q(cfg, rec, sample, overlap=True, cfse_overlap=co,
                            fuse_gelu=fuse_gelu)
        beside = any(isinstance(j, GemmJob) and j.overlap for j in jobs)
        cand["overlap" if beside else "sequential"] = jobs    # no EP in the core: the same
    if schedule != "overlap" and "sequential" not in cand:
        cand["sequential"] = block_jobs_q(cfg, rec, sample, overlap=False, cfse_overlap=co,
                                          fuse_gelu=fuse_gelu)
    progs = {k: _build_shared(cfg, j, bus_bits, share_w) for k, j in cand.items()}
    name = next(iter(progs))
    if len(progs) == 2:
        est = {k: program_cycles(cfg, p.descs, bus_bits)["total"] for k, p in progs.items()}
        name = "overlap" if est["overlap"] < est["sequential"] else "sequential"
    jobs, prog = cand[name], progs[name]
    prog.cfse_overlap = co and any(getattr(j, "beside", False) for j in jobs)
    if cfse_overlap == "auto" and prog.cfse_overlap:
        plain = block_jobs_q(cfg, rec, sample, overlap=name == "overlap",
                             cfse_overlap=False, fuse_gelu=fuse_gelu)
        pp = _build_shared(cfg, plain, bus_bits, share_w)
        if (program_cycles(cfg, pp.descs, bus_bits)["total"]
                < program_cycles(cfg, prog.descs, bus_bits)["total"]):
            jobs, prog = plain, pp
    prog.q_early = any(isinstance(j, PredictJob) and j.q_early for j in jobs)
    return jobs, prog, name


def _build_shared(cfg: Config, jobs: list, bus_bits: int, share_w: bool) -> DscProgram:
    """:func:`build_program` with ``share_w``; a program that fills GMEM from the EPRE's W
    memory (GMEM_EFILL) is kept only where the cycle model does not estimate the unshared
    one faster."""
    from exion.golden.dsc_cycles import program_cycles
    prog = build_program(cfg, jobs, bus_bits, share_w)
    if not prog.filled_w or any(isinstance(j, PredictJob) and j.k_path == "block"
                                for j in jobs):   # exact keys: no program without the fill
        return prog
    plain = build_program(cfg, jobs, bus_bits, False)
    return plain if (program_cycles(cfg, plain.descs, bus_bits)["total"]
                     < program_cycles(cfg, prog.descs, bus_bits)["total"]) else prog


def split_qkv(cfg: Config, job: GemmJob, q_dense: bool = False) -> list[GemmJob]:
    """The QKV projection job split for the overlapped EP segment **[choice]**: ``kv`` (the
    K and V columns, every row: their row-skip lists come from the prediction, which is
    still running; ``overlap``) and ``q`` (the Q columns on golden's mask: the dominant rows
    skipped; with ``q_dense``, every row too, so the Q tiles need no mask and may run beside
    the prediction, ``PredictJob.q_early``). The host then discards the rows EP found
    unneeded (they become the bias again, as golden's skipped rows are); this is checked
    here against golden's record, so ``kv.expect`` (the dense product) and ``q.expect``
    reproduce it."""
    from exion.golden.conmerge import masked_gemm
    d = job.b.shape[1] // 3
    if job.b.shape[1] != 3 * d or job.expect is None:
        raise ExionError(f"job {job.name}: expected a Q|K|V product of 3 d columns, got "
                         f"{job.b.shape[1]}")

    def dense(cols, what):
        b, base = job.b[:, cols], job.base[:, cols]
        full, out = np.ones(base.shape, bool), base
        for a in job.a_parts:
            out = masked_gemm(cfg, a, b, full, out, accumulate=True)
        if not np.array_equal(np.where(job.mask[:, cols], out, base), job.expect[:, cols]):
            raise ExionError(f"job {job.name}: the dense {what} product with golden's skipped "
                             f"rows discarded does not give the recorded output")
        return b, full, base, out
    kv = GemmJob("kv", job.a_parts, *dense(slice(d, None), "K / V"), overlap=True)
    q_cols = slice(0, d)
    q = (GemmJob("q", job.a_parts, *dense(q_cols, "Q")) if q_dense else
         GemmJob("q", job.a_parts, job.b[:, q_cols], job.mask[:, q_cols], job.base[:, q_cols],
                 job.expect[:, q_cols]))
    return [kv, q]


def ffnr_fits(cfg: Config, shape) -> bool:
    """Whether an H of ``shape`` (T, N) fits the DSC's FFN-Reuse unit (its H_d cache:
    ``cfg.dsc_ffnr_dims`` = ``t_max`` tokens x ``n_max`` hidden units; the DSC does not tile)."""
    t_max, n_max = cfg.dsc_ffnr_dims
    return shape[0] <= t_max and shape[1] <= n_max


def jobs_from_record(cfg: Config, rec: dict, sample: int = 0) -> list[GemmJob]:
    """Per-sample GEMM jobs from ``golden.dsc`` ``rec["gemms"]`` (heads become jobs)."""
    jobs = []
    for name, a, b, mask, base, out in rec.get("gemms", []):
        a, b = np.asarray(a), np.asarray(b)
        b = b[sample] if b.ndim == a.ndim else b
        a, out = a[sample], np.asarray(out)[sample]
        mask = None if mask is None else np.asarray(mask)[sample]
        base = None if base is None else np.asarray(base)[sample]
        heads = a.shape[0] if a.ndim == 3 else None
        for h in range(heads or 1):
            sel = (lambda x: x) if heads is None else (lambda x, h=h: None if x is None else x[h])
            aa, bb, oo = sel(a), sel(b), sel(out)
            mm = np.ones(oo.shape, bool) if sel(mask) is None else np.asarray(sel(mask), bool)
            base_h = np.zeros(oo.shape, np.int64) if sel(base) is None else \
                np.asarray(sel(base), np.int64)
            jobs.append(GemmJob(name if heads is None else f"{name}[{h}]",
                                _split_w(cfg, aa), np.asarray(bb, np.int64), mm, base_h, oo))
    return jobs


class _Image:
    def __init__(self, beat_bytes: int):
        self.bb = beat_bytes
        self.chunks: list = []
        self.size = 0

    def alloc(self, nbytes: int, data: bytes | np.ndarray | None = None) -> int:
        addr = self.size
        n = -(-nbytes // self.bb) * self.bb
        buf = np.zeros(n, np.uint8)
        if data is not None:
            raw = np.frombuffer(bytes(data) if isinstance(data, (bytes, bytearray)) else
                                np.ascontiguousarray(data).tobytes(), np.uint8)
            buf[:raw.size] = raw
        self.chunks.append(buf)
        self.size += n
        return addr

    def mark(self) -> tuple:
        return len(self.chunks), self.size

    def release(self, mark: tuple) -> None:
        """Drop everything allocated since ``mark``."""
        del self.chunks[mark[0]:]
        self.size = mark[1]

    def array(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.uint8)


def _words(cfg, words: np.ndarray, per_bytes: int) -> np.ndarray:
    """(n, L) elements -> n items of ``per_bytes`` (int16 containers, zero padded)."""
    n = words.shape[0]
    out = np.zeros((n, per_bytes), np.uint8)
    out[:, :2 * cfg.lanes] = words.astype("<i2").view(np.uint8).reshape(n, -1)
    return out


def _packed(vals: np.ndarray, bits: int, per_bytes: int) -> np.ndarray:
    """(n, k) values -> n items of ``per_bytes``: value j at bits ``j * bits`` (two's
    complement, little-endian; the OMEM item format)."""
    v = np.asarray(vals, np.int64) & ((1 << bits) - 1)
    n, k = v.shape
    b = ((v[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(n, k * bits)
    out = np.zeros((n, per_bytes * 8), np.uint8)
    out[:, :k * bits] = b
    return np.packbits(out, axis=1, bitorder="little")


def _unpacked(raw: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The inverse of :func:`_packed`: (n, per_bytes) items -> (n, k) signed values."""
    b = np.unpackbits(raw, axis=1, bitorder="little")[:, :k * bits].astype(np.int64)
    v = (b.reshape(raw.shape[0], k, bits) << np.arange(bits)).sum(axis=2)
    return np.where(v >= 1 << (bits - 1), v - (1 << bits), v)


def _results(vals: np.ndarray, per_bytes: int) -> np.ndarray:
    n = vals.shape[0]
    out = np.zeros((n, per_bytes), np.uint8)
    out[:, :8 * vals.shape[1]] = vals.astype("<i8").view(np.uint8).reshape(n, -1)
    return out


def build_program(cfg: Config, jobs: list[GemmJob], bus_bits: int = 64,
                  share_w: bool = True) -> DscProgram:
    """The program and memory image that run ``jobs`` on one ``DscCore`` run.

    ``share_w`` **[choice]**: where a :class:`PredictJob` runs before (not beside) the
    Q|K|V product whose Q / K head slices are its Wq / Wk, the product's GMEM_LOAD is split
    and its Q_h / K_h columns go in with ``tee`` just before head h's EPRE (the EPRE takes
    its Wq^T / Wk^T from the weight stream the SDUE uses; no EPRE_WLOAD):
    :func:`_tee_split`, which says when it applies. Where it does not (a tile does not hold
    every column), the product runs head by head after each head's EPRE and its Q_h / K_h
    columns come from the EPRE's W memory (GMEM_EFILL, :func:`_efill_split`): either way
    the EPRE's weights cross the port once."""
    from exion.hw.cau import mask_layout
    from exion.hw.dsc import OPS, item_beats
    from exion.hw.gemm import gmem_kbits
    bb = bus_bits // 8
    ib = item_beats(cfg, bus_bits)
    mlay = mask_layout(cfg, CAU_COLS_PER_CYCLE, True)
    kb = gmem_kbits(cfg)
    descs: list[dict] = []
    data = _Image(bb)
    stores = []
    beside: dict = {}      # id(GemmJob) -> its tile groups, placed by the PredictJob before it
    teed: dict = {}        # id(GemmJob) -> (its tile groups, store): placed with the EPRE's
    #                        descriptors (teed, or filled from its W memory: GMEM_EFILL)
    for i, job in enumerate(jobs):
        nxt = jobs[i + 1] if i + 1 < len(jobs) else None
        if (share_w and isinstance(job, PredictJob) and isinstance(nxt, GemmJob)
                and not nxt.overlap and _tee_weights(cfg, job, nxt)):
            groups = []
            mark = data.mark()
            entry = _gemm_descs(cfg, replace(nxt, gather=False), groups, data, ib, bb, mlay,
                                kb)
            split = _tee_split(cfg, job, nxt, entry[1], groups, ib, bb, kb)
            if split is not None:
                per_head, rest = split
                stores.append(_epre_descs(cfg, job, descs, data, ib, bb, tee=per_head))
                teed[id(nxt)] = (rest, entry)
                continue
            data.release(mark)
            fill = _efill_split(cfg, job, nxt, data, ib, bb, mlay, kb)
            if fill is not None:
                per_head, entry = fill
                stores.append(_epre_descs(cfg, job, descs, data, ib, bb, after=per_head))
                teed[id(nxt)] = ([], entry)
                continue
            data.release(mark)
        if id(job) in teed:
            rest, entry = teed.pop(id(job))
            descs.extend(rest)
            stores.append(entry)
            continue
        after = jobs[i + 2] if i + 2 < len(jobs) else None
        if (share_w and isinstance(job, PredictJob) and isinstance(nxt, GemmJob)
                and nxt.overlap and isinstance(after, GemmJob)
                and _split_weights(job, nxt, after)):
            mark = data.mark()
            fill = _efill_overlap(cfg, job, nxt, after, data, ib, bb, mlay, kb)
            if fill is not None:
                kv, q, kv_entry, q_entry = fill
                stores.append(_epre_descs(cfg, job, descs, data, ib, bb, double=(kv, q)))
                teed[id(nxt)] = ([], kv_entry)
                teed[id(after)] = ([], q_entry)
                continue
            data.release(mark)
        if isinstance(job, PredictJob) and isinstance(nxt, GemmJob) and nxt.overlap:
            groups: list = []
            beside[id(nxt)] = (groups, _gemm_descs(cfg, nxt, groups, data, ib, bb, mlay, kb))
            stores.append(_epre_descs(cfg, job, descs, data, ib, bb, groups))
            continue
        if id(job) in beside:
            stores.append(beside.pop(id(job))[1])
            continue
        if getattr(job, "beside", False):     # a CFSE job beside the previous GEMM
            if i == 0 or not isinstance(jobs[i - 1], GemmJob):
                raise ExionError(f"job {job.name}: 'beside' needs a GEMM job before it")
            extra: list = []
            fn = {GeluJob: _gelu_descs, SoftmaxJob: _row_descs, LayerNormJob: _row_descs,
                  FfnrJob: _ffnr_descs}[type(job)]
            stores.append(fn(cfg, job, extra, data, ib, bb))
            g = max(k for k, d in enumerate(descs) if d["op"] == OPS["GEMM"])
            descs[g]["overlap"] = 1
            descs[g + 1:g + 1] = extra
            continue
        if isinstance(job, GeluJob):
            stores.append(_gelu_descs(cfg, job, descs, data, ib, bb))
            continue
        if isinstance(job, (SoftmaxJob, LayerNormJob)):
            stores.append(_row_descs(cfg, job, descs, data, ib, bb))
            continue
        if isinstance(job, FfnrJob):
            stores.append(_ffnr_descs(cfg, job, descs, data, ib, bb))
            continue
        if isinstance(job, PredictJob):
            stores.append(_epre_descs(cfg, job, descs, data, ib, bb))
            continue
        groups = []
        stores.append(_gemm_descs(cfg, job, groups, data, ib, bb, mlay, kb))
        descs.extend(d for g in groups for d in g)
    descs.append({"op": OPS["END"]})
    for i, d in enumerate(descs):
        d["stage"] = i & 0xFF
    dstep = max(32, bb)
    prog_len = dstep * len(descs)
    body = data.array()
    prog_bytes = -(-prog_len // 4096) * 4096
    image = np.zeros(prog_bytes + body.size, np.uint8)
    image[prog_bytes:] = body
    for d in descs:     # the data region sits behind the program (4 KiB aligned)
        if d["op"] in (OPS["GMEM_LOAD"], OPS["OMEM_LOAD"], OPS["IMEM_LOAD"], OPS["GEMM"],
                       OPS["GELU"], OPS["SOFTMAX"], OPS["LAYERNORM"], OPS["EPRE_XLOAD"],
                       OPS["EPRE_WLOAD"], OPS["EPRE_KLOAD"]):
            d["src"] += prog_bytes
        if d["op"] in (OPS["OMEM_STORE"], OPS["GELU"], OPS["SOFTMAX"], OPS["LAYERNORM"],
                       OPS["FFNR"], OPS["EPRE"], OPS["EPRE_STORE"],
                       OPS["GELU_OMEM"]) and not d.get("overlap"):
            d["dst"] += prog_bytes
        if d["op"] == OPS["FFNR"]:
            d["src"] += prog_bytes
            if d["sparse"]:
                d["aux"] += prog_bytes
    prog = b"".join(encode_desc(d).ljust(dstep, b"\0") for d in descs)
    image[:len(prog)] = np.frombuffer(prog, np.uint8)
    stores = [(c, t, [(a + prog_bytes, n) for a, n in s]) for c, t, s in stores]
    # (a GELU store is ("gelu", shape, [(addr, words)]), relocated the same way)
    filled = any(d["op"] == OPS["GMEM_EFILL"] for d in descs)
    return DscProgram(image, 0, descs, jobs, stores, bus_bits,
                      shared_w=filled or any(d.get("tee") for d in descs), filled_w=filled)


def _tee_weights(cfg: Config, pj: PredictJob, job: GemmJob) -> bool:
    """Whether ``job`` can feed ``pj``'s EPRE through the tee before it is tiled: the DSC
    has one (:func:`exion.hw.dsc.tee_supported`), B is 3 d columns of K = d rows (d = X's
    width) and the EPRE's Wq_h / Wk_h are B's Q / K head slices (not other numbers, such
    as weights quantised per head on their own)."""
    from exion.hw.dsc import tee_supported
    b = np.asarray(job.b)
    K, n = b.shape
    d, dh = n // 3, np.shape(pj.wq[0])[1]
    if (not tee_supported(cfg) or n != 3 * d or K != d or np.shape(pj.x)[1] != d
            or len(pj.wq) * dh > d or pj.exact):   # the tee brings Wk^T too
        return False
    return _head_slices(pj, b[:, :d], b[:, d:2 * d])


def _head_slices(pj: PredictJob, bq, bk) -> bool:
    """Whether ``pj``'s Wq_h (and Wk_h, unless it takes exact keys) are the head slices of
    the Q columns ``bq`` (and the K columns ``bk``) of a product's B."""
    dh = np.shape(pj.wq[0])[1]
    return all(np.array_equal(pj.wq[h], bq[:, h * dh:(h + 1) * dh])
               and (pj.exact
                    or np.array_equal(pj.wk[h], bk[:, h * dh:(h + 1) * dh]))
               for h in range(len(pj.wq)))


def _tee_split(cfg: Config, pj: PredictJob, job: GemmJob, tiles: list, groups: list,
               ib: dict, bb: int, kb: int) -> tuple | None:
    """The GMEM_LOAD of ``job`` (a Q|K|V product, ``groups`` its tile descriptors) split for
    the tee: per head h ``[GMEM_LOAD Q_h (tee, at W address 0), GMEM_LOAD K_h (tee, at
    dh_max * dw_max)]``, and the product's descriptors with its first tile's GMEM_LOAD
    replaced by one GMEM_LOAD per remaining contiguous column range (V; the next tiles,
    row blocks of the same columns, load them again as before). Returns ``(per_head,
    descs)``, or None where a tile does not hold every column in order (toy's 64-column
    tiles of a d = 64 block put Q_h and K_h in different tiles; GMEM holds one). The
    weights are checked before tiling (:func:`_tee_weights`)."""
    from exion.hw.dsc import OPS, dsc_epre_sizes
    n = np.shape(job.b)[1]
    d, heads, dh = n // 3, len(pj.wq), np.shape(pj.wq[0])[1]
    if (len(groups) != len(tiles) or not tiles
            or any(list(np.asarray(t.cols)) != list(range(n)) for t in tiles)):
        return None
    tile = groups[0]
    g = next(i for i, x in enumerate(tile) if x["op"] == OPS["GMEM_LOAD"])
    load = tile[g]
    kw = int(load["glen"])
    wbytes = ib["oword"] * bb
    sz = dsc_epre_sizes(cfg)

    def part(c0, c1, **kw_):
        return {"op": OPS["GMEM_LOAD"], "count": (c1 - c0) * kw,
                "src": load["src"] + c0 * kw * wbytes, "ubase": c0 << kb, "glen": kw,
                "gstride": 1 << kb, "job": job.name, **kw_}
    per_head = [[part(h * dh, (h + 1) * dh, tee=1, tee_base=0),
                 part(d + h * dh, d + (h + 1) * dh, tee=1, tee_base=sz.dh_max * sz.dw_max)]
                for h in range(heads)]
    teed = np.zeros(n, bool)
    teed[:heads * dh] = teed[d:d + heads * dh] = True
    rest, c = [], 0
    while c < n:
        if teed[c]:
            c += 1
            continue
        e = c
        while e < n and not teed[e]:
            e += 1
        rest.append(part(c, e))
        c = e
    return per_head, tile[:g] + rest + tile[g + 1:] + [x for t in groups[1:] for x in t]


def _efill_split(cfg: Config, pj: PredictJob, job: GemmJob, data: _Image, ib: dict,
                 bb: int, mlay, kb: int) -> tuple | None:
    """The Q|K|V product ``job`` run head by head, each head's part right after head h's
    EPRE, with the W memory's Wq_h^T / Wk_h^T as its Q_h / K_h columns (GMEM_EFILL):
    per head the tiles of columns ``Q_h | K_h | V_h`` (all row blocks), every tile's
    GMEM_LOAD replaced by GMEM_EFILL of the Q_h columns (W address 0), of the K_h columns
    (``dh_max * dw_max``; a GMEM_LOAD with exact keys: the W memory holds no Wk^T) and a
    GMEM_LOAD of the V_h columns. Returns ``(per_head descriptors, store entry)`` (the
    entry reassembles the whole product: the tiles' columns mapped back), or None where a
    tile does not hold its head's columns in order, the heads do not cover all d columns or
    the DSC builds no GMEM_EFILL (:func:`exion.hw.dsc.tee_supported`). The weights are
    checked before (:func:`_tee_weights`)."""
    from exion.hw.dsc import dsc_epre_sizes
    n = np.shape(job.b)[1]
    d, heads, dh = n // 3, len(pj.wq), np.shape(pj.wq[0])[1]
    if heads * dh != d or len(job.a_parts) != 1:
        return None
    sz = dsc_epre_sizes(cfg)
    k_fill = None if pj.exact else sz.dh_max * sz.dw_max
    r = _filled_heads(cfg, [(job, lambda h: (
        np.concatenate([np.arange(o + h * dh, o + (h + 1) * dh) for o in (0, d, 2 * d)]),
        [(dh, 0), (dh, k_fill), (dh, None)]))], heads, d, data, ib, bb, mlay, kb)
    return None if r is None else r[0]


def _split_weights(pj: PredictJob, kv: GemmJob, q: GemmJob) -> bool:
    """Whether ``kv`` / ``q`` (:func:`split_qkv`'s K|V and Q products, K = d rows) have the
    EPRE's Wk_h / Wq_h as their head slices (as :func:`_tee_weights` for the whole
    product, the heads covering all d columns), so that :func:`_efill_overlap` may fill
    them from its W memory."""
    bq, bkv = np.asarray(q.b), np.asarray(kv.b)
    d, dh = np.shape(pj.x)[1], np.shape(pj.wq[0])[1]
    if (bq.shape != (d, d) or bkv.shape != (d, 2 * d) or len(pj.wq) * dh != d
            or len(q.a_parts) != 1 or len(kv.a_parts) != 1):
        return False
    return _head_slices(pj, bq, bkv[:, :d])


def _efill_overlap(cfg: Config, pj: PredictJob, kv: GemmJob, q: GemmJob, data: _Image,
                   ib: dict, bb: int, mlay, kb: int) -> tuple | None:
    """The overlapped EP schedule with the EPRE's weights crossing the port once (issue 19):
    per head h the K_h | V_h tiles of ``kv`` (K_h filled from W buffer ``h mod 2``'s Wk^T,
    V_h loaded; with exact keys K_h loaded too) and the Q_h tiles of ``q`` (filled from the
    buffer's Wq^T), placed by :func:`_epre_descs` (``double``) beside runs h and h + 1.
    Returns ``(kv descriptors per head, q descriptors per head, kv store entry, q store
    entry)``, or None where a tile does not hold its head's columns (:func:`_filled_tiles`).
    """
    from exion.hw.dsc import dsc_epre_sizes
    d, heads, dh = np.shape(pj.x)[1], len(pj.wq), np.shape(pj.wq[0])[1]
    sz = dsc_epre_sizes(cfg)
    exact = pj.exact

    def head(h):
        return np.arange(h * dh, (h + 1) * dh)
    r = _filled_heads(cfg, [
        (kv, lambda h: (np.concatenate([head(h), d + head(h)]),
                        [(dh, None if exact else (h % 2) * sz.w_half + sz.dh_max * sz.dw_max),
                         (dh, None)])),
        (q, lambda h: (head(h), [(dh, (h % 2) * sz.w_half)]))], heads, d, data, ib, bb, mlay,
        kb)
    if r is None:
        return None
    (kvs, kv_entry), (qs, q_entry) = r
    if pj.k_path == "block" and not all(_tee_keys(cfg, pj, h, kvs[h], ib)
                                        for h in range(heads)):
        return None
    return kvs, qs, kv_entry, q_entry


def _tee_keys(cfg: Config, pj: PredictJob, h: int, descs: list, ib: dict) -> bool:
    """Head h's K_h | V_h tile (``descs``, one tile: K_h its first d_head columns) stored
    with ``ktee``: its keys go into the EPRE's Kh banks as the store reads them (issue 19).
    False where the head's columns span more than one tile or its row blocks' windows come
    faster than the Kh writes (``golden.dsc_cycles.store_ktee_body`` refuses)."""
    from exion.golden.dsc_cycles import store_ktee_body
    from exion.hw.dsc import OPS
    stores = [d for d in descs if d["op"] == OPS["OMEM_STORE"]]
    gemms = [d for d in descs if d["op"] == OPS["GEMM"]]
    if len(stores) != 1 or not gemms:
        return False
    keys = {"ktee": 1, "kt_ncols": int(gemms[0]["ncols"]), "kt_c0": 0,
            "n_k": np.shape(pj.k_acc[h])[0], **pj.key_fields(cfg, h),
            **({"kq": 1, "k_buf": h % 2} if pj.k_queue else {})}
    try:
        store_ktee_body(cfg, {**stores[0], **keys}, ib["omem"])
    except ExionError:
        return False
    stores[0].update(keys)
    return True


def _filled_heads(cfg: Config, parts: list, heads: int, d: int, data: _Image, ib: dict,
                  bb: int, mlay, kb: int) -> list | None:
    """Products run head by head: ``parts`` = ``[(job, plan)]``, ``plan(h)`` = (head h's
    columns of ``job``, their segments) for :func:`_filled_tiles`, laid out head by head in
    ``parts``' order. Returns per part ``(per-head descriptors, store entry)``, the entry
    reassembling the whole product (``read_results``), or None where a head does not fit."""
    acc = [([], [], []) for _ in parts]
    for h in range(heads):
        for (job, plan), (per_head, tiles, stores) in zip(parts, acc):
            r = _filled_tiles(cfg, job, h, *plan(h), d, data, ib, bb, mlay, kb)
            if r is None:
                return None
            per_head.append(r[0])
            tiles += r[1]
            stores += r[2]
    return [(per_head, (GemmCase(job.a_parts[0], job.b, job.mask, prev=job.base,
                                 accumulate=True, name=job.name), tiles, stores))
            for (job, _), (per_head, tiles, stores) in zip(parts, acc)]


def _filled_tiles(cfg: Config, job: GemmJob, h: int, cols: np.ndarray, segs: list, d: int,
                  data: _Image, ib: dict, bb: int, mlay, kb: int) -> tuple | None:
    """The tiles of ``job``'s columns ``cols`` (head h's part), each tile's GMEM_LOAD
    replaced segment by segment (``segs``: ``(columns, W address)``, in order): GMEM_EFILL
    from that EPRE W address, or, for None, a GMEM_LOAD of those columns. Returns
    ``(descriptors, tiles with the job's column numbers, OMEM stores)``, or None where a
    tile does not hold all of ``cols`` in order, the W rows are not the GMEM columns'
    length (``d`` rows, ceil(d / Le) EPRE words) or the DSC builds no GMEM_EFILL."""
    from exion.hw.dsc import OPS, tee_supported
    if not tee_supported(cfg):
        return None
    Le, L = cfg.epre_lane_count, cfg.lanes
    wbytes = ib["oword"] * bb
    sub = replace(job, name=f"{job.name}[{h}]", b=job.b[:, cols], mask=job.mask[:, cols],
                  base=job.base[:, cols], gather=False,
                  expect=None if job.expect is None else job.expect[:, cols])
    groups: list = []
    _, tiles, st = _gemm_descs(cfg, sub, groups, data, ib, bb, mlay, kb)
    descs, out_tiles = [], []
    for t, grp in zip(tiles, groups):
        g = next(i for i, x in enumerate(grp) if x["op"] == OPS["GMEM_LOAD"])
        load, kw = grp[g], int(grp[g]["glen"])
        if (list(np.asarray(t.cols)) != list(range(len(cols)))
                or -(-kw * L // Le) != -(-d // Le) or kw * L < d):
            return None
        parts, c0 = [], 0
        for n_c, wa in segs:
            f = {"count": n_c * kw, "ubase": c0 << kb, "glen": kw, "gstride": 1 << kb}
            parts.append({**f, "op": OPS["GMEM_LOAD"], "src": load["src"] + c0 * kw * wbytes}
                         if wa is None else {**f, "op": OPS["GMEM_EFILL"], "tee_base": wa})
            c0 += n_c
        descs += grp[:g] + parts + grp[g + 1:]
        out_tiles.append(replace(t, cols=cols[np.asarray(t.cols)]))
    for x in descs:
        x["job"] = job.name
    return descs, out_tiles, st


def _gemm_descs(cfg: Config, job: GemmJob, groups: list, data: _Image, ib: dict, bb: int,
                mlay, kb: int) -> tuple:
    """A GEMM job's tiles: per tile one descriptor group (GMEM_LOAD, OMEM_LOAD, per input
    part IMEM_LOAD + GEMM, OMEM_STORE) appended to ``groups``; returns the store entry.
    With ``job.gelu`` each tile ends with GELU_OMEM (``ceil(addresses / L)`` groups: the
    tile's H words) instead of OMEM_STORE."""
    from exion.hw.dsc import OPS
    wbytes, obytes, mbytes = ib["oword"] * bb, ib["omem"] * bb, ib["mask"] * bb
    gather = _gather_of(job)
    cases = [GemmCase(a, job.b, job.mask, prev=job.base, accumulate=True, name=job.name,
                      gather=gather) for a in job.a_parts]
    plans = [plan_tiles(cfg, c) for c in cases]
    tiles = plans[0]
    st = []
    for ti, t in enumerate(tiles):
        descs: list = []
        groups.append(descs)
        g_addrs = sorted(t.gmem)
        n_cols, kw = len(t.cols), t.setup["kwords"]
        exp = [(j << kb) + w for j in range(n_cols) for w in range(kw)]
        if g_addrs != exp:
            raise ExionError("GMEM layout is not column-major slots")
        gw = np.stack([t.gmem[a] for a in g_addrs])
        descs.append({"op": OPS["GMEM_LOAD"], "count": len(g_addrs),
                      "src": data.alloc(len(g_addrs) * wbytes, _packed(gw, cfg.width, wbytes)),
                      "glen": kw, "gstride": 1 << kb})
        n_om = t.omem.shape[0]
        A = cfg.acc_width
        real = (t.rows.reshape(-1, cfg.rows) >= 0)[np.arange(n_om) // t.setup["ncols"]]
        if ((t.omem == t.omem[:, :1]) | ~real).all():   # row-constant over the real rows
            # one result each (the padding rows past M get it too; they are never read)
            cb = ib["obc"] * bb
            descs.append({"op": OPS["OMEM_LOAD"], "count": n_om, "glen": 0xFFFF, "bcast": 1,
                          "src": data.alloc(n_om * cb, _packed(t.omem[:, :1], A, cb))})
        else:
            descs.append({"op": OPS["OMEM_LOAD"], "count": n_om, "glen": 0xFFFF,
                          "src": data.alloc(n_om * obytes, _packed(t.omem, A, obytes))})
        for plan in plans:
            pt = plan[ti]
            i_addrs = sorted(pt.imem)
            if i_addrs != list(range(len(i_addrs))):
                raise ExionError("IMEM layout is not contiguous")
            iw = np.stack([pt.imem[a] for a in i_addrs]).reshape(-1, cfg.lanes)
            descs.append({"op": OPS["IMEM_LOAD"], "count": iw.shape[0], "glen": 0xFFFF,
                          "src": data.alloc(iw.shape[0] * wbytes,
                                            _packed(iw, cfg.width, wbytes))})
            raw = b"".join(pack(mlay, beat).to_bytes(mbytes, "little") for beat in pt.beats)
            rows = pt.rows[pt.rows >= 0]
            passes = conmerge(cfg, job.mask[rows][:, pt.cols]).n_passes
            descs.append({"op": OPS["GEMM"], "count": len(pt.beats),
                          "src": data.alloc(len(raw), raw), "accumulate": 1,
                          "kwords": pt.setup["kwords"], "ncols": pt.setup["ncols"],
                          "regions": pt.setup["regions"], "passes": passes,
                          "job": job.name})
        if job.gelu is not None:
            ng = -(-n_om // cfg.lanes)
            dst = data.alloc(ng * cfg.rows * ib["word"] * bb)
            descs.append({"op": OPS["GELU_OMEM"], "count": ng, "dst": dst, "ubase": 0,
                          **{k: int(job.gelu[k]) for k in ("in_mult", "in_shift",
                                                          "out_mult", "out_shift")}})
            st.append((dst, ng))
        else:
            dst = data.alloc(n_om * obytes)
            descs.append({"op": OPS["OMEM_STORE"], "count": n_om, "dst": dst})
            st.append((dst, n_om))
        for d in descs:
            d["job"] = job.name
    if job.gelu is not None:
        return (("gelu_omem", cases[0], job.gelu), tiles, st)
    return (cases[0], tiles, st)


def _gelu_descs(cfg: Config, job: GeluJob, descs: list, data: _Image, ib: dict,
                bb: int) -> tuple:
    """One GELU descriptor: ``acc`` (T, N) as T * ceil(N / L) accumulator words (L 64-bit
    containers, zero padded) in, as many operand words out."""
    from exion.hw.dsc import OPS
    acc = np.asarray(job.acc, np.int64)
    if acc.ndim != 2:
        raise ExionError(f"GELU job {job.name}: acc must be (T, N), got shape {acc.shape}")
    T, N = acc.shape
    L = cfg.lanes
    nw = -(-N // L)
    pad = np.zeros((T, nw * L), np.int64)
    pad[:, :N] = acc
    words = pad.reshape(T * nw, L)
    abytes = ib["acc"] * bb
    par = job.params if isinstance(job.params, dict) else job.params.to_dict()
    src = data.alloc(words.shape[0] * abytes, _results(words, abytes))
    dst = data.alloc(words.shape[0] * ib["word"] * bb)
    descs.append({"op": OPS["GELU"], "count": words.shape[0], "src": src, "dst": dst,
                  **{k: int(par[k]) for k in ("in_mult", "in_shift", "out_mult", "out_shift")},
                  "job": job.name})
    return ("gelu", (T, N), [(dst, words.shape[0])])


def _row_descs(cfg: Config, job, descs: list, data: _Image, ib: dict, bb: int) -> tuple:
    """One SOFTMAX or LAYERNORM descriptor: (rows, n) Q.11 values as rows * ceil(n / L)
    words (L 16-bit containers, zero padded; a softmax word then carries its L keep bits,
    lane l in bit l, padding lanes 0), as many operand words out."""
    from exion.golden.cfse import FX_MAX, FX_MIN
    from exion.hw.dsc import OPS
    sm = isinstance(job, SoftmaxJob)
    x = np.asarray(job.logits if sm else job.x, np.int64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ExionError(f"{'softmax' if sm else 'layer norm'} job {job.name}: expected "
                         f"(rows, n) values, got shape {x.shape}")
    R, n = x.shape
    if n > cfg.dsc_row_max:
        raise ExionError(f"job {job.name}: rows of {n} values exceed the DSC's CFSE row units "
                         f"(dsc_row_max = {cfg.dsc_row_max}); the DSC does not restream")
    if x.size and (x.min() < FX_MIN or x.max() > FX_MAX):
        raise ExionError(f"job {job.name}: values must be 16-bit Q.11")
    L = cfg.lanes
    nw = -(-n // L)
    pad = np.zeros((R, nw * L), np.int64)
    pad[:, :n] = x
    words = pad.reshape(R * nw, L)
    per = ib["smx"] if sm else ib["word"]
    items = _words(cfg, words, per * bb)
    if sm:
        kp = np.zeros((R, nw * L), bool)
        kp[:, :n] = np.asarray(job.keep, bool)
        kb = np.packbits(kp.reshape(R * nw, L), axis=1, bitorder="little")
        items[:, 2 * L:2 * L + kb.shape[1]] = kb
        extra = {"op": OPS["SOFTMAX"]}
    else:
        extra = {"op": OPS["LAYERNORM"], "gamma": int(job.gamma) & 0xFFFF,
                 "beta": int(job.beta) & 0xFFFF, "eps": int(job.eps)}
    src = data.alloc(items.size, items)
    dst = data.alloc(words.shape[0] * ib["word"] * bb)
    descs.append({**extra, "count": words.shape[0], "src": src, "dst": dst, "n": n,
                  "job": job.name})
    return ("words", (R, n), [(dst, words.shape[0])])


def _ffnr_descs(cfg: Config, job: FfnrJob, descs: list, data: _Image, ib: dict,
                bb: int) -> tuple:
    """One FFNR descriptor: H (dense) or H_d (sparse) as T * ceil(N / L) operand words from
    ``src`` (sparse: H' as many words from ``aux``); out the mask's ``ceil(T / R) *
    ceil(N / P)`` mask items (dense, ``aux`` = their number) or the delta words."""
    from exion.golden.ffn_reuse import sparsity_code
    from exion.hw.dsc import OPS
    h = np.asarray(job.h, np.int64)
    if h.ndim != 2 or 0 in h.shape:
        raise ExionError(f"FFNR job {job.name}: H must be (T, N), got shape {h.shape}")
    T, N = h.shape
    if not ffnr_fits(cfg, h.shape):
        raise ExionError(f"FFNR job {job.name}: H {h.shape} exceeds the FFN-Reuse unit's "
                         f"cache; the DSC does not tile")
    L = cfg.lanes
    nw = -(-N // L)
    wbytes = ib["word"] * bb

    def words(a):
        pad = np.zeros((T, nw * L), np.int64)
        pad[:, :N] = a
        return _words(cfg, pad.reshape(T * nw, L), wbytes)
    d = {"op": OPS["FFNR"], "count": T * nw, "t": T, "n": N, "s_code": sparsity_code(job.s),
         "src": data.alloc(T * nw * wbytes, words(h)), "job": job.name}
    if job.h_new is not None:
        d.update(sparse=1, aux=data.alloc(T * nw * wbytes, words(job.h_new)),
                 dst=data.alloc(T * nw * wbytes))
        descs.append(d)
        return ("words", (T, N), [(d["dst"], T * nw)])
    nm = -(-T // cfg.rows) * -(-N // CAU_COLS_PER_CYCLE)
    d.update(sparse=0, aux=nm, dst=data.alloc(nm * ib["mask"] * bb))
    descs.append(d)
    return ("ffmask", (T, N), [(d["dst"], nm)])


def _epre_descs(cfg: Config, job: PredictJob, descs: list, data: _Image, ib: dict,
                bb: int, beside: list | None = None, tee: list | None = None,
                after: list | None = None, double: tuple | None = None) -> tuple:
    """EPRE_XLOAD (X once: word a of bank u is item ``a * U + u``), then per head
    EPRE_WLOAD (Wq^T rows at 0.., Wk^T rows at ``dh_max * dw_max``: groups of ``glen =
    d_head * d_words`` words, ``gstride = dh_max * dw_max``) and EPRE (the run fields at bit
    128; ``count`` = N_q mask items out, ``hw.epre.mask_layout`` values).

    ``beside``: descriptor groups (a GEMM job's tiles) that do not need the prediction.
    Then every head's EPRE is overlapped: EPRE (``overlap``), a share of the groups (split
    as evenly as the heads allow, in order), EPRE_STORE (its ``count`` mask items from the
    FIFO to ``dst``, once the run is done).

    ``tee``: per head the GMEM_LOADs that bring Wq^T / Wk^T in with ``tee`` (from
    :func:`_tee_split`), in place of EPRE_WLOAD. ``after``: per head descriptors placed
    right after its (plain) EPRE, while the W memory still holds its Wq^T / Wk^T (the
    GMEM_EFILL tiles of :func:`_efill_split`).

    ``double``: ``(kv, q)``, per head the descriptors of its K / V tiles and of its Q
    tiles (:func:`_efill_overlap`): head h's weights go to W buffer ``h mod 2`` and every
    run is overlapped, in the order ``WLOAD_0, EPRE_0, [WLOAD_(h+1) (the other buffer,
    beside run h), kv_h, EPRE_STORE_h, EPRE_(h+1), q_h] for each h`` -- run h + 1 starts
    as soon as run h's masks are out, beside head h's Q tiles, which read buffer h mod 2.

    ``job.k_exact``: per head EPRE_WLOAD of Wq^T only and EPRE_KLOAD of the head's K rows
    (word a of Kh bank u is item ``a * U + u``, as EPRE_XLOAD), then the run (``k_given``);
    ``job.k_acc``: the keys from OMEM instead (:func:`_komem_descs`), or, with ``k_path =
    "block"`` and ``double``, teed by head h's K_h | V_h tile's store, which then comes
    before run h (``_double_order``'s ``keys_first``)."""
    from exion.hw.dsc import OPS, dsc_epre_sizes
    from exion.hw.epre import run_layout
    from .epre_rtl import prepare
    x = np.asarray(job.x, np.int64)
    if x.ndim != 2 or not epre_fits(cfg, x.shape[0], x.shape[1], job.wq[0].shape[1]):
        raise ExionError(f"EPRE job {job.name}: X {x.shape} / d_head {job.wq[0].shape[1]} "
                         f"exceed the DSC's EPRE (dsc_epre_dims = {cfg.dsc_epre_dims})")
    sz = dsc_epre_sizes(cfg)
    rl = run_layout(cfg, sz)
    ebytes = ib["eword"] * bb
    heads = len(job.wq)
    share = np.array_split(np.arange(len(beside or [])), heads)
    exact = job.exact
    keys = job.exact_keys(cfg)
    if exact and tee is not None:
        raise ExionError(f"EPRE job {job.name}: exact keys (k_exact) need no Wk^T; the tee "
                         f"brings it in (build it without share_w)")
    st, wl, kl, runs = [], [], [], []
    queued = job.k_path == "block" and double is not None and job.k_queue
    bounds = _sub_run_bounds(job, sz, x.shape[0], queued)
    for h in range(heads):
        pj = prepare(cfg, sz, x, job.wq[h], None if exact else job.wk[h], job.k,
                     int(job.shifts[h][0]), None if exact else int(job.shifts[h][1]),
                     None if job.q_th_int is None else int(job.q_th_int[h]), job.polarity,
                     job.lod_terms, name=f"{job.name}[{h}]",
                     k_exact=keys[h] if exact else None)
        if h == 0:
            xw = pj.x_words.reshape(-1, sz.lanes)
            descs.append({"op": OPS["EPRE_XLOAD"], "count": xw.shape[0], "glen": 0xFFFF,
                          "src": data.alloc(xw.shape[0] * ebytes, _words_n(xw, ebytes)),
                          "job": job.name})
        buf = h % 2 if double is not None else 0
        nw = pj.w_words.shape[0] // (1 if exact else 2)
        wl.append([{"op": OPS["EPRE_WLOAD"], "count": pj.w_words.shape[0], "glen": nw,
                    "gstride": sz.dh_max * sz.dw_max, "job": job.name,
                    "ubase": buf * sz.w_half,
                    "src": data.alloc(pj.w_words.shape[0] * ebytes,
                                      _words_n(pj.w_words, ebytes))}]
                  if tee is None else tee[h])
        if job.k_path == "block" and double is not None:
            kl.append([])                   # teed by head h's K_h | V_h tile's store
        elif job.k_acc is not None:
            kl.append(_komem_descs(cfg, job, h, data, ib, bb))
        elif exact and job.k_pack:
            kl.append([_kload_rows_desc(cfg, job, keys[h], data, bb)])
        elif exact:
            kw = pj.kh_words.reshape(-1, sz.lanes)
            kl.append([{"op": OPS["EPRE_KLOAD"], "count": kw.shape[0], "glen": 0xFFFF,
                        "src": data.alloc(kw.shape[0] * ebytes, _words_n(kw, ebytes)),
                        "job": job.name}])
        else:
            kl.append([])
        dst = data.alloc(pj.n_q * ib["emask"] * bb)
        st.append((dst, pj.n_q))
        if queued:
            runs.append([])
            for j, (a, b) in enumerate(zip(bounds, bounds[1:])):
                sp = pj if len(bounds) == 2 else prepare(
                    cfg, sz, x, job.wq[h], None, job.k, int(job.shifts[h][0]), None,
                    None if job.q_th_int is None else int(job.q_th_int[h]), job.polarity,
                    job.lod_terms, name=f"{job.name}[{h}.{j}]", k_exact=keys[h],
                    q_rows=(a, b))
                ep = {**sp.run, "w_buf": buf, "k_buf": h % 2, "k_wait": 1,
                      "k_hold": int(b < bounds[-1])}
                runs[-1].append({"op": OPS["EPRE"], "count": sp.n_q, "run": pack(rl, ep),
                                 "ep": ep, "job": job.name,
                                 "dst": dst + a * ib["emask"] * bb})
            continue
        ep = {**pj.run, **({"w_buf": buf} if "w_buf" in pj.run else {})}
        runs.append({"op": OPS["EPRE"], "count": pj.n_q, "run": pack(rl, ep), "ep": ep,
                     "job": job.name, "dst": dst})
    if queued:
        _queued_order(descs, wl, runs, double, job.name, job.q_early)
        return ("epmask", (heads, x.shape[0], tuple(bounds[:-1])), st)
    if double is not None:
        _double_order(descs, wl, kl, runs, double, job.name, job.k_path == "block")
        return ("epmask", (heads, x.shape[0]), st)
    for h in range(heads):
        descs.extend(wl[h] + kl[h])
        if beside is None:
            descs.append(runs[h])
            descs.extend(after[h] if after is not None else ())
        else:
            descs.append(_overlapped(runs[h]))
            for g in share[h]:
                descs.extend(beside[g])
            descs.append({"op": OPS["EPRE_STORE"], "count": runs[h]["count"],
                          "dst": runs[h]["dst"], "job": job.name})
    return ("epmask", (heads, x.shape[0]), st)


def _kload_rows_desc(cfg: Config, job: PredictJob, keys: np.ndarray, data: _Image,
                     bb: int) -> dict:
    """EPRE_KLOAD with ``kpack`` of one head's exact keys (N_k, d_head): key t's row, its
    d_head W-bit elements packed (element c at bits ``c W``, ``ceil(d_head W / D)`` beats),
    into the Kh banks from word 0 (key t to bank ``t mod U`` at ``(t // U) h_words``)."""
    from exion.hw.dsc import OPS
    keys = np.asarray(keys, np.int64)
    n_k, dh = keys.shape
    per = krow_beats(cfg, dh, 8 * bb)
    return {"op": OPS["EPRE_KLOAD"], "count": n_k, "glen": dh, "kpack": 1, "ubase": 0,
            "h_words": kh_words(cfg, dh), "job": job.name,
            "src": data.alloc(n_k * per * bb, _packed(keys, cfg.width, per * bb))}


def _komem_descs(cfg: Config, job: PredictJob, h: int, data: _Image, ib: dict,
                 bb: int) -> list:
    """Head h's keys on the core: an OMEM_LOAD puts its K_h accumulators where a GEMM of
    the head's K columns leaves them (row block b, column j at ``b ncols + c0 + j`` from
    OMEM address 0; R results an address), then EPRE_KOMEM requantises them into the Kh
    banks (``k_path = "komem"``: ``ncols = d_head``, ``c0 = 0``), or an OMEM_STORE with
    ``ktee`` stores the tile and tees them (``"store"``: K_h the last columns of a row
    block, after ``c0`` filler columns, at least 3 and as many as the Kh writes of a row
    block need, :func:`ktee_gap`; the last block's writes outlast the store)."""
    from exion.golden.dsc_cycles import store_ktee_body
    from exion.hw.dsc import OPS
    if job.k_path == "block":
        raise ExionError(f"EPRE job {job.name}: exact keys from the block's K tiles "
                         f"(ep_keys = 'exact') need the overlapped EP schedule with the "
                         f"EPRE's weights shared (each head's K_h | V_h in one tile); this "
                         f"program has neither")
    if job.k_path not in ("komem", "store"):
        raise ExionError(f"EPRE job {job.name}: k_path = {job.k_path!r} must be 'komem', "
                         f"'store' or 'block'")
    acc = np.asarray(job.k_acc[h], np.int64)
    n_k, dh = acc.shape
    R = cfg.rows
    store = job.k_path == "store"
    c0 = max(3, ktee_gap(cfg, dh, ib["omem"])) if store else 0
    ncols = c0 + dh
    nb = -(-n_k // R)
    if nb * ncols > cfg.omem_depth:
        raise ExionError(f"EPRE job {job.name}: k_acc[{h}] {acc.shape} needs {nb * ncols} "
                         f"OMEM addresses, the engine has omem_depth = {cfg.omem_depth}")
    rng = np.random.default_rng(h)       # the tile's other columns: filler the tee skips
    tile = rng.integers(-(1 << 20), 1 << 20, (nb * R, ncols))
    tile[:n_k, c0:c0 + dh] = acc
    tile[n_k:, c0:c0 + dh] = 0
    items = tile.reshape(nb, R, ncols).transpose(0, 2, 1).reshape(nb * ncols, R)
    obytes = ib["omem"] * bb
    keys = {**job.key_fields(cfg, h), "job": job.name}
    out = [{"op": OPS["OMEM_LOAD"], "count": nb * ncols, "glen": 0xFFFF, "job": job.name,
            "src": data.alloc(nb * ncols * obytes, _packed(items, cfg.acc_width, obytes))}]
    if not store:
        return out + [{"op": OPS["EPRE_KOMEM"], "count": n_k, "ubase": 0, "gstride": dh,
                       **keys}]
    st = {"op": OPS["OMEM_STORE"], "count": nb * ncols, "ubase": 0, "ktee": 1,
          "kt_ncols": ncols, "kt_c0": c0, "n_k": n_k, **keys,
          "dst": data.alloc(nb * ncols * obytes)}
    store_ktee_body(cfg, st, ib["omem"])          # refuses windows too close together
    return out + [st]


def ktee_gap(cfg: Config, d_head: int, per_omem: int) -> int:
    """Addresses an OMEM_STORE with ``ktee`` needs between one row block's K_h window and the
    next, so that a block's ``R * h_words`` Kh writes are done before the next window's
    first column is latched (an address every ``max(per_omem, 2)`` cycles): the tile's
    columns past K_h in a row block, at least."""
    hw = kh_words(cfg, d_head)
    return max(0, -(-(cfg.rows * hw + 1) // max(per_omem, 2)) - 1)


def _double_order(descs: list, wl: list, kl: list, runs: list, double: tuple, name: str,
                  keys_first: bool = False):
    """:func:`_epre_descs`' ``double`` order (W buffers alternating, every run overlapped).
    ``keys_first`` (exact keys teed by the K_h | V_h tiles' stores, issue 19): run h starts
    after head h's K_h | V_h tiles, the SDUE one head ahead -- ``WLOAD_0, kv_0, EPRE_0,
    [WLOAD_(h+1), kv_(h+1) (its store waits for run h), EPRE_STORE_h, EPRE_(h+1), q_h]``."""
    from exion.hw.dsc import OPS
    kv, q = double
    heads = len(runs)

    def start(h):
        descs.extend(kl[h])
        descs.append(_overlapped(runs[h]))
    descs.extend(wl[0])
    if keys_first:
        descs.extend(kv[0])
    start(0)
    for h in range(heads):
        if h + 1 < heads:
            descs.extend(wl[h + 1])
        if not keys_first:
            descs.extend(kv[h])
        elif h + 1 < heads:
            descs.extend(kv[h + 1])
        descs.append({"op": OPS["EPRE_STORE"], "count": runs[h]["count"],
                      "dst": runs[h]["dst"], "job": name})
        if h + 1 < heads:
            start(h + 1)
        descs.extend(q[h])


def _sub_run_bounds(job: PredictJob, sz, n: int, queued: bool) -> list[int]:
    """The query rows ``[0, *job.q_split, n]`` where a head's sub-runs start and the last
    ends; a split needs queued runs and starts at multiples of the EPRE's units."""
    split = [int(a) for a in job.q_split]
    if not split:
        return [0, n]
    if not queued:
        raise ExionError(f"EPRE job {job.name}: sub-runs (q_split) need the queued runs of "
                         "exact keys (ep_keys = 'exact', the key queue on)")
    b = [0, *split, n]
    if any(lo >= hi for lo, hi in zip(b, b[1:])) or any(a % sz.units for a in split):
        raise ExionError(f"EPRE job {job.name}: q_split = {tuple(split)} must rise inside "
                         f"1 .. {n - 1} in multiples of the EPRE's {sz.units} units")
    return b


def _queued_order(descs: list, wl: list, runs: list, double: tuple, name: str,
                  q_early: bool = False):
    """The queued order of exact keys in a block (issue 19, ``k_queue``): every run has
    ``k_wait`` and Kh buffer ``h mod 2``, so it is handed to the DSC's one-run slot early,
    starts as soon as the previous run ends and does its stage 1 (the query side) before
    head h's K_h | V_h tile tees its keys (``kq``: into the free Kh buffer); the SDUE runs
    one head ahead and EPRE_STORE (``kq``) waits only for run h's rows -- ``WLOAD_0,
    EPRE_0, WLOAD_1, EPRE_1, kv_0, [kv_(h+1), EPRE_STORE_h, q_h, WLOAD_(h+2), EPRE_(h+2)]``
    (WLOAD_(h+2) after q_h, whose Q_h columns come from buffer h mod 2). ``q_early``
    (``split_qkv``'s dense Q, which needs no mask): q_h before EPRE_STORE_h, beside run h.
    ``runs[h]``: head h's sub-runs (``q_split``), queued in the same way run by run: run
    r + 2 of the flattened list after run r's EPRE_STORE (after q_h when r is head h's
    last), with its head's WLOAD when it is that head's first.
    """
    from exion.hw.dsc import OPS
    kv, q = double
    heads = len(runs)
    flat = [(h, j, r) for h, rs in enumerate(runs) for j, r in enumerate(rs)]

    def hand(i):
        if i < len(flat):
            h, j, r = flat[i]
            if j == 0:
                descs.extend(wl[h])
            descs.append(_overlapped(r))
    hand(0)
    hand(1)
    descs.extend(kv[0])
    i = 0
    for h in range(heads):
        if h + 1 < heads:
            descs.extend(kv[h + 1])
        if q_early:
            descs.extend(q[h])
        for j, r in enumerate(runs[h]):
            descs.append({"op": OPS["EPRE_STORE"], "count": r["count"], "kq": 1,
                          "dst": r["dst"], "job": name})
            if not q_early and j == len(runs[h]) - 1:
                descs.extend(q[h])
            hand(i + 2)
            i += 1


def _overlapped(run: dict) -> dict:
    """An EPRE descriptor run in the background (``overlap``: its rows go to the mask FIFO,
    an EPRE_STORE writes them to ``dst``, so the run itself has none)."""
    return {k: v for k, v in run.items() if k != "dst"} | {"overlap": 1}


def _words_n(words: np.ndarray, per_bytes: int) -> np.ndarray:
    """(n, E) elements -> n items of ``per_bytes`` (int16 containers, zero padded)."""
    n = words.shape[0]
    out = np.zeros((n, per_bytes), np.uint8)
    out[:, :2 * words.shape[1]] = words.astype("<i2").view(np.uint8).reshape(n, -1)
    return out


def _epre_items(cfg: Config, raw: np.ndarray, n_k: int, starts=(0,)) -> np.ndarray:
    """(N_q, n_k + 1) bool (mask row, then the dominant flag) from EPRE mask items, which
    must come in row order, each carrying its row within its run (the runs start at
    ``starts``: sub-runs; an item carrying another row index reads as a dominant row with
    no key, which the EPRE never produces: a dominant row keeps its top-1 key, or every key
    under keep_all)."""
    from exion.hw.dsc import dsc_epre_sizes
    from exion.hw.epre import mask_layout
    from .payload import unpack
    lay = mask_layout(dsc_epre_sizes(cfg))
    out = np.zeros((raw.shape[0], n_k + 1), bool)
    for i, item in enumerate(raw):
        v = unpack(lay, int.from_bytes(item.tobytes(), "little"))
        if int(v["row"]) != i - max(a for a in starts if a <= i):
            out[i, n_k] = True
            continue
        out[i, :n_k] = [(int(v["mask"]) >> j) & 1 for j in range(n_k)]
        out[i, n_k] = bool(v["dominant"])
    return out


def _mask_items(cfg: Config, raw: np.ndarray, T: int, N: int) -> np.ndarray:
    """(T, N) bool mask from the FFN-Reuse unit's mask items (row block outer, P columns
    per item; ``cv[l]`` bit r = row r of the block)."""
    from exion.hw.cau import mask_layout
    from .payload import unpack
    R, P = cfg.rows, CAU_COLS_PER_CYCLE
    lay = mask_layout(cfg, P, True)
    per = -(-N // P)
    full = np.zeros((-(-T // R) * R, per * P), bool)
    for i, item in enumerate(raw):
        blk, j = divmod(i, per)
        cv = unpack(lay, int.from_bytes(item.tobytes(), "little"))["cv"]
        for lane in range(P):
            full[blk * R:(blk + 1) * R, j * P + lane] = [(cv[lane] >> r) & 1 for r in range(R)]
    return full[:T, :N]


def read_results(cfg: Config, prog: DscProgram, image: np.ndarray) -> list[np.ndarray]:
    """Each job's output from the memory image after the run."""
    from exion.hw.dsc import item_beats
    obytes = item_beats(cfg, prog.bus_bits)["omem"] * prog.bus_bits // 8
    wbytes = item_beats(cfg, prog.bus_bits)["word"] * prog.bus_bits // 8
    outs = []
    for case, tiles, st in prog.stores:
        if isinstance(case, tuple) and case[0] == "gelu_omem":
            outs.append(_gelu_omem_result(cfg, case[1], case[2], tiles, st, image, wbytes))
            continue
        if case == "epmask":            # EPRE mask items, per head (its sub-runs' starts)
            heads, T, *starts = tiles
            ebytes = item_beats(cfg, prog.bus_bits)["emask"] * prog.bus_bits // 8
            outs.append(np.stack([_epre_items(cfg, np.asarray(
                image[a:a + n * ebytes], np.uint8).reshape(n, ebytes), T, *starts)
                for a, n in st]))
            continue
        if case == "ffmask":            # FFN-Reuse mask items
            (addr, n), = st
            mbytes = item_beats(cfg, prog.bus_bits)["mask"] * prog.bus_bits // 8
            raw = np.asarray(image[addr:addr + n * mbytes], np.uint8).reshape(n, mbytes)
            outs.append(_mask_items(cfg, raw, *tiles))
            continue
        if isinstance(case, str):       # GELU / row jobs: words of L 16-bit containers
            (addr, n), = st
            T, N = tiles
            raw = np.asarray(image[addr:addr + n * wbytes], np.uint8).reshape(n, wbytes)
            w = raw[:, :2 * cfg.lanes].copy().view("<i2").astype(np.int64)
            outs.append(w.reshape(T, -1)[:, :N])
            continue
        omems = []
        for addr, n in st:
            raw = np.asarray(image[addr:addr + n * obytes], np.uint8).reshape(n, obytes)
            omems.append(_unpacked(raw, cfg.acc_width, cfg.rows))
        outs.append(assemble(cfg, case, tiles, omems))
    return outs


def _gelu_omem_result(cfg: Config, case: GemmCase, params: dict, tiles: list, st: list,
                      image: np.ndarray, wbytes: int) -> np.ndarray:
    """H of a job whose tiles end with GELU_OMEM: tile by tile, group k's word r lane i is
    the GELU of OMEM address ``k L + i``, row r of its row block (``assemble``'s address
    map). Elements no tile covers keep the host's GELU of the preload (the bias), which is
    what the core would compute for them."""
    from exion.golden.cfse import GeluParams, gelu_requant
    R, L = cfg.rows, cfg.lanes
    out = gelu_requant(np.asarray(case.prev, np.int64), GeluParams(**params), cfg)
    for t, (addr, ng) in zip(tiles, st):
        raw = np.asarray(image[addr:addr + ng * R * wbytes], np.uint8).reshape(ng * R, wbytes)
        v = raw[:, :2 * L].copy().view("<i2").astype(np.int64).reshape(ng, R, L)
        n = len(t.cols)
        a = np.arange(ng * L)
        a = a[a < n * (len(t.rows) // R)]
        blk, j = np.divmod(a, n)
        for r in range(R):
            rows = t.rows[blk * R + r]
            ok = rows >= 0
            out[rows[ok], np.asarray(t.cols)[j[ok]]] = v[a[ok] // L, r, a[ok] % L]
    return out


def stage_durations(descs: list, stages: list, total: int, bus_bits: int) -> list[int]:
    """Per-descriptor cycles from the bench's ``(stage, cycles)`` change records: a
    descriptor's stage shows from its first fetched beat, ``overhead - 1 - desc_beats + 2``
    = 3 cycles after it starts (the first record is the reset value 0, taken as cycle 3).
    ``stage`` keeps its value between runs: a run after another first shows the previous
    run's last stage, and its change to descriptor 0 is that same start (dropped here)."""
    if len(stages) > 1 and stages[0][0] != 0 and stages[1][0] == 0:
        stages = stages[1:]
    t = [3] + [c for _, c in stages[1:]] + [total + 3]
    if len(t) != len(descs) + 1:
        raise ExionError(f"stage records ({len(stages)}) do not match the program "
                         f"({len(descs)} descriptors)")
    return [t[i + 1] - t[i] for i in range(len(descs))]


def gemm_bodies(descs: list, durations: list, engine: list, bus_bits: int) -> list:
    """The engine's measured part of every GEMM descriptor, in program order, for
    :func:`exion.golden.dsc_cycles.program_cycles`, from the bench's ``(value, cycle)``
    change records of the core's ``engine`` output (high from a GEMM's DECODE until its
    engine is idle) and the descriptors' ``durations``: a plain GEMM's body (the rise to
    the fall), an overlapped GEMM's ``(mask stream, body)`` (the rise to the next
    descriptor's start, and to the fall). A record's ``cycles`` value is 3 less than
    :func:`stage_durations`' frame (whose first descriptor starts at 3): measured, and
    checked by every plain GEMM's body, which both give."""
    n = sum(1 for d in descs if d["op"] == 4)
    pairs = list(zip(engine[::2], engine[1::2]))
    if len(engine) != 2 * n or any((v0, v1) != (1, 0) for (v0, _), (v1, _) in pairs):
        raise ExionError(f"engine records ({len(engine)}) do not match the program's "
                         f"{n} GEMMs")
    starts = np.cumsum([3] + list(durations))      # stage_durations' frame
    out, k = [], 0
    for i, d in enumerate(descs):
        if d["op"] != 4:
            continue
        (_, rise), (_, fall) = pairs[k]
        k += 1
        out.append((int(starts[i + 1] - 3 - rise), fall - rise) if d.get("overlap")
                   else fall - rise)
    return out


def program_beats(cfg: Config, prog: DscProgram) -> int:
    """Bus beats the program moves (descriptor fetches included)."""
    from exion.hw.dsc import OPS, item_beats
    ib = item_beats(cfg, prog.bus_bits)
    per = {OPS["IMEM_LOAD"]: ib["oword"], OPS["GMEM_LOAD"]: ib["oword"],
           OPS["OMEM_LOAD"]: ib["omem"], OPS["GEMM"]: ib["mask"], OPS["OMEM_STORE"]: ib["omem"],
           OPS["GELU"]: ib["acc"] + ib["word"], OPS["SOFTMAX"]: ib["smx"] + ib["word"],
           OPS["GELU_OMEM"]: cfg.rows * ib["word"],
           OPS["LAYERNORM"]: 2 * ib["word"], OPS["FFNR"]: ib["word"],
           OPS["EPRE_XLOAD"]: ib["eword"], OPS["EPRE_WLOAD"]: ib["eword"],
           OPS["EPRE_KLOAD"]: ib["eword"],
           OPS["EPRE"]: ib["emask"], OPS["EPRE_STORE"]: ib["emask"]}
    desc_beats = max(1, 256 // prog.bus_bits)

    def extra(d):     # FFNR: the mask items out (dense), or H' in and delta out (sparse)
        if d["op"] != OPS["FFNR"]:
            return 0
        return 2 * d["count"] * ib["word"] if d.get("sparse") else d.get("aux", 0) * ib["mask"]

    def item(d):      # an overlapped EPRE writes nothing (EPRE_STORE does); bcast: 1 result
        if d.get("overlap") and d["op"] == OPS["EPRE"]:
            return 0
        if d["op"] == OPS["EPRE_KLOAD"] and d.get("kpack"):     # a packed key row
            return krow_beats(cfg, d["glen"], prog.bus_bits)
        return ib["obc"] if d["op"] == OPS["OMEM_LOAD"] and d.get("bcast") else per.get(d["op"], 0)
    return sum(desc_beats + extra(d) + d.get("count", 0) * item(d) for d in prog.descs)


"""NumPy inference of the digits DiT (float and INT12 paths) and its DDIM sampler with
EXION's software optimizations as switches.

The model (mirrors ``TinyDiT`` in :mod:`exion.workloads.train` layer for layer):

* patchify 8x8 -> 16 tokens of 2x2 pixels, linear embed to width d = 64, learned positions;
* condition ``c = MLP(sinusoid(t)) + class_embedding(y)`` (class 10 = "no class");
* 4 blocks with adaLN-Zero: ``(shift, scale, gate) x 2 = SiLU(c) @ ada``;
  ``x += g1 * Attn(LN(x) * (1 + sc1) + sh1)``, ``x += g2 * FFN(LN(x) * (1 + sc2) + sh2)``;
  attention has 4 heads of 16, the FFN is ``fc2(GELU(fc1(h)))`` with 4d = 256 hidden units;
* final adaLN + linear to 2x2 pixels -> predicted noise eps, un-patchified.

Paths (:class:`Exion` ``quant``):

* float: float64 everywhere (exact erf GELU).
* INT12 **[choice]**: every GEMM of a block (QKV, Q K^T, P V, proj, FC1, FC2) runs on
  W-bit operands from :func:`exion.golden.quant.quantize`'s formula (symmetric, per tensor
  and per sample, weights per tensor except QKV's: one scale per head slice of Q, K and V
  **[choice]**, so that eager prediction's Wq / Wk are those slices) with exact integer
  accumulation; biases are added at
  accumulator scale (``rint(b / (s_x s_w))``). FC1 -> H is :func:`exion.golden.cfse.gelu_requant`
  with :func:`gelu_params`; the H scale ``s_h`` is fixed at each dense iteration (it must be
  for FFN-Reuse: reused and fresh H share one scale). Softmax is
  :func:`exion.golden.cfse.softmax_fx` on Q.11 logits, its Q.15 probabilities requantized to W
  bits; layer norm is :func:`exion.golden.cfse.layernorm_fx` (gamma = 1, beta = 0; each row is
  first scaled by a power of two so that it fits Q.11 -- layer norm is scale invariant, so only
  eps notices). Embeddings, adaLN modulation, gates and residual adds stay float (host /
  vector work outside the SDUE and CFSE). Since issue 16 the INT12 layer norm, attention
  and FFN are :mod:`exion.golden.dsc` (the DSC core's golden model, with EP's Q/K/V row
  skipping: per-head scales over the computed rows), so this path is what the RTL computes.

EXION switches (all default off; the same seeds and noise as vanilla):

* FFN-Reuse (SPEC 3.3): schedule ``t % (N+1) == 0`` dense via
  :func:`exion.golden.ffn_reuse.schedule`, mask from :func:`exion.golden.ffn_reuse.build_mask`
  on the dense iteration's INT12 H (in the float path H is quantized for the mask only),
  one mask per sample and layer. Sparse iterations recompute H where the mask is 1 and
  reuse H_d elsewhere; FC2 then sees ``H'`` (equal to the delta form ``Y_d + (H' - H_d) W2``).
  Controls **[choice]**: ``control="random"`` replaces the rule's mask by a random one with
  the same number of ones per sample and layer (seeded; for the ``column`` rule, random
  whole hidden units: ``column_mask`` on random column scores); ``control="zero"`` writes 0
  instead of reusing H_d where the mask is 0.
* Eager prediction (SPEC 3.4): per sample, block and head, on the INT12 modulated LN output
  and Wq/Wk head slices (the QKV weights' own, quantised per head slice): :func:`batched_predict` (bit-equal to
  :func:`exion.golden.predict.eager_predict`, checked by the tests). Scores outside the
  mask are dropped from the softmax (so a top-1 row outputs its key's V row).
  ``q_th`` is given in logit units (after 1/sqrt(d_head)) and converted to the integer scale
  of Sh per sample and head; ``None`` disables the dominant rule.
  Control **[choice]**: ``ep_scores="exact"`` keeps each query row's top ``keep_count(k, T)``
  keys of the *exact* float logits instead of EP's predicted ones (ties to the lower key
  index; no dominant rule). It prices the truncation to k keys alone, without prediction
  error, and runs on the float path only.
  Keys **[choice]** (issue 19): ``ep_keys="exact"`` predicts with the exact keys -- K_h's
  accumulators of the Q|K|V product, requantised as stage 1 requantises Kh_acc
  (``golden.predict.omem_keys``), what the DSC's OMEM_STORE ``ktee`` puts into the EPRE's
  Kh banks -- instead of stage 1's predicted Kh; stage 1 computes Qh only. The INT12 path
  only (``quant``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from exion.config import Config, get_config
from exion.errors import ExionError
from exion.golden import dsc
from exion.golden.ffn_reuse import RULES, build_mask, random_control, schedule
from exion.golden.lod import bit_length, lod_approx
from exion.golden.predict import POLARITIES, keep_count

from .common import ARCH, alpha_bars

__all__ = ["Exion", "DiT", "SampleResult", "sample", "batched_predict", "ddim_timesteps",
           "check_guidance", "guided", "guided_batch"]

CONTROLS = (None, "random", "zero")
EP_SCORES = ("predicted", "exact")
EP_KEYS = ("predicted", "exact")


@dataclass(frozen=True)
class Exion:
    """EXION software switches of one sampling run (see the module docstring)."""

    ffn_reuse: bool = False
    n: int = 2
    s: float = 0.8
    rule: str = "magnitude"
    control: str | None = None
    dense_tail: float = 0.0
    ep: bool = False
    k: float = 0.5
    q_th: float | None = None
    polarity: str = "top1"
    lod_terms: int = 2
    quant: bool = False
    ep_scores: str = "predicted"
    ep_keys: str = "predicted"

    def __post_init__(self):
        if self.rule not in RULES:
            raise ExionError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.control not in CONTROLS:
            raise ExionError(f"control must be None, 'random' or 'zero', got {self.control!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 0:
            raise ExionError(f"N (sparse iterations per dense one) must be an integer >= 0, "
                             f"got {self.n!r}")
        if not 0 <= self.s <= 1:
            raise ExionError(f"target sparsity s must be in [0, 1], got {self.s!r}")
        if not 0 <= self.k <= 1:
            raise ExionError(f"k (top-k ratio) must be in [0, 1], got {self.k!r}")
        if self.polarity not in POLARITIES:
            raise ExionError(f"polarity must be one of {', '.join(POLARITIES)}, "
                             f"got {self.polarity!r}")
        if self.lod_terms not in (1, 2):
            raise ExionError(f"lod_terms must be 1 or 2, got {self.lod_terms!r}")
        if self.q_th is not None and not self.q_th >= 0:
            raise ExionError(f"q_th must be >= 0 or None, got {self.q_th!r}")
        if self.ep_scores not in EP_SCORES:
            raise ExionError(f"ep_scores must be one of {', '.join(EP_SCORES)}, "
                             f"got {self.ep_scores!r}")
        if self.ep_scores == "exact" and self.quant:
            raise ExionError("ep_scores='exact' (the exact top-k control) runs on the float "
                             "model only; turn quant off")
        if self.ep_keys not in EP_KEYS:
            raise ExionError(f"ep_keys must be one of {', '.join(EP_KEYS)}, "
                             f"got {self.ep_keys!r}")
        if self.ep_keys == "exact" and not self.quant:
            raise ExionError("ep_keys='exact' (the SDUE's keys in the EPRE) runs on the INT12 "
                             "path only; turn quant on")


# -- small float helpers ----------------------------------------------------------------
def _silu(x):
    return x / (1.0 + np.exp(-x))


def _ln(x, eps=ARCH["ln_eps"]):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _exact_topk(logits: np.ndarray, kn: int) -> np.ndarray:
    """Boolean mask of each row's ``kn`` largest logits (ties: the lower key index)."""
    order = np.argsort(-logits, axis=-1, kind="stable")[..., :kn]
    keep = np.zeros(logits.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=-1)
    return keep


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _erf_gelu(x):
    # Vectorised erf GELU; gelu_float (math.erf per element) is the reference, too slow here.
    from scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


# -- quantization helpers (golden.quant's formula, vectorised over samples) -------------
def _scales(x, cfg: Config, axes) -> np.ndarray:
    m = np.max(np.abs(x), axis=axes, keepdims=True)
    return np.where(m > 0, m / cfg.wmax, 1.0)


def _q(x, s, cfg: Config) -> np.ndarray:
    """``clip(rint(x / s))`` as int64: :func:`exion.golden.quant.quantize` with scale ``s``."""
    return np.clip(np.rint(x / s), cfg.wmin, cfg.wmax).astype(np.int64)


def _imatmul(a, b) -> np.ndarray:
    """Exact integer product of W-bit operands. float64 is exact here: |a|, |b| < 2**11 and
    K <= 256, so every partial sum is below 2**31 << 2**53."""
    return np.rint(np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)
                   ).astype(np.int64)


def _stage1_shifts(acc, width: int) -> np.ndarray:
    """:func:`exion.golden.predict.stage1_shift` per sample (first axis), vectorised:
    ``hi < 2**(W-1+s)`` iff ``s >= bitlen(hi) - (W-1)``; ``lo >= -2**(W-1+s)`` iff
    ``s >= bitlen(-lo-1) - (W-1)``."""
    hi = np.maximum(acc.max(axis=(1, 2)), 0)
    lo = np.minimum(acc.min(axis=(1, 2)), 0)
    return np.maximum(0, np.maximum(bit_length(hi), bit_length(-lo - 1)) - (width - 1))


# -- eager prediction, batched -----------------------------------------------------------
def batched_predict(cfg: Config, xq, wq, wk, k, q_th_int=None, polarity="top1",
                    lod_terms=2):
    """:func:`exion.golden.predict.eager_predict` over a batch: ``xq`` (B, T, d) INT operands,
    ``wq``/``wk`` (d, d_head); shifts calibrated per sample (ideal host); ``q_th_int`` None
    or (B,) ints. Returns ``(score_mask (B,T,T), dominant (B,T), shift_q (B,), shift_k (B,),
    sh (B,T,T))``."""
    ax = lod_approx(xq, lod_terms).astype(np.float64)
    qa = np.rint(ax @ lod_approx(wq, lod_terms).astype(np.float64)).astype(np.int64)
    ka = np.rint(ax @ lod_approx(wk, lod_terms).astype(np.float64)).astype(np.int64)
    B, T, _ = xq.shape
    sq, sk = _stage1_shifts(qa, cfg.width), _stage1_shifts(ka, cfg.width)
    qh = np.clip(qa >> sq[:, None, None], cfg.wmin, cfg.wmax)
    kh = np.clip(ka >> sk[:, None, None], cfg.wmin, cfg.wmax)
    sh = np.rint(lod_approx(qh, lod_terms).astype(np.float64)
                 @ np.swapaxes(lod_approx(kh, lod_terms), 1, 2).astype(np.float64)
                 ).astype(np.int64)
    k_n = keep_count(k, T)
    order = np.argsort(-sh, axis=2, kind="stable")
    mask = np.zeros(sh.shape, dtype=bool)
    np.put_along_axis(mask, order[:, :, :k_n], True, axis=2)
    if q_th_int is None:
        dom = np.zeros((B, T), dtype=bool)
    else:
        top2 = np.sort(sh, axis=2)[:, :, -2:]
        dom = (top2[:, :, 1] - top2[:, :, 0]) >= np.asarray(q_th_int)[:, None]
    if polarity == "top1":
        top1 = np.zeros(sh.shape, dtype=bool)
        np.put_along_axis(top1, order[:, :, :1], True, axis=2)
        mask = np.where(dom[:, :, None], top1, mask)
    else:
        mask = np.where(dom[:, :, None], True, mask)
    return mask, dom, sq, sk, sh


# -- the model ---------------------------------------------------------------------------
class DiT:
    """The digits DiT with weights ``w`` (a dict as saved by :mod:`.weights`)."""

    def __init__(self, w: dict[str, np.ndarray], cfg: Config | None = None):
        self.w = w
        self.cfg = get_config("exion16") if cfg is None else cfg
        self.d = ARCH["width"]
        self.heads = ARCH["heads"]
        self.dh = self.d // self.heads
        self.depth = ARCH["depth"]
        need = ["patch.w", "pos", "t1.w", "t2.w", "y_emb", "fada.w", "out.w"] + \
            [f"blocks.{i}.{n}.w" for i in range(self.depth) for n in ("ada", "qkv", "fc1")]
        missing = [n for n in need if n not in w]
        if missing:
            raise ExionError(f"weights lack {', '.join(missing[:4])} (not a digits-DiT file)")
        # Patch size and token count follow the file: digits16 (2x2) or digits64 (1x1).
        self.patch = int(round(math.sqrt(w["patch.w"].shape[0])))
        self.tokens = int(w["pos"].shape[0])
        self.grid = ARCH["image"] // self.patch
        if self.patch * self.grid != ARCH["image"] or self.grid ** 2 != self.tokens:
            raise ExionError(f"weights: patch.w {w['patch.w'].shape} and pos "
                             f"{w['pos'].shape} do not tile an 8x8 image")
        self.name = {16: "digits16", 64: "digits64"}.get(self.tokens, f"T{self.tokens}")
        # Weight quantization, done once: per tensor, except the Q/K/V projection, which
        # has one scale per head slice of Q, K and V [choice] (a column vector of scales,
        # constant over each head's d_head columns). Eager prediction sees Wq/Wk per head,
        # so its weights are exactly the QKV weights' head slices: one INT12 copy that the
        # SDUE and the EPRE share (the DSC streams it once, docs/dsc.md "GMEM_LOAD tee").
        self._wq = {}
        for i in range(self.depth):
            for n in ("qkv", "proj", "fc1", "fc2"):
                W = w[f"blocks.{i}.{n}.w"]
                if n == "qkv":
                    sl = np.abs(W).reshape(W.shape[0], 3 * self.heads, self.dh).max(axis=(0, 2))
                    s = np.repeat(np.maximum(sl, 1e-30) / self.cfg.wmax, self.dh)
                else:
                    s = float(np.max(np.abs(W))) / self.cfg.wmax
                self._wq[(i, n)] = (_q(W, s, self.cfg), s)
            qw, s = self._wq[(i, "qkv")]
            for h in range(self.heads):
                for j, nm in ((0, "q"), (1, "k")):
                    c0 = j * self.d + h * self.dh
                    self._wq[(i, f"ep_{nm}{h}")] = (qw[:, c0:c0 + self.dh], float(s[c0]))

    # conditioning and embeddings (float, host side)
    def cond(self, t, y) -> np.ndarray:
        w = self.w
        half = ARCH["t_freq"] // 2
        freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
        args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None]
        temb = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
        c = _silu(temb @ w["t1.w"] + w["t1.b"]) @ w["t2.w"] + w["t2.b"]
        return c + w["y_emb"][np.asarray(y)]

    def patchify(self, img):
        B = img.shape[0]
        p, g = self.patch, self.grid
        return img.reshape(B, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(B, g * g, p * p)

    def unpatchify(self, x):
        B = x.shape[0]
        p, g = self.patch, self.grid
        return x.reshape(B, g, g, p, p).transpose(0, 1, 3, 2, 4).reshape(B, g * p, g * p)

    # linear layers
    def _linear(self, x, i, name, quant):
        b = self.w[f"blocks.{i}.{name}.b"]
        if not quant:
            return x @ self.w[f"blocks.{i}.{name}.w"] + b
        qw, sw = self._wq[(i, name)]
        sx = _scales(x, self.cfg, (1, 2))
        acc = _imatmul(_q(x, sx, self.cfg), qw) + np.rint(b / (sx * sw)).astype(np.int64)
        return acc * (sx * sw)

    def _layernorm(self, x, quant):
        if not quant:
            return _ln(x)
        return dsc.layernorm(x)     # the DSC core's layer norm (golden/dsc.py)

    def _attention(self, h, i, ex: Exion, stats):
        if ex.quant:    # INT12: what the DSC core computes (golden/dsc.py)
            return dsc.attention(self.cfg, h, dsc.block_weights(self.w, self._wq, i, self.heads),
                                 ex, stats, layer=i)
        B, T, d = h.shape       # the float model from here on
        qkv = self._linear(h, i, "qkv", False)
        q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(B, T, self.heads, self.dh)
                   .transpose(0, 2, 1, 3) for j in range(3))
        scale = 1.0 / math.sqrt(self.dh)
        logits = q @ np.swapaxes(k, 2, 3) * scale
        keep = None
        if ex.ep and ex.ep_scores == "exact":
            keep = _exact_topk(logits, keep_count(ex.k, T))
            stats.setdefault("ep_sparsity", []).append((i, 1.0 - keep.sum() / keep.size))
            # share of the softmax mass the kept keys hold (how concentrated attention is)
            mass = float((_softmax(logits) * keep).sum(-1).mean())
            stats.setdefault("ep_kept_mass", []).append((i, mass))
            if "record" in stats:
                stats["record"].append((stats["it"], i, "ep", keep,
                                        np.zeros(keep.shape[:-1], dtype=bool)))
        elif ex.ep:
            cfg = self.cfg
            sx = _scales(h, cfg, (1, 2))
            xq = _q(h, sx, cfg)
            keep = np.zeros((B, self.heads, T, T), dtype=bool)
            doms = np.zeros((B, self.heads, T), dtype=bool)
            kept = 0
            for hd in range(self.heads):
                wq, swq = self._wq[(i, f"ep_q{hd}")]
                wk, swk = self._wq[(i, f"ep_k{hd}")]
                q_th_int = None
                if ex.q_th is not None:
                    # Sh unit in logits: (sx swq 2^shq)(sx swk 2^shk) / sqrt(dh); the shifts
                    # are known after stage 1, so predict once to learn them (cheap here).
                    _, _, shq, shk, _ = batched_predict(cfg, xq, wq, wk, ex.k, None,
                                                        ex.polarity, ex.lod_terms)
                    unit = (sx[:, 0, 0] ** 2) * swq * swk * 2.0 ** (shq + shk) * scale
                    q_th_int = np.rint(ex.q_th / unit).astype(np.int64)
                m, dom, _, _, _ = batched_predict(cfg, xq, wq, wk, ex.k, q_th_int,
                                                  ex.polarity, ex.lod_terms)
                keep[:, hd], doms[:, hd] = m, dom
                kept += int(m.sum())
            stats.setdefault("ep_sparsity", []).append((i, 1.0 - kept / keep.size))
            if "record" in stats:      # masks for the cycle model (workloads.fidelity)
                stats["record"].append((stats["it"], i, "ep", keep, doms))
        if keep is not None:
            logits = np.where(keep, logits, -np.inf)
        a = _softmax(logits) @ v
        a = a.transpose(0, 2, 1, 3).reshape(B, T, d)
        return self._linear(a, i, "proj", False)

    def _ffn(self, h, i, ex: Exion, st, dense: bool, stats, rng):
        """FFN with FFN-Reuse state ``st`` (dict per block, kept across iterations)."""
        if ex.quant:    # INT12: what the DSC core computes (golden/dsc.py)
            return dsc.ffn(self.cfg, h, dsc.block_weights(self.w, self._wq, i, self.heads),
                           ex, st, dense, stats, rng, layer=i)
        cfg = self.cfg          # the float model from here on
        w1, b1 = self.w[f"blocks.{i}.fc1.w"], self.w[f"blocks.{i}.fc1.b"]
        B = h.shape[0]
        H = _erf_gelu(h @ w1 + b1)
        if ex.ffn_reuse:
            if dense:
                Hq = np.stack([_q(H[b], _scales(H[b], cfg, None), cfg) for b in range(B)])
                prev = st.get("Hq")
                masks = np.stack([build_mask(Hq[b], ex.s, ex.rule,
                                             None if prev is None else prev[b],
                                             cfg.width)[0] for b in range(B)])
                if ex.control == "random":
                    masks = random_control(masks, ex.rule, rng)
                st.update(Hq=Hq, H_d=H, mask=masks)
            else:
                mask = st["mask"]
                fill = 0 if ex.control == "zero" else st["H_d"]
                H = np.where(mask, H, fill)
                stats.setdefault("ffn_sparsity", []).append((i, 1.0 - mask.mean()))
                if "record" in stats:
                    stats["record"].append((stats["it"], i, "ffn", mask, None))
        st["H_last"] = H
        return H @ self.w[f"blocks.{i}.fc2.w"] + self.w[f"blocks.{i}.fc2.b"]

    def eps(self, img, t, y, ex: Exion = Exion(), state=None, dense=True, stats=None,
            rng=None, hook=None):
        """Predicted noise for images ``img`` (B, 8, 8) at timesteps ``t`` (B,), classes ``y``.

        ``state``: list (one dict per block) carried across iterations for FFN-Reuse;
        ``dense``: this iteration is an FFN-Reuse dense one; ``hook(i, name, array)`` sees
        the block inputs/outputs (traces, similarity measurements)."""
        w = self.w
        state = [{} for _ in range(self.depth)] if state is None else state
        stats = {} if stats is None else stats
        c = self.cond(t, y)
        sc = _silu(c)
        x = self.patchify(img) @ w["patch.w"] + w["patch.b"] + w["pos"]
        for i in range(self.depth):
            mod = sc @ w[f"blocks.{i}.ada.w"] + w[f"blocks.{i}.ada.b"]
            sh1, sc1, g1, sh2, sc2, g2 = (m[:, None, :] for m in np.split(mod, 6, axis=-1))
            h = self._layernorm(x, ex.quant) * (1 + sc1) + sh1
            x = x + g1 * self._attention(h, i, ex, stats)
            h = self._layernorm(x, ex.quant) * (1 + sc2) + sh2
            if hook is not None:
                hook(i, "ffn_in", h)
            x = x + g2 * self._ffn(h, i, ex, state[i], dense, stats, rng)
            if hook is not None:
                hook(i, "gelu_out", state[i]["H_last"])
        sh, scl = np.split(sc @ w["fada.w"] + w["fada.b"], 2, axis=-1)
        x = _ln(x) * (1 + scl[:, None]) + sh[:, None]
        return self.unpatchify(x @ w["out.w"] + w["out.b"])


# -- DDIM sampling -----------------------------------------------------------------------
def ddim_timesteps(steps: int) -> np.ndarray:
    """``steps`` training timesteps, descending, stride ``1000 // steps`` ending at 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ExionError(f"steps must be an integer in 1..1000, got {steps!r}")
    stride = ARCH["n_train_t"] // steps
    return (np.arange(steps) * stride)[::-1].copy()


@dataclass
class SampleResult:
    images: np.ndarray          # (B, 8, 8) in model space [-1, 1] (not clipped)
    labels: np.ndarray          # (B,)
    ffn_sparsity: float         # mean achieved inter-iteration sparsity (sparse iterations)
    ep_sparsity: float          # mean achieved intra-iteration sparsity
    per_layer: dict = field(default_factory=dict)
    ep_kept_mass: float | None = None   # exact top-k control: softmax mass of the kept keys


def check_guidance(guidance) -> float:
    """The classifier-free guidance scale ``w`` of :func:`sample`, checked: a number >= 1
    (1 = the conditional prediction alone, no unconditional pass)."""
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) \
            or not math.isfinite(guidance) or not 1 <= guidance <= 20:
        raise ExionError(f"guidance must be a number in 1..20 (1 = off), got {guidance!r}")
    return float(guidance)


def guided(e, n: int, guidance: float):
    """Classifier-free guidance of a doubled batch (``n`` conditional samples, then their
    ``n`` unconditional copies): ``e_u + w (e_c - e_u)``; ``e`` itself when w = 1."""
    if guidance == 1.0:
        return e
    return e[n:] + guidance * (e[:n] - e[n:])


def guided_batch(img, labels, guidance: float):
    """The batch a guided step runs: the images twice, the second copy with class 10 ("no
    class", the embedding trained by label dropout, ``ARCH["label_dropout"]``)."""
    if guidance == 1.0:
        return img, labels
    return (np.concatenate([img, img]),
            np.concatenate([labels, np.full(len(labels), ARCH["classes"])]))


def sample(model: DiT, n: int, steps: int, ex: Exion = Exion(), seed: int = 0,
           labels=None, hook=None, record: list | None = None,
           guidance: float = 1.0) -> SampleResult:
    """DDIM (eta = 0) sampling of ``n`` images; noise and labels depend only on ``seed``
    (labels default to ``arange(n) % 10``), so every switch setting sees the same noise.
    ``guidance`` w > 1: classifier-free guidance **[choice]** (:func:`guided`: every step
    runs the batch twice, conditional and with the "no class" label; EXION's caches and
    predictions are per sample, so each copy has its own); the sparsity statistics then
    cover both copies.
    ``record``: a list that receives ``(iteration, block, "ffn", mask (B,T,F), None)`` for
    every sparse FFN-Reuse iteration and ``(iteration, block, "ep", score_mask (B,heads,T,T),
    dominant (B,heads,T))`` for every EP call."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ARCH["image"], ARCH["image"]))
    y = np.arange(n) % ARCH["classes"] if labels is None else np.asarray(labels)
    mask_rng = np.random.default_rng([seed, 1])
    ab = alpha_bars()
    ts = ddim_timesteps(steps)
    dense_sched = schedule(steps, ex.n, ex.dense_tail) if ex.ffn_reuse \
        else np.ones(steps, dtype=bool)
    state = [{} for _ in range(model.depth)]
    stats: dict = {} if record is None else {"record": record}
    guidance = check_guidance(guidance)
    for it, t in enumerate(ts):
        stats["it"] = it
        if hook is not None:
            hook(-1, "iteration", np.array([it, t]))
        xb, yb = guided_batch(x, y, guidance)
        e = guided(model.eps(xb, np.full(len(yb), t), yb, ex, state, bool(dense_sched[it]),
                             stats, mask_rng, hook), n, guidance)
        a_t = ab[t]
        a_prev = ab[ts[it + 1]] if it + 1 < steps else 1.0
        x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * e
    per_layer = {}
    for key in ("ffn_sparsity", "ep_sparsity"):
        vals = stats.get(key, [])
        per_layer[key] = [float(np.mean([v for (i, v) in vals if i == layer]))
                          if any(i == layer for i, _ in vals) else 0.0
                          for layer in range(model.depth)]
    mean = {k: float(np.mean([v for _, v in stats[k]])) if stats.get(k) else 0.0
            for k in ("ffn_sparsity", "ep_sparsity")}
    mass = stats.get("ep_kept_mass")
    return SampleResult(x, y, mean["ffn_sparsity"], mean["ep_sparsity"], per_layer,
                        float(np.mean([v for _, v in mass])) if mass else None)

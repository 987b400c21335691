"""Trace export of the digits DiT (``exion trace``): per block and DDIM iteration, the INT12
operands, weights and masks that EXION's hardware sees, in a documented .npz layout.

The sampler runs with EXION's switches (INT12 is required: a trace holds integers). A
subclass of :class:`~exion.workloads.dit.DiT` records the values *as the sampler computes
them* (the FFN-Reuse masks come from the sampler's own state, not recomputed), so the
trace is the run, bit for bit. Eager prediction's outputs are recorded by calling
:func:`~exion.workloads.dit.batched_predict` on the same operands the sampler uses (it is
deterministic, so the result is the sampler's).

Layout (all keys; ``b`` = block, ``t`` = iteration index 0..S-1; B samples of T tokens;
``M = B * T`` rows, sample-major: rows ``s*T .. s*T+T-1`` are sample s):

=================================  =========  ================  ===========================
key                                 dtype      shape             meaning
=================================  =========  ================  ===========================
``meta``                            str (0-d)  ()                JSON: run settings, schedule
``blk{b}/fc1_w``                    int16      (d, 4d)           W1, INT12
``blk{b}/fc1_w_scale``              float64    ()                W1 scale
``blk{b}/fc2_w``                    int16      (4d, d)           W2, INT12
``blk{b}/fc2_w_scale``              float64    ()
``blk{b}/ep_wq``, ``ep_wk``         int16      (heads, d, dh)    per-head Wq / Wk, INT12
``blk{b}/ep_wq_scale``, ``_wk_``    float64    (heads,)
``blk{b}/it{t}/fc1_x``              int16      (M, d)            FC1 input X, INT12
``blk{b}/it{t}/fc1_x_scale``        float64    (B,)              per-sample X scale
``blk{b}/it{t}/fc1_bias``           int64      (B, 4d)           b1 at accumulator scale
``blk{b}/it{t}/h``                  int16      (M, 4d)           H seen by FC2 (INT12)
``blk{b}/it{t}/h_scale``            float64    (B,)              H scale (fixed per window)
``blk{b}/it{t}/fc1_mask``           bool       (M, 4d)           sparse its: recompute mask
``blk{b}/it{t}/fc1_prev``           int64      (M, 4d)           sparse its: X_d W1 (OMEM)
``blk{b}/it{t}/h_prev``             int16      (M, 4d)           sparse its: H_d (reused)
``blk{b}/it{t}/fc2_in``             int16      (M, 4d)           sparse its: H' - H_d
``blk{b}/it{t}/fc2_prev``           int64      (M, d)            sparse its: H_d W2
``blk{b}/it{t}/ep_x``               int16      (M, d)            EP input (modulated LN)
``blk{b}/it{t}/ep_x_scale``         float64    (B,)
``blk{b}/it{t}/ep_mask``            bool       (B, heads, T, T)  score mask (1 = keep)
``blk{b}/it{t}/ep_dominant``        bool       (B, heads, T)     dominant query rows
``blk{b}/it{t}/ep_skip_q|k|v``      bool       (B, heads, T)     Q / K / V rows skipped
``blk{b}/it{t}/ep_shift_q|k``       int16      (B, heads)        stage-1 shifts used
=================================  =========  ================  ===========================

FFN-Reuse keys exist only with FFN-Reuse on (``fc1_mask`` .. ``fc2_prev`` only in sparse
iterations), ``ep_*`` only with eager prediction on. ``--extract`` (:func:`extract`) cuts
one sample (rows of ``(M, .)`` arrays, first axis of ``(B, ...)`` arrays) and one head.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from exion.errors import ExionError
from exion.golden.ffn_reuse import schedule

from .dit import DiT, Exion, _imatmul, _q, _scales, batched_predict, ddim_timesteps, sample

__all__ = ["SCHEMA", "AXES", "collect", "save", "load", "extract", "key"]

SCHEMA = "exion-trace-1"

#: Axis kind of every key suffix: ``rows`` (M = B*T sample-major rows), ``sample`` (first
#: axis B), ``sample head`` (B, heads, ...), ``head`` (heads, ...), ``-`` (no sample axis).
AXES = {
    "fc1_w": "-", "fc1_w_scale": "-", "fc2_w": "-", "fc2_w_scale": "-",
    "ep_wq": "head", "ep_wk": "head", "ep_wq_scale": "head", "ep_wk_scale": "head",
    "fc1_x": "rows", "fc1_x_scale": "sample", "fc1_bias": "sample", "h": "rows",
    "h_scale": "sample", "fc1_mask": "rows", "fc1_prev": "rows", "h_prev": "rows",
    "fc2_in": "rows", "fc2_prev": "rows", "ep_x": "rows", "ep_x_scale": "sample",
    "ep_mask": "sample head", "ep_dominant": "sample head", "ep_skip_q": "sample head",
    "ep_skip_k": "sample head", "ep_skip_v": "sample head", "ep_shift_q": "sample head",
    "ep_shift_k": "sample head",
}


def key(block: int, it: int | None, name: str) -> str:
    """``blk{block}/it{it}/{name}`` (``it=None``: the per-block ``blk{block}/{name}``)."""
    return f"blk{block}/{name}" if it is None else f"blk{block}/it{it}/{name}"


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1])


class _Tracer(DiT):
    """The sampler's DiT, recording operands and masks into ``self.rec``."""

    def __init__(self, model: DiT, iterations, ffn: bool = True, light: bool = False):
        self.__dict__.update(model.__dict__)
        self.rec: dict[str, np.ndarray] = {}
        self.it = -1
        self.iterations = iterations
        self.ffn = ffn
        self.light = light
        self.dense_acc: dict[int, np.ndarray] = {}

    def _want(self) -> bool:
        return self.iterations is None or self.it in self.iterations

    def hook(self, i, name, arr):
        if name == "iteration":
            self.it = int(arr[0])

    def _attention(self, h, i, ex, stats):
        if ex.ep and self._want():
            cfg = self.cfg
            sx = _scales(h, cfg, (1, 2))
            xq = _q(h, sx, cfg)
            B, T, _ = h.shape
            hs = self.heads
            mask = np.zeros((B, hs, T, T), bool)
            dom = np.zeros((B, hs, T), bool)
            shq = np.zeros((B, hs), np.int16)
            shk = np.zeros((B, hs), np.int16)
            for hd in range(hs):
                wq, _ = self._wq[(i, f"ep_q{hd}")]
                wk, _ = self._wq[(i, f"ep_k{hd}")]
                if ex.q_th is not None:
                    raise ExionError("exion trace: q_th (dominant rule) is not traced yet; "
                                     "use q_th = None")
                m, d_, sq, sk, _ = batched_predict(cfg, xq, wq, wk, ex.k, None,
                                                   ex.polarity, ex.lod_terms)
                mask[:, hd], dom[:, hd], shq[:, hd], shk[:, hd] = m, d_, sq, sk
            # golden.predict: q_needed = ~dominant (top1 polarity), key_needed = selected
            # by some query (V row), k_needed = selected by some query whose Q is needed.
            q_needed = ~dom if ex.polarity == "top1" else np.ones_like(dom)
            key_needed = mask.any(axis=2)
            k_needed = (mask & q_needed[..., None]).any(axis=2)
            r = self.rec
            r[key(i, self.it, "ep_mask")] = mask
            r[key(i, self.it, "ep_dominant")] = dom
            r[key(i, self.it, "ep_skip_q")] = ~q_needed
            r[key(i, self.it, "ep_skip_k")] = ~k_needed
            r[key(i, self.it, "ep_skip_v")] = ~key_needed
            if not self.light:
                r[key(i, self.it, "ep_x")] = _rows(xq).astype(np.int16)
                r[key(i, self.it, "ep_x_scale")] = sx[:, 0, 0].astype(np.float64)
                r[key(i, self.it, "ep_shift_q")] = shq
                r[key(i, self.it, "ep_shift_k")] = shk
        return super()._attention(h, i, ex, stats)

    def _ffn(self, h, i, ex, st, dense, stats, rng):
        cfg = self.cfg
        want = self._want() and self.ffn
        qw1, sw1 = self._wq[(i, "fc1")]
        if want and not self.light or (ex.ffn_reuse and dense):
            sx = _scales(h, cfg, (1, 2))
            xq = _q(h, sx, cfg)
            acc = _imatmul(xq, qw1)
        y = super()._ffn(h, i, ex, st, dense, stats, rng)
        if ex.ffn_reuse and dense:
            self.dense_acc[i] = acc
        if not want:
            return y
        r = self.rec
        t = self.it
        sparse = ex.ffn_reuse and not dense
        if sparse:
            r[key(i, t, "fc1_mask")] = _rows(st["mask"]).copy()
        if self.light:
            return y
        b1 = self.w[f"blocks.{i}.fc1.b"]
        r[key(i, t, "fc1_x")] = _rows(xq).astype(np.int16)
        r[key(i, t, "fc1_x_scale")] = sx[:, 0, 0].astype(np.float64)
        r[key(i, t, "fc1_bias")] = np.rint(b1[None, :] / (sx[:, 0, :] * sw1)).astype(np.int64)
        H = st["H_last"]
        r[key(i, t, "h")] = _rows(H).astype(np.int16)
        r[key(i, t, "h_scale")] = np.asarray(st["s_h"], np.float64).copy()
        if sparse:
            qw2, _ = self._wq[(i, "fc2")]
            hd = st["H_d"]
            r[key(i, t, "fc1_prev")] = _rows(self.dense_acc[i]).copy()
            r[key(i, t, "h_prev")] = _rows(hd).astype(np.int16)
            r[key(i, t, "fc2_in")] = _rows(H - hd).astype(np.int16)
            r[key(i, t, "fc2_prev")] = _rows(_imatmul(hd, qw2))
        return y


def _weights(model: DiT, ex: Exion) -> dict[str, np.ndarray]:
    out = {}
    for i in range(model.depth):
        for n in ("fc1", "fc2"):
            q, s = model._wq[(i, n)]
            out[key(i, None, f"{n}_w")] = q.astype(np.int16)
            out[key(i, None, f"{n}_w_scale")] = np.float64(s)
        if ex.ep:
            for nm in ("q", "k"):
                qs = [model._wq[(i, f"ep_{nm}{h}")] for h in range(model.heads)]
                out[key(i, None, f"ep_w{nm}")] = np.stack([q for q, _ in qs]).astype(np.int16)
                out[key(i, None, f"ep_w{nm}_scale")] = np.array([s for _, s in qs], np.float64)
    return out


def collect(model: DiT, *, steps: int = 100, samples: int = 1, seed: int = 0,
            ex: Exion | None = None, iterations=None, ffn: bool = True,
            light: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    """Sample ``samples`` images with ``ex`` (default: FFN-Reuse N = 2, s = 0.8, EP k = 0.5,
    INT12) and return ``(arrays, meta)`` in the layout of the module docstring.

    ``iterations``: iteration indices to record (default all; the run is always complete);
    ``ffn=False`` skips the FFN keys; ``light``: only the masks (``fc1_mask``, ``ep_mask``,
    ``ep_dominant``, ``ep_skip_*``), for statistics over long runs.
    """
    ex = Exion(ffn_reuse=True, n=2, s=0.8, ep=True, k=0.5, quant=True) if ex is None else ex
    if not ex.quant:
        raise ExionError("exion trace needs the INT12 path (Exion.quant = True)")
    if ex.control is not None:
        raise ExionError("exion trace records the real rule, not a control (control = None)")
    if samples < 1:
        raise ExionError(f"samples must be >= 1, got {samples}")
    its = None if iterations is None else {int(v) for v in iterations}
    tr = _Tracer(model, its, ffn=ffn, light=light)
    res = sample(tr, samples, steps, ex, seed=seed, hook=tr.hook)
    dense = schedule(steps, ex.n, ex.dense_tail) if ex.ffn_reuse else np.ones(steps, bool)
    meta = {
        "schema": SCHEMA, "config": model.cfg.name, "width": model.cfg.width,
        "steps": steps, "samples": samples, "seed": seed, "tokens": model.tokens,
        "model": model.name,
        "d": model.d, "heads": model.heads, "d_head": model.dh, "ffn": 4 * model.d,
        "depth": model.depth, "exion": {k: getattr(ex, k) for k in ex.__dataclass_fields__},
        "timesteps": [int(v) for v in ddim_timesteps(steps)],
        "dense": [bool(v) for v in dense],
        "iterations": sorted(its) if its is not None else list(range(steps)),
        "labels": [int(v) for v in res.labels],
        "ffn_sparsity": res.ffn_sparsity, "ep_sparsity": res.ep_sparsity,
        "per_layer": res.per_layer, "light": light,
        "rows": "M = samples * tokens, sample-major",
    }
    arrays = {} if light else _weights(model, ex)
    arrays.update(tr.rec)
    return arrays, meta


def save(path: str | Path, arrays: dict, meta: dict) -> Path:
    """Write a trace as a compressed .npz (no pickles: ``meta`` is a JSON string)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load(path: str | Path) -> tuple[np.lib.npyio.NpzFile, dict]:
    """Open a trace: ``(npz, meta)``; arrays load lazily by key."""
    path = Path(path)
    if not path.is_file():
        raise ExionError(f"trace {str(path)!r} does not exist")
    z = np.load(path, allow_pickle=False)
    if "meta" not in z.files:
        raise ExionError(f"{str(path)!r} is not an exion trace (no 'meta' key)")
    meta = json.loads(str(z["meta"]))
    if meta.get("schema") != SCHEMA:
        raise ExionError(f"{str(path)!r}: schema {meta.get('schema')!r}, expected {SCHEMA!r}")
    return z, meta


def extract(z, meta: dict, name: str, sample_idx: int | None = None,
            head: int | None = None) -> np.ndarray:
    """One array of a trace, optionally cut to one sample and/or one head (2-D results are
    what ``exion golden conmerge --mask``, ``exion sim gemm`` and ``exion sim predict``
    take)."""
    if name not in z.files:
        near = [f for f in z.files if f.split("/")[-1] == name.split("/")[-1]][:3]
        raise ExionError(f"key {name!r} is not in the trace"
                         + (f" (e.g. {', '.join(near)})" if near else ""))
    a = z[name]
    axes = AXES.get(name.split("/")[-1], "-")
    if sample_idx is not None:
        B = meta["samples"]
        if not 0 <= sample_idx < B:
            raise ExionError(f"--sample {sample_idx} is out of range 0..{B - 1}")
        if axes == "rows":
            T = meta["tokens"]
            a = a[sample_idx * T:(sample_idx + 1) * T]
        elif axes.startswith("sample"):
            a = a[sample_idx]
        else:
            raise ExionError(f"{name!r} has no sample axis (axes: {axes})")
    if head is not None:
        if "head" not in axes:
            raise ExionError(f"{name!r} has no head axis (axes: {axes})")
        if not 0 <= head < meta["heads"]:
            raise ExionError(f"--head {head} is out of range 0..{meta['heads'] - 1}")
        if axes == "head":
            a = a[head]
        elif sample_idx is not None:
            a = a[head]
        else:
            a = a[:, head]
    return np.ascontiguousarray(a)

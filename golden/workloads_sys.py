"""The seven workloads of the seed's evaluation, as transformer-block lists (docs/evaluate.md).

Each model is a :class:`Model`: its transformer blocks (:class:`Block`: tokens T, width d,
heads, FFN hidden F, GEGLU or not, how many identical sequences ``batch`` one block
instance runs (frames of a video, positions of a temporal block), an optional
cross-attention context ``(Tc, dc)``), how many of each per iteration, the layers outside
transformer blocks as dense MACs and weights (ResBlocks, convolutions, embeddings:
``other_macs`` / ``other_params``, charged as dense GEMMs), the *step-conditioning* layers
apart from them (``cond_macs`` / ``cond_params`` / ``cond_outputs``: layers whose input is
only the step's timestep and the condition, DiT's adaLN modulation and embedders; the system
runs them for every step at once, ``System.cond_layers``), the sampler's iteration count and
the seed's FFN-Reuse / eager-prediction settings (sparsity ``s``, ``N``, ``k``, ``q_th``).

Shapes come from the models' papers and released configurations (sources in
docs/evaluate.md); figures not stated there are marked ``[choice]`` in that file. The
seed's table (iterations, s, N, EP sparsity, q_th, k) is copied as given.

:func:`guided` gives a model sampled with classifier-free guidance (two predictions per
step, batched; ``exion evaluate --guidance``) [choice: batched, weights fetched once].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from exion.errors import ExionError

__all__ = ["Block", "Model", "MODELS", "get_model", "unet_blocks", "guided",
           "GUIDANCE_EVALS"]

#: Network evaluations per sampling step under classifier-free guidance: the conditional and
#: the unconditional prediction. The seven models' released samplers all guide by default
#: (docs/evaluate.md, "Classifier-free guidance").
GUIDANCE_EVALS = 2


@dataclass(frozen=True)
class Block:
    name: str
    T: int                 # tokens of one sequence (self-attention length)
    d: int                 # model width
    heads: int
    ffn: int               # FFN hidden width F (GEGLU: the value half)
    count: int = 1         # identical block instances per iteration
    batch: int = 1         # sequences one instance runs (frames / positions)
    context: tuple | None = None   # cross-attention (Tc, dc), dense in every mode [choice]
    geglu: bool = False    # FC1 is d -> 2F (value and gate), as SD's GEGLU
    self_attn2: bool = False  # a second self-attention (VideoCrafter temporal) [choice]
    contexts: int = 1      # distinct cross-attention contexts per instance (2 when guided)

    @property
    def d_head(self) -> int:
        return self.d // self.heads

    @property
    def shape(self) -> dict:
        """The per-core model's shape dict (golden/block.py)."""
        return {"name": self.name, "T": self.T, "d": self.d, "heads": self.heads,
                "ffn": self.ffn, "d_head": self.d_head}

    @property
    def context_kv(self) -> dict:
        """The cross-attention contexts' K / V projections of one instance (every distinct
        context): ``macs``, ``params`` (their weights) and ``outputs`` (K and V values);
        zeros without a context."""
        if self.context is None:
            return {"macs": 0, "params": 0, "outputs": 0}
        Tc, dc = self.context
        return {"macs": self.contexts * 2 * Tc * dc * self.d, "params": 2 * dc * self.d,
                "outputs": self.contexts * Tc * 2 * self.d}

    @property
    def weight_params(self) -> int:
        """Weights of one instance: Q, K, V, O (+ cross Q, K, V, O) + FFN."""
        w = 4 * self.d * self.d * (2 if self.self_attn2 else 1)
        if self.context is not None:
            w += 2 * self.d * self.d + self.context_kv["params"]
        w += self.d * self.ffn * (2 if self.geglu else 1) + self.ffn * self.d
        return w

    @property
    def dense_macs(self) -> int:
        """MACs of one instance (every sequence of the batch), dense."""
        T, d, F, b = self.T, self.d, self.ffn, self.batch
        att = 4 * T * d * d + 2 * T * T * d
        macs = b * att * (2 if self.self_attn2 else 1)
        if self.context is not None:
            Tc = self.context[0]
            macs += b * (2 * T * d * d + 2 * T * Tc * d) + self.context_kv["macs"]
        macs += b * T * F * d * (3 if self.geglu else 2)
        return macs


@dataclass(frozen=True)
class Model:
    name: str
    task: str
    blocks: tuple
    iterations: int
    s: float              # FFN-Reuse inter-iteration sparsity (seed)
    n_reuse: int          # N: sparse iterations between two dense ones (seed)
    ep_sparsity: float    # the seed's achieved intra-iteration sparsity (reported)
    q_th: float
    k: float
    other_macs: int = 0   # per iteration, outside transformer blocks (dense)
    other_params: int = 0
    # step-conditioning layers (their input is only the timestep and the condition, so all
    # steps' outputs are known before the first step): MACs and output values per step
    # (per network evaluation), and their weights
    cond_macs: int = 0
    cond_params: int = 0
    cond_outputs: int = 0
    # the step conditioning is the same for every evaluation of a guided step (its input is
    # only the timestep, or the timestep and a condition both evaluations share: the UNets'
    # time embedding); false when the condition enters it (DiT's class, EDGE's music)
    cond_shared: bool = False
    # the condition encoder: layers inside the denoiser whose input is only the condition
    # (EDGE's music projection and encoder, MDM's / MLD's text projection, VideoCrafter2's
    # fps embedding), the same in every step; MACs of one evaluation and their weights. Under
    # guidance the unconditional evaluation's condition is a constant of the model [choice]
    enc_macs: int = 0
    enc_params: int = 0
    unit: str = "image"
    notes: tuple = field(default_factory=tuple)

    @property
    def block_macs(self) -> int:
        return sum(b.count * b.dense_macs for b in self.blocks)

    @property
    def params(self) -> int:
        return sum(b.count * b.weight_params for b in self.blocks) + self.other_params \
            + self.cond_layers["params"]

    @property
    def cond_layers(self) -> dict:
        """The layers ``System.cond_layers`` schedules, as one step of a sampler runs them:
        the step conditioning and the condition encoder, ``macs`` and ``params``."""
        return {"macs": self.cond_macs + self.enc_macs,
                "params": self.cond_params + self.enc_params}

    @property
    def once_macs(self) -> int:
        """MACs of the same layers run before the first step: every step's conditioning
        and the condition encoder once."""
        return self.iterations * self.cond_macs + self.enc_macs

    @property
    def step_macs(self) -> int:
        """Dense MACs of one step as the samplers run it: the blocks, the layers outside them,
        the step conditioning and the condition encoder."""
        return self.block_macs + self.other_macs + self.cond_layers["macs"]


def _conv(h, w, cin, cout, k=3):
    return h * w * cin * cout * k * k, cin * cout * k * k


def unet_blocks(prefix, hw, chans, att_levels, ctx, heads=8, d_head=None, batch=1,
                frames_temporal=0, init_temporal=0):
    """Transformer blocks and ResBlock/conv MACs of an SD-v1-style UNet (``openaimodel.py``
    of the LDM code: 2 ResBlocks per down level, 3 per up level, one mid ResBlock pair; a
    transformer after each ResBlock of the levels in ``att_levels`` and one in the middle).

    ``hw`` = (h, w) of the latent; ``chans`` = channels per level. ``batch`` frames share
    the spatial blocks; with ``frames_temporal`` > 0 each spatial transformer is followed by
    a temporal one (T = frames, batch = h * w positions, VideoCrafter; its proj_in / proj_out
    C x C), each ResBlock has a temporal conv block (four 3 x 1 x 1 convolutions over the
    frames, C -> C), and ``init_temporal`` > 0 puts a temporal transformer of that width
    on the input convolution's output (VideoCrafter's ``init_attn``). Up-level
    ResBlock inputs are the concatenated skip (cin = c + skip channels), approximated as 2c
    [choice]. Returns (blocks, other MACs, other params, step conditioning) for ``batch``
    frames; the step conditioning is the time embedding (c0 -> 4 c0 -> 4 c0, c0 =
    ``chans[0]``) and each ResBlock's projection of it (4 c0 -> C, ``emb_layers``; no
    scale-shift norm in SD, Make-an-Audio or VideoCrafter2's configs): ``{"params",
    "outputs", "embed"}`` (MACs = params: one token a step; outputs: the ResBlocks' C
    values; embed: the time embedding MLP's weights).
    """
    h, w = hw
    blocks, macs, params = [], 0, 0
    levels = len(chans)
    emb = 4 * chans[0]
    proj = 2 if frames_temporal else 1   # a level's transformers (spatial, temporal)
    res_out = []                # output channels of every ResBlock (its emb_layers' width)

    def res_temporal(hh, ww, c):
        """The temporal conv block of one ResBlock: 4 convs of kernel 3 over the frames."""
        if not frames_temporal:
            return 0, 0
        return batch * hh * ww * 4 * 3 * c * c, 4 * 3 * c * c

    for i, c in enumerate(chans):
        hh, ww = h >> i, w >> i
        cin = chans[max(0, i - 1)]
        for j in range(2):      # down ResBlocks: two 3x3 convs each
            m1, p1 = _conv(hh, ww, cin if j == 0 else c, c)
            m2, p2 = _conv(hh, ww, c, c)
            m3, p3 = res_temporal(hh, ww, c)
            macs += batch * (m1 + m2) + m3
            params += p1 + p2 + p3
            res_out.append(c)
        for j in range(3):      # up ResBlocks: input = concatenated skip (2c) [choice]
            m1, p1 = _conv(hh, ww, 2 * c, c)
            m2, p2 = _conv(hh, ww, c, c)
            m3, p3 = _conv(hh, ww, 2 * c, c, 1)   # 1x1 skip projection
            m4, p4 = res_temporal(hh, ww, c)
            macs += batch * (m1 + m2 + m3) + m4
            params += p1 + p2 + p3 + p4
            res_out.append(c)
        if i < levels - 1:      # downsample + upsample convs
            m1, p1 = _conv(hh >> 1, ww >> 1, c, c)
            m2, p2 = _conv(hh, ww, chans[i + 1], chans[i + 1])
            macs += batch * (m1 + m2)
            params += p1 + p2
        if i in att_levels:
            dh = c // heads if d_head is None else d_head
            nh = c // dh
            blocks.append(Block(f"{prefix}{hh}x{ww}", hh * ww, c, nh, 4 * c, count=5,
                                batch=batch, context=ctx, geglu=True))
            if frames_temporal:
                blocks.append(Block(f"{prefix}t{hh}x{ww}", frames_temporal, c, nh, 4 * c,
                                    count=5, batch=hh * ww, geglu=True, self_attn2=True))
            # proj_in / proj_out (1x1) of the 5 transformers of this level (and of their
            # temporal ones)
            macs += proj * 5 * batch * 2 * hh * ww * c * c
            params += proj * 5 * 2 * c * c
    c = chans[-1]
    hh, ww = h >> (levels - 1), w >> (levels - 1)
    for _ in range(2):          # mid ResBlocks
        m1, p1 = _conv(hh, ww, c, c)
        m3, p3 = res_temporal(hh, ww, c)
        macs += batch * 2 * m1 + m3
        params += 2 * p1 + p3
        res_out.append(c)
    dh = c // heads if d_head is None else d_head
    blocks.append(Block(f"{prefix}mid{hh}x{ww}", hh * ww, c, c // dh, 4 * c, count=1,
                        batch=batch, context=ctx, geglu=True))
    if frames_temporal:
        blocks.append(Block(f"{prefix}tmid{hh}x{ww}", frames_temporal, c, c // dh, 4 * c,
                            count=1, batch=hh * ww, geglu=True, self_attn2=True))
    # proj_in / proj_out of the mid transformers
    macs += proj * batch * 2 * hh * ww * c * c
    params += proj * 2 * c * c
    if frames_temporal and init_temporal:
        ci, c0 = init_temporal, chans[0]
        dh = ci // heads if d_head is None else d_head
        blocks.append(Block(f"{prefix}tinit{h}x{w}", frames_temporal, ci, ci // dh, 4 * ci,
                            count=1, batch=h * w, geglu=True, self_attn2=True))
        macs += batch * 2 * h * w * c0 * ci
        params += 2 * c0 * ci
    m_in, p_in = _conv(h, w, 4, chans[0])
    embed = chans[0] * emb + emb * emb        # the time embedding MLP
    cond = {"params": embed + emb * sum(res_out), "outputs": sum(res_out), "embed": embed}
    return blocks, macs + 2 * batch * m_in, params + 2 * p_in, cond


def _unet_model(name, task, unet, *seed_row, unit="image", fps_embedding=False):
    """A UNet model of :func:`unet_blocks`' output; its step conditioning is the time
    embedding and the ResBlocks' projections of it, shared by a guided step's evaluations;
    ``fps_embedding``: a condition encoder of the time embedding's shape (VideoCrafter2's
    fps embedding, constant over the steps)."""
    bl, m, p, cond = unet
    enc = cond["embed"] if fps_embedding else 0
    return Model(name, task, tuple(bl), *seed_row, other_macs=m, other_params=p,
                 cond_macs=cond["params"], cond_params=cond["params"],
                 cond_outputs=cond["outputs"], cond_shared=True, enc_macs=enc,
                 enc_params=enc, unit=unit)


def _sd():
    # CompVis/stable-diffusion v1-inference.yaml: model_channels 320, channel_mult 1,2,4,4,
    # attention at ds 4,2,1, 8 heads, context 77 x 768 (CLIP ViT-L/14, outside the UNet)
    return _unet_model("sd", "text-to-image (Stable Diffusion v1.x, 512x512)",
                       unet_blocks("sd", (64, 64), (320, 640, 1280, 1280), (0, 1, 2),
                                   (77, 768)), 50, 0.97, 4, 0.20, 0.8, 0.8)


def _maa():
    # Make-An-Audio (Text-to-Audio/Make-An-Audio, configs/text_to_audio/txt2audio_args.yaml):
    # the LDM UNet with model_channels 320, channel_mult 1,2, attention at ds 1,2 (both
    # levels and the middle), 8 heads, CLAP context 77 x 1024, on the mel VAE latent of
    # mel_dim 10 x mel_length 78 (624 frames / 8)
    return _unet_model("make-an-audio", "text-to-audio (Make-an-Audio)",
                       unet_blocks("maa", (10, 78), (320, 640), (0, 1), (77, 1024)),
                       50, 0.97, 5, 0.80, 0.7, 0.2, unit="clip")


def _vc2():
    # VideoCrafter2 (AILab-CVC/VideoCrafter, inference_t2v_512_v2.0.yaml): 16 frames at
    # 320 x 512 (latent 40 x 64), the SD layout with num_head_channels 64, OpenCLIP-H context
    # (77 x 1024), a temporal transformer after each spatial one, a temporal conv block in
    # each ResBlock; the fps embedding (fps_cond, 320 -> 1280 -> 1280) is a condition encoder
    # (the fps is fixed for the clip); its sum with the time embedding feeds the ResBlocks
    return _unet_model("videocrafter2", "text-to-video (VideoCrafter2, 16 x 320x512)",
                       unet_blocks("vc", (40, 64), (320, 640, 1280, 1280), (0, 1, 2),
                                   (77, 1024), d_head=64, batch=16, frames_temporal=16,
                                   init_temporal=512),
                       50, 0.70, 3, 0.50, 2.0, 0.5, unit="clip", fps_embedding=True)


#: EDGE's step conditioning (Stanford-TML/EDGE model/model.py): the time MLP (512 -> 2048),
#: ``to_time_cond`` (2048 -> 512) and ``to_time_tokens`` (2048 -> 2 x 512), and the 24
#: FiLM projections (3 a decoder layer, 512 -> 1024) of time + pooled music; weights, and
#: MACs (one token each, plus the cross-attention K / V of the 2 time tokens, 8 layers)
_EDGE_COND_W = 512 * 2048 + 2048 * 512 + 2048 * 1024 + 24 * 512 * 1024
_EDGE_COND_MACS = _EDGE_COND_W + 8 * 2 * 2 * 512 * 512
#: EDGE's condition encoder on the 150 Jukebox frames: ``cond_projection`` (4800 -> 512),
#: ``cond_encoder`` (2 transformer layers: d 512, 8 heads, FF 1024) and the pooled
#: ``non_attn_cond_projection`` (2 x 512 x 512): MACs (attention matmuls included), weights
_EDGE_ENC = (150 * 4800 * 512 + 2 * (150 * (4 * 512 * 512 + 2 * 512 * 1024)
                                     + 2 * 150 * 150 * 512) + 2 * 512 * 512,
             4800 * 512 + 2 * (4 * 512 * 512 + 2 * 512 * 1024) + 2 * 512 * 512)

#: DiT-XL/2's step-conditioning weights (= MACs: one token per step and evaluation).
_DIT_COND = 28 * 1152 * 6 * 1152 + 1152 * 2 * 1152 + 256 * 1152 + 1152 * 1152

MODELS = {
    # MLD (ChenFengYe/motion-latent-diffusion mld_denoiser.py): 3 tokens (the 1 x 256
    # latent, the time and the text embedding), 9 layers with 4 skip projections 512 -> 256;
    # step conditioning the time embedding (768 -> 256 -> 256), condition encoder the text
    # projection (768 -> 256)
    "mld": Model("mld", "text-to-motion (MLD)",
                 (Block("mld", 3, 256, 4, 1024, count=9),), 50, 0.95, 9, 0.30, 0.3, 0.7,
                 other_macs=4 * 3 * 512 * 256, other_params=4 * 512 * 256,
                 cond_macs=768 * 256 + 256 * 256, cond_params=768 * 256 + 256 * 256,
                 cond_outputs=256, cond_shared=True, enc_macs=768 * 256,
                 enc_params=768 * 256, unit="motion"),
    # MDM (GuyTevet/motion-diffusion-model mdm.py): 196 frames + 1 condition token; the
    # pose embedding and output (263 <-> 512); the time embedder (512 -> 512 -> 512), the
    # text projection (CLIP 512 -> 512)
    "mdm": Model("mdm", "text-to-motion (MDM)",
                 (Block("mdm", 197, 512, 4, 1024, count=8),), 50, 0.95, 5, 0.95, 0.3, 0.05,
                 other_macs=197 * 263 * 512 * 2, other_params=263 * 512 * 2,
                 cond_macs=2 * 512 * 512, cond_params=2 * 512 * 512, cond_outputs=512,
                 cond_shared=True, enc_macs=512 * 512, enc_params=512 * 512, unit="motion"),
    # EDGE: the pose input and final projections (151 <-> 512) per step; the music encoder
    # once (_EDGE_ENC); the FiLM and time layers as the step conditioning (_EDGE_COND_*)
    "edge": Model("edge", "music-to-motion (EDGE)",
                  (Block("edge", 150, 512, 8, 1024, count=8, context=(150, 512)),), 50,
                  0.95, 5, 0.50, 0.9, 0.5,
                  other_macs=150 * 151 * 512 * 2, other_params=151 * 512 * 2,
                  cond_macs=_EDGE_COND_MACS, cond_params=_EDGE_COND_W,
                  cond_outputs=24 * 1024 + 8 * 2 * 2 * 512, enc_macs=_EDGE_ENC[0],
                  enc_params=_EDGE_ENC[1], unit="motion"),
    "make-an-audio": _maa(),
    "sd": _sd(),
    "dit-xl2": Model("dit-xl2", "class-to-image (DiT-XL/2, 256x256)",
                     (Block("dit-xl2", 256, 1152, 16, 4608, count=28),), 100, 0.80, 2, 0.95,
                     0.15, 0.05,
                     # patch embed (2x2x4 -> d per token), final linear (d -> 2x2x8)
                     other_macs=256 * 16 * 1152 + 256 * 1152 * 32,
                     other_params=16 * 1152 + 1152 * 32,
                     # step conditioning (DiT models.py): each block's adaLN modulation
                     # (d -> 6d), the final layer's (d -> 2d), the timestep MLP (256 -> d
                     # -> d); the class embedding is a table lookup
                     cond_macs=_DIT_COND, cond_params=_DIT_COND,
                     cond_outputs=28 * 6 * 1152 + 2 * 1152),
    "videocrafter2": _vc2(),
}


def guided(model: Model, evals: int = GUIDANCE_EVALS) -> Model:
    """``model`` sampled with classifier-free guidance (``exion evaluate --guidance``).

    The ``evals`` predictions of a step (conditional, unconditional) run as one batch
    [choice]: every block instance runs ``evals`` times its sequences (``batch``), each with
    its own cross-attention context (``contexts``: the prompt's and the empty prompt's), and
    the layers outside the blocks ``evals`` times their MACs, and the step conditioning too
    unless the evaluations share it (``cond_shared``: a timestep embedding; DiT's empty
    class has its own modulation). The condition encoder runs once: the unconditional
    evaluation's condition is a constant of the model (EDGE's null embedding, MDM's zero
    text vector) [choice]. Weights are unchanged, so a step fetches them
    once for both predictions. FFN-Reuse and EP work per sequence, as for any batch (the
    unconditional sequence has its own masks)."""
    if not isinstance(evals, int) or isinstance(evals, bool) or evals < 1:
        raise ExionError(f"guidance evals = {evals!r} is invalid: must be an integer >= 1")
    blocks = tuple(replace(b, batch=evals * b.batch, contexts=evals * b.contexts)
                   for b in model.blocks)
    c = 1 if model.cond_shared else evals
    return replace(model, blocks=blocks, other_macs=evals * model.other_macs,
                   cond_macs=c * model.cond_macs, cond_outputs=c * model.cond_outputs)


def get_model(name: str) -> Model:
    if name not in MODELS:
        raise ExionError(f"model {name!r} is not one of {', '.join(MODELS)} (or 'all')")
    return MODELS[name]

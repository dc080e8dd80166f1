"""Speculative Jacobi decoding for raster models: several tokens per forward pass, same distribution.

SJD (Teng et al., ICLR 2025) keeps a window of W draft tokens after the accepted prefix, each with
the distribution q it was drawn from. One KV-cached pass feeds the last accepted token and the
first W - 1 drafts (a causal mask inside the window) and returns p, the model's distribution
(after guidance, temperature, top-k and top-p, exactly as in plain sampling) at all W positions::

    pass input:  x[n-1]  d[n]  ...  d[n+W-2]         at positions n-1 .. n+W-2
    p:           p[n]    p[n+1] ... p[n+W-1]         p[n] is exact; p[n+k] assumes d[n..n+k-1]

Left to right, d[i] is accepted with probability min(1, p[i](d) / q[i](d)); at the first rejection
x[i] is drawn from norm(max(0, p[i] - q[i])) and the pass ends. As in speculative sampling, this
makes each accepted token an exact draw from p given the accepted prefix, whatever q was, as long
as d ~ q independently of the acceptance tests before it. The tail after the rejection is redrawn
from this pass's p (its new q), optionally coupled with the old draft (``coupled``: keep the old
token with probability min(1, q_new / q_old), else draw from norm(max(0, q_new - q_old)); the
maximal coupling keeps good drafts and stays exact), and positions new to the window start from
``init``: a uniform random token or a copy of the left neighbour, each with a one-hot q. A window
of 1 is plain decoding; with top-k 1 (greedy) the tokens equal greedy decoding exactly.

Rows of a batch accept different lengths: each row keeps its own position (the model takes a
position per row), and a row that finishes leaves the batch and its caches, so no row waits for
the slowest. Stale cache entries of rejected positions lie past the row's position: the mask hides
them until the next pass overwrites them.

The lossy variants relax the acceptance test (``sampling.acceptance``): LANTERN (``--sampler
lantern``) adds the mass of the draft's nearest codebook neighbours, GSD (``--sampler gsd``)
accepts a group of look-alike tokens at once. ZipAR is a decoding order, in ``sampling.zipar``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from argen.config import check
from argen.sampling.acceptance import Acceptance, Exact, Grouped, Relaxed
from argen.sampling.autoregressive import RasterSamplerConfig, check_known
from argen.sampling.base import check_inputs, knob, register_sampler
from argen.sampling.guidance import double, guide, with_null
from argen.sampling.processors import apply, exponential_noise

INITS = ("random", "repeat-left")


@dataclass(frozen=True)
class SJDSamplerConfig(RasterSamplerConfig):
    # Defaults: what measured fastest on a CPU (benchmarks/speculative.py); the SJD paper's own window is 16,
    # uncoupled. At GPT-B size a window of 8 costs 1.1x a one-token pass, 16 costs 1.6x (sjd_official.py).
    window: int = knob(8, "speculative: draft tokens verified per forward pass (1 = plain decoding)")
    init: str = knob("random", "speculative: how positions new to the window start, random or repeat-left")
    coupled: bool = knob(True, "speculative: redraft the tail by maximal coupling with the old draft (lossless, "
                               "accepts more); false = the SJD paper's redraw")

    def __post_init__(self):
        super().__post_init__()
        check(self.window >= 1, f"window must be >= 1, got {self.window}")
        check(self.init in INITS, f"init must be one of {', '.join(INITS)}, got {self.init!r}")
        check(not self.compile, "compile applies to the raster sampler only (speculative passes change shape "
                                "as rows finish)")

    def acceptance(self, model, tokenizer) -> Acceptance:
        return Exact()


@dataclass(frozen=True)
class LanternSamplerConfig(SJDSamplerConfig):
    """LOSSY: SJD whose test also counts the draft's nearest codebook neighbours (``Relaxed``)."""

    lantern_k: int = knob(1000, "lantern (lossy): nearest codebook neighbours a draft may borrow mass from")
    lantern_delta: float = knob(0.1, "lantern (lossy): most neighbour mass borrowed (its distortion bound); "
                                     "0 = SJD")

    def __post_init__(self):
        super().__post_init__()
        check(self.lantern_k >= 1, f"lantern_k must be >= 1, got {self.lantern_k}")
        check(0 <= self.lantern_delta <= 1, f"lantern_delta must be in [0, 1], got {self.lantern_delta}")

    @property
    def lossy(self) -> bool:
        return self.lantern_delta > 0

    def acceptance(self, model, tokenizer) -> Acceptance:
        return Relaxed.from_tokenizer(tokenizer, self.lantern_k, self.lantern_delta)


@dataclass(frozen=True)
class GSDSamplerConfig(SJDSamplerConfig):
    """LOSSY: SJD accepting a group of look-alike tokens at once (``Grouped``)."""

    group_ranks: int = knob(7, "gsd (lossy): group candidates within this many ranks of the draft; 0 = SJD")
    group_gap: float = knob(0.15, "gsd (lossy): largest probability gap to the draft inside a group")
    group_dist: float = knob(0.5, "gsd (lossy): largest squared distance of input embeddings inside a group")

    def __post_init__(self):
        super().__post_init__()
        check(self.group_ranks >= 0, f"group_ranks must be >= 0, got {self.group_ranks}")
        check(self.group_gap >= 0 and self.group_dist >= 0, "group_gap and group_dist must be >= 0")

    @property
    def lossy(self) -> bool:
        return self.group_ranks > 0

    def acceptance(self, model, tokenizer) -> Acceptance:
        return Grouped(model.tok_embeddings.weight.detach(), self.group_ranks, self.group_gap, self.group_dist)


def _uniform(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _one_hot(tokens: torch.Tensor, V: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(tokens, V).float()


def _speculative(model, tokenizer, labels_B: torch.Tensor, config: SJDSamplerConfig,
                 generator: torch.Generator | None, known) -> torch.Tensor:
    check_inputs(model, tokenizer, labels_B)
    known = check_known(model, labels_B, known)
    rule = config.acceptance(model, tokenizer)
    c = model.config
    B, N, V, W, cls = labels_B.shape[0], c.seq_len, c.vocab_size, config.window, c.cls_token_num
    dev = labels_B.device
    use_cfg = config.use_cfg
    procs = config.processors()
    ks = torch.arange(W, device=dev)

    # Tokens by position with W slack columns, so a window may run past the end: (B, N + W).
    out = torch.zeros(B, N + W, dtype=torch.long, device=dev)
    force = torch.zeros(B, N + W, dtype=torch.bool, device=dev)  # positions whose token is given
    if known is not None:
        out[:, :N] = torch.where(known[1], known[0], 0)
        force[:, :N] = known[1]
    # Guidance weight of each token position (past the end: unused).
    weights = torch.tensor([config.weight(i / N, ramp=i / N) for i in range(N)] + [0.0] * W, device=dev)

    n0 = int(force[:, :N].all(0).long().cumprod(0).sum()) if known is not None else 0  # known in every row
    if n0 == N:
        return out[:, :N].view(B, *c.grid)
    length = c.max_len + W  # the cache, with room for windows that run past the last position
    caches = model.new_caches(2 * B if use_cfg else B, length=length)
    labels = with_null(labels_B, c.num_classes, use_cfg)
    cache_pos = torch.arange(length, device=dev)

    # The active rows: their tokens (accepted, then the window's drafts), where tokens are given,
    # accepted counts, drafts and their q. A finished row leaves, its tokens go to ``out``.
    rows = torch.arange(B, device=dev)
    seq, given = out, (force if known is not None else None)
    n = torch.full((B,), n0, device=dev)
    draft, q = _init(B, W, V, config.init, generator, dev, left_B=seq[:, max(n0 - 1, 0)])
    draft, q = _force(draft, q, seq, given, n[:, None] + ks, V)
    first = True
    while len(rows):
        Ba = len(rows)
        at = n[:, None] + ks                                   # token position of each window slot (Ba, W)
        if first:  # the prefill verifies the first window too: condition, known prefix, d[n0 .. n0+W-2]
            x = torch.cat([seq[:, :n0], draft[:, : W - 1]], 1)[:, : N - 1]
            prefix = cache_pos[: cls + x.shape[1]]
            logits = model(double(x, use_cfg), labels, caches=caches,
                           mask=(cache_pos <= prefix[:, None]).view(1, 1, -1, length))[:, n0:n0 + W]
            logits = torch.nn.functional.pad(logits, (0, 0, 0, W - logits.shape[1]))  # slots past the end
            first = False
        else:  # one pass: x[n-1], d[n .. n+W-2] at positions n-1 .. n+W-2 -> p[n .. n+W-1]
            tokens_BW = torch.cat([seq.gather(1, (n - 1)[:, None]), draft[:, : W - 1]], 1)
            pos_BW = cls - 1 + at
            mask = (cache_pos <= pos_BW[..., None]).unsqueeze(1)   # (Ba, 1, W, length)
            # one row: positions shared by the batch (index_copy rather than a per-row scatter)
            pos = pos_BW[0] if Ba == 1 else double(pos_BW, use_cfg)
            logits = model.decode_step(double(tokens_BW, use_cfg), pos, caches, double(mask, use_cfg))
        if use_cfg:
            logits = guide(logits, weights[at][..., None])      # weight 0 leaves the cond half alone
        p = torch.softmax(apply(logits, procs).float(), -1)   # (Ba, W, V)
        if given is not None:
            p = torch.where(given.gather(1, at)[..., None], _one_hot(seq.gather(1, at), V), p)

        # ---- verify left to right; at the first rejection draw the replacement. One uniform and one
        # exponential race per slot serve both the test (slots up to the first rejection) and the
        # redraft (slots after it): no slot's randomness is used twice.
        u_BW = _uniform((Ba, W), generator, dev)
        race_BWV = exponential_noise((Ba, W, V), generator, dev)
        ok = (u_BW < rule.accept_prob(p, q, draft)) & (at < N)
        a = ok.long().cumprod(1).sum(1)                        # accepted drafts per row
        reject = (a < W) & (n + a < N)                         # slot a was rejected (not past the end)
        residual = (rule.residual(p, q, draft) / race_BWV).argmax(-1)  # each slot's replacement (Ba, W)
        fix = residual.gather(1, a.clamp(max=W - 1)[:, None])
        new = torch.where(ks < a[:, None], draft, seq.gather(1, at))
        new = torch.where((ks == a[:, None]) & reject[:, None], fix, new)
        seq = seq.scatter(1, at, new)
        shift = a + reject.long()                              # tokens gained by each row
        n = n + shift

        # ---- the next window: the tail redrawn from this pass's p (its new q), new slots from init
        old = (ks + shift[:, None]).clamp(max=W - 1)           # this pass's slot of each new slot
        from_pass = (ks + shift[:, None]) < W
        if config.coupled:  # maximal coupling: keep the old draft with prob min(1, p / q), else norm(max(0, p - q))
            p_d, q_d = p.gather(-1, draft[..., None])[..., 0], q.gather(-1, draft[..., None])[..., 0]
            other = residual if isinstance(rule, Exact) else (Exact().residual(p, q, draft) / race_BWV).argmax(-1)
            redrawn = torch.where(u_BW * q_d < p_d, draft, other).gather(1, old)
        else:
            redrawn = (p / race_BWV).argmax(-1).gather(1, old)
        left = None
        if config.init == "repeat-left":  # the left neighbour of the first new slot: the last redrawn
            left = torch.where(shift < W, redrawn.gather(1, (W - 1 - shift).clamp(min=0)[:, None])[:, 0],
                               seq.gather(1, (n - 1).clamp(max=N - 1)[:, None])[:, 0])  # ... or accepted token
        fresh, q_fresh = _init(Ba, W, V, config.init, generator, dev, left_B=left)
        draft = torch.where(from_pass, redrawn, fresh)
        q = torch.where(from_pass[..., None], p.gather(1, old[..., None].expand(-1, -1, V)), q_fresh)
        draft, q = _force(draft, q, seq, given, n[:, None] + ks, V)

        done = n >= N
        if bool(done.any()):  # finished rows leave the batch and its caches
            out[rows[done]] = seq[done]
            keep = (~done).nonzero()[:, 0]
            for cache in caches:
                cache.keep_rows(torch.cat([keep, keep + Ba]) if use_cfg else keep)
            rows, seq, n, draft, q = rows[keep], seq[keep], n[keep], draft[keep], q[keep]
            given = given[keep] if given is not None else None
    return out[:, :N].view(B, *c.grid)


def _init(B: int, W: int, V: int, init: str, generator, device,
          left_B: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Drafts for W slots of B rows with nothing to go on, with one-hot q: (B, W) tokens and (B, W, V).

    ``random``: a uniform token per slot; ``repeat-left``: each slot copies its left neighbour,
    so all repeat ``left_B``, the token before the first of them."""
    if init == "random":
        d = torch.randint(V, (B, W), generator=generator, device=device)
    else:
        d = left_B[:, None].expand(B, W)
    return d, _one_hot(d, V)


def _force(draft, q, seq_BN, given_BN, at_BW, V):
    """Known tokens (editing) are their own drafts, with q one-hot: always accepted."""
    if given_BN is None:
        return draft, q
    at_BW = at_BW.clamp(max=seq_BN.shape[1] - 1)
    f = given_BN.gather(1, at_BW)
    d = torch.where(f, seq_BN.gather(1, at_BW), draft)
    return d, torch.where(f[..., None], _one_hot(d, V), q)


def _register(name: str, config_class: type, doc: str):
    @register_sampler(name, family="raster", config=config_class, speculative=True)
    @torch.no_grad()
    def sample(model, tokenizer, labels_B: torch.Tensor, config=None,
               generator: torch.Generator | None = None, known=None) -> torch.Tensor:
        return _speculative(model, tokenizer, labels_B, config or config_class(), generator, known)

    sample.__doc__ = doc + "\n\nToken maps (B, h, w); ``known`` as the raster sampler's. See the module doc."
    return sample


sample_sjd = _register("sjd", SJDSamplerConfig, "Speculative Jacobi decoding: several tokens per pass from the "
                       "model's own distribution (lossless).")
sample_lantern = _register("lantern", LanternSamplerConfig, "SJD with LANTERN's relaxed acceptance: a draft borrows "
                           "its codebook neighbours' mass (lossy for lantern_delta > 0).")
sample_gsd = _register("gsd", GSDSamplerConfig, "SJD with grouped acceptance (GSD): look-alike tokens accepted "
                       "together (lossy for group_ranks > 0).")

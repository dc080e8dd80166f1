"""Tiny model builders shared by the tests (CPU, fixed seeds, a few thousand parameters)."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from argen.generators.mar import MAR, MARConfig
from argen.generators.var import VAR, VARConfig
from argen.tokenizers.kl import KLConfig, KLTokenizer
from argen.tokenizers.msvq import MSVQConfig, MultiScaleVQ
from argen.tokenizers.vq import VQConfig, VQTokenizer

# One definition of "tiny" for every test: 8x8 grey images, grid 4x4, 16 codes of width 4.
TINY_AE = {"image_channels": 1, "image_size": 8, "ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1,
           "z_channels": 4, "groups": 4, "codebook_size": 16}
TINY_SCALES = (1, 2, 4)


def tiny_msvq_config(**overrides) -> MSVQConfig:
    scales = overrides.get("scales", TINY_SCALES)
    # every phi conv must serve some scale (the config refuses unused ones): one phi per scale here
    return MSVQConfig(**{**TINY_AE, "scales": TINY_SCALES, "num_phi": len(scales), **overrides})


def tiny_vq_config(**overrides) -> VQConfig:
    return VQConfig(**{**TINY_AE, "code_dim": 4, **overrides})


def tiny_msvq(seed: int = 0, spread_codebook: bool = True, **overrides) -> MultiScaleVQ:
    """A tiny multi-scale VQ in eval mode. ``spread_codebook`` replaces the default +-1/V codebook
    with N(0, 1) codes so that different tokens give clearly different features."""
    torch.manual_seed(seed)
    tok = MultiScaleVQ(tiny_msvq_config(**overrides))
    if spread_codebook:
        with torch.no_grad():
            tok.quantize.embedding.weight.normal_()
    return tok.eval()


def tiny_vq(seed: int = 0, **overrides) -> VQTokenizer:
    torch.manual_seed(seed)
    return VQTokenizer(tiny_vq_config(**overrides)).eval()


TINY_VAR = {"vocab_size": 16, "token_dim": 4, "scales": TINY_SCALES, "depth": 2, "width": 32, "heads": 2,
            "num_classes": 3, "label_drop": 0.0, "drop_path": 0.0}


def tiny_var_config(**overrides) -> VARConfig:
    return VARConfig(**{**TINY_VAR, **overrides})


@torch.no_grad()
def randomize_var(model: VAR, seed: int = 0) -> VAR:
    """Move a freshly initialised VAR away from its near-identity init (AdaLN gammas ~1e-3,
    head x 0.02), so that every block, the condition and the inputs visibly change the logits
    and equality tests have something to compare."""
    g = torch.Generator().manual_seed(seed)
    C = model.config.width

    def normal_(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for b in model.blocks:
        lin = b.ada_lin[-1]
        normal_(lin.weight, 0.5)
        normal_(lin.bias, 0.5)
        normal_(lin.bias[: 2 * C], 0.3, mean=1.0)  # gammas around 1: blocks are not identity
        normal_(b.attn.q_bias, 0.3)
        normal_(b.attn.v_bias, 0.3)
    normal_(model.head_nm.ada_lin[-1].weight, 0.5)
    normal_(model.head.weight, 0.7 / math.sqrt(C))  # logits of order 1: far from uniform
    normal_(model.class_emb.weight, 1.0)
    normal_(model.word_embed.weight, 1.0 / math.sqrt(model.config.token_dim))
    return model


def tiny_var(seed: int = 0, randomize: bool = True, **overrides) -> VAR:
    torch.manual_seed(seed)
    model = VAR(tiny_var_config(**overrides))
    if randomize:
        randomize_var(model, seed)
    return model.eval()


def tiny_hmar(seed: int = 0, randomize: bool = True, **overrides):
    """A tiny HMAR generator: the tiny VAR network, Markov across scales, with its token embedding randomised."""
    from argen.generators.hmar import HMAR, HMARConfig

    torch.manual_seed(seed)
    model = HMAR(HMARConfig(**{**TINY_VAR, **overrides}))
    if randomize:
        randomize_var(model, seed)
        with torch.no_grad():
            model.token_embed.weight.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return model.eval()


def random_scales(batch: int, scales=TINY_SCALES, vocab: int = 16, seed: int = 0) -> list[torch.Tensor]:
    """Random index maps, one (B, pn, pn) per scale."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(vocab, (batch, pn, pn), generator=g) for pn in scales]


def random_images(batch: int, size: int = 8, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=g) * 2 - 1


def tiny_maskgit_config(**overrides):
    from argen.generators.maskgit import MaskGITConfig

    base = {"vocab_size": 16, "grid": (4, 4), "num_classes": 3, "width": 32, "depth": 2, "heads": 2,
            "dropout": 0.0, "label_drop": 0.0, "label_smoothing": 0.0}
    return MaskGITConfig(**{**base, **overrides})


def tiny_maskgit(seed: int = 0, randomize: bool = True, **overrides):
    """A tiny MaskGIT (vocab 16, grid 4x4 like ``tiny_vq``) in eval mode. ``randomize`` widens the
    N(0, 0.02) init so that logits are far from uniform and react to the class and the inputs."""
    from argen.generators.maskgit import MaskGIT

    torch.manual_seed(seed)
    model = MaskGIT(tiny_maskgit_config(**overrides))
    if randomize:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in (model.tok_emb.weight, model.class_emb.weight, model.pos_emb):
                p.copy_(torch.randn(p.shape, generator=g))
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features))
            model.head.weight.mul_(2.0)  # logits of order 2: far from uniform
    return model.eval()


def tiny_raster_config(**overrides):
    """A tiny raster (LlamaGen-style) generator config that fits ``tiny_vq`` (grid 4x4, 16 codes); no dropout."""
    from argen.generators.raster import RasterConfig

    base = {"vocab_size": 16, "grid": (4, 4), "num_classes": 3, "width": 32, "depth": 2, "heads": 2,
            "multiple_of": 16, "label_drop": 0.0, "token_dropout_p": 0.0, "resid_dropout_p": 0.0,
            "ffn_dropout_p": 0.0}
    return RasterConfig(**{**base, **overrides})


@torch.no_grad()
def randomize_raster(model, seed: int = 0, logit_scale: float = 1.0):
    """Move a fresh raster generator away from its init (N(0, 0.02) weights, zero output head) so
    that the label and every earlier token visibly change the logits; logits have std ~logit_scale."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if p.ndim == 1:  # RMSNorm gains
            p.copy_(1.0 + 0.2 * noise)
        elif "embedding" in name:
            p.copy_(noise)
        else:
            p.copy_(noise / math.sqrt(p.shape[1]))
    model.output.weight.mul_(logit_scale)
    if hasattr(model, "output_down"):  # NAR's column head
        model.output_down.weight.mul_(logit_scale)
    return model


def tiny_raster(seed: int = 0, randomize: bool = True, logit_scale: float = 1.0, **overrides):
    from argen.generators.raster import RasterAR

    torch.manual_seed(seed)
    model = RasterAR(tiny_raster_config(**overrides))
    if randomize:
        randomize_raster(model, seed, logit_scale)
    return model.eval()


def tiny_nar(seed: int = 0, randomize: bool = True, logit_scale: float = 1.0, **overrides):
    """A tiny NAR generator: the tiny raster network, decoded by neighbours (both heads randomised)."""
    from argen.generators.nar import NAR, NARConfig

    torch.manual_seed(seed)
    model = NAR(NARConfig(**tiny_raster_config(**overrides).to_dict()))
    if randomize:
        randomize_raster(model, seed, logit_scale)
    return model.eval()


def read_layout(path) -> dict[str, tuple[tuple[int, ...], str]]:
    """An official layout file (tests/data/layouts/*.tsv): name -> (shape, dtype)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, shape, dtype = line.split("\t")
            out[name] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    return out


def _needs_fmnist():
    """Skip marker for tests that load the real Fashion-MNIST from its default location (the Debian
    package ``dataset-fashion-mnist``), which not every machine has."""
    from pathlib import Path

    import pytest

    root = Path("/usr/share/datasets/fashion-mnist")
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    present = all((root / s).is_file() or (root / f"{s}.gz").is_file() for s in stems)
    return pytest.mark.skipif(not present, reason=f"Fashion-MNIST is not installed in {root} "
                                                  "(`sudo apt-get install dataset-fashion-mnist` or `make data`)")


needs_fmnist = _needs_fmnist()


TINY_KL = {k: v for k, v in TINY_AE.items() if k != "codebook_size"}


def tiny_kl(seed: int = 0, **overrides) -> KLTokenizer:
    torch.manual_seed(seed)
    return KLTokenizer(KLConfig(**{**TINY_KL, "embed_dim": 3, **overrides})).eval()


def tiny_mar(seed: int = 0, head: str = "diffusion", **overrides) -> MAR:
    """A tiny MAR (3-channel tokens on a 4x4 grid, like ``tiny_kl``) in eval mode, its head moved off zero."""
    base = dict(token_dim=3, grid=(4, 4), num_classes=3, width=32, depth=1, heads=2, buffer_size=2,
                attn_dropout=0.0, proj_dropout=0.0, label_drop=0.0,
                head=head, head_width=32, head_depth=1, diffusion_train_steps=50)
    torch.manual_seed(seed)
    model = MAR(MARConfig(**{**base, **overrides}))
    with torch.no_grad():  # move off the zero-initialised head so that conditions matter
        for p in model.diffloss.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def tiny_xar(seed: int = 0, **overrides):
    """A tiny xAR (3-channel tokens on a 4x4 grid, like ``tiny_kl``; scales 1-2-4) in eval mode, head off zero."""
    from argen.generators.xar import XAR, XARConfig

    base = dict(token_dim=3, grid=(4, 4), unit="scale", scales=(1, 2, 4), num_classes=3, width=32, depth=2, heads=2,
                head_width=32, head_depth=1, label_drop=0.0, aln_gamma_init=1.0)
    torch.manual_seed(seed)
    model = XAR(XARConfig(**{**base, **overrides}))
    with torch.no_grad():  # move off the zero-initialised head so that conditions matter
        for p in model.head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def chi2_pvalue(counts: torch.Tensor, p: torch.Tensor) -> float:
    """Chi-square p-value of sample ``counts`` against the exact distribution ``p`` over the same outcomes,
    outcomes with fewer than 5 expected draws pooled into one bin (if there are any). Drawing an outcome
    that ``p`` rules out fails at once."""
    from scipy import stats

    assert counts[p == 0].sum() == 0  # never an outcome the target rules out
    counts, p = counts[p > 0], p[p > 0]
    expected = p * counts.sum()
    rare = expected < 5
    obs, exp = counts[~rare], expected[~rare]
    if rare.any():
        obs, exp = torch.cat([obs, counts[rare].sum()[None]]), torch.cat([exp, expected[rare].sum()[None]])
    return float(stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue)


# ---- processes (torchrun, kill tests) ------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(nproc: int = 2) -> list[str]:
    """``torchrun --nproc_per_node nproc`` on a free loopback port (append the script or ``-m argen ...``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


# How a rank dies when C++ code (gloo's threads) calls std::terminate: no Python exception, SIGABRT.
# CI saw it once in 2-rank gloo runs under load (test_fsdp, "terminate called without an active exception").
_ABORT = "terminate called without an active exception"


def run_torchrun(args: list[str], timeout: float = 300, clean: Callable[[], None] | None = None) -> None:
    """Run ``torchrun --nproc_per_node 2 ARGS`` with one torch thread per rank and assert it succeeds.

    Each rank prints its Python stacks if it dies of a signal (PYTHONFAULTHANDLER). A run whose rank
    aborted inside C++ with no Python error (``_ABORT``) runs once more, after ``clean()`` removed what
    the first try wrote, and the first try's output becomes a warning; any other failure, or a second
    abort, fails the test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    for attempt in (1, 2):
        cmd = [*torchrun_cmd(), *args]
        r = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=timeout)
        report = f"{' '.join(cmd)}\nexit code {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
        if r.returncode == 0:
            return
        if attempt == 2 or _ABORT not in r.stderr:
            raise AssertionError(report)
        warnings.warn(f"a torchrun rank aborted in C++; running it again\n{report}", stacklevel=2)
        if clean is not None:
            clean()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie has closed its files: it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# `argen train --set` overrides that make the shapes presets tiny (text-to-image CLI tests)
TINY_TEXT_TOK = ["--set", "ch=8", "--set", "z_channels=8", "--set", "groups=4", "--set", "codebook_size=16"]
TINY_TEXT_GEN = ["--set", "depth=1", "--set", "width=32", "--set", "heads=2"]

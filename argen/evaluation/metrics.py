"""Distribution metrics on feature vectors: Frechet distance, KID, precision / recall / density / coverage, IS.

Every metric takes features (or class probabilities) as ``(N, D)`` tensors or arrays and computes
in float64: the Frechet distance subtracts traces of order ``D * var`` to get a small difference,
and float32 loses it. Features come from any network (``features_of``); offline argen uses the
shipped reference classifiers (``argen.evaluation.classifier``), so report e.g. "FD-FMNIST",
never "FID", which is defined by the Inception-v3 weights only.

The matrix square root in the Frechet distance is taken by symmetric eigendecompositions
(``torch.linalg.eigh`` / ``eigvalsh``), not ``scipy.linalg.sqrtm``, whose iterative solver gives
complex parts on near-singular covariances and whose ``disp`` argument is going away.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

ArrayLike = torch.Tensor | np.ndarray


def _f64(x: ArrayLike, name: str, ndim: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().to("cpu", torch.float64)
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return t


def _features(x: ArrayLike, name: str, min_rows: int = 2) -> torch.Tensor:
    t = _f64(x, name, 2)
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {t.shape[0]}")
    return t


def _same_dim(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names} must have the same feature dimension, got {a.shape[1]} and {b.shape[1]}")


# ---- Frechet distance ---------------------------------------------------------------------------------

def gaussian_stats(features_ND: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, in float64 (as ``np.cov(rowvar=False)``)."""
    f = _features(features_ND, "features_ND")
    mu = f.mean(0)
    x = f - mu
    return mu, x.T @ x / (f.shape[0] - 1)


def _sqrt_psd(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix; rounding's tiny negative eigenvalues count as 0."""
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): the squared 2-Wasserstein distance of two Gaussians.

    Tr (S1 S2)^(1/2) is the sum of square roots of the eigenvalues of S1 S2, which are those of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2) (AB and BA share eigenvalues), so two ``eigh`` calls
    replace a general (non-symmetric) matrix square root."""
    m1, m2 = _f64(mu1, "mu1", 1), _f64(mu2, "mu2", 1)
    s1, s2 = _f64(sigma1, "sigma1", 2), _f64(sigma2, "sigma2", 2)
    d = m1.shape[0]
    for name, t, want in (("mu2", m2, (d,)), ("sigma1", s1, (d, d)), ("sigma2", s2, (d, d))):
        if tuple(t.shape) != want:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {want} to match mu1")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2  # symmetrise away rounding so that eigh sees what it assumes
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    fd = (m1 - m2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean
    return max(float(fd), 0.0)  # >= 0 in exact arithmetic; a -1e-13 would only be rounding


def frechet_distance_from_features(f1_ND: ArrayLike, f2_MD: ArrayLike) -> float:
    """Frechet distance between the Gaussians fitted to two feature sets (biased: it grows as N shrinks)."""
    f1, f2 = _features(f1_ND, "f1_ND"), _features(f2_MD, "f2_MD")
    _same_dim(f1, f2, "f1_ND and f2_MD")
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


# ---- kernel inception distance ------------------------------------------------------------------------

def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x_MD: torch.Tensor, y_MD: torch.Tensor) -> float:
    """Unbiased MMD^2 of two equal-size sets under the cubic polynomial kernel (x.y / d + 1)^3."""
    m = x_MD.shape[0]
    kxx, kyy, kxy = _poly_kernel(x_MD, x_MD), _poly_kernel(y_MD, y_MD), _poly_kernel(x_MD, y_MD)
    # the unbiased estimator leaves out k(x_i, x_i): it can be negative when the sets are alike
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def kid(f1_ND: ArrayLike, f2_MD: ArrayLike, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (Binkowski et al. 2018): (mean, std) of the unbiased MMD^2 over ``subsets``
    random subsets of ``subset_size`` features from each set (capped at the smaller set's size).

    Unbiased, hence comparable across sample sizes, and slightly negative for sets from one distribution."""
    f1, f2 = _features(f1_ND, "f1_ND"), _features(f2_MD, "f2_MD")
    _same_dim(f1, f2, "f1_ND and f2_MD")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    g = torch.Generator().manual_seed(seed)
    vals = torch.tensor([mmd2_unbiased(f1[torch.randperm(f1.shape[0], generator=g)[:m]],
                                       f2[torch.randperm(f2.shape[0], generator=g)[:m]]) for _ in range(subsets)],
                        dtype=torch.float64)
    return float(vals.mean()), float(vals.std(unbiased=False))


# ---- precision, recall, density, coverage -------------------------------------------------------------

def _knn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(N,) distance of every row to its k-th nearest other row (the row itself is its own nearest, at 0)."""
    return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])


def prdc(real_ND: ArrayLike, fake_MD: ArrayLike, k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with k-nearest-neighbour balls.

    precision: share of fake samples inside some real sample's k-NN ball; recall: share of real
    samples inside some fake sample's k-NN ball; density: mean number of real balls holding a fake
    sample, over k (about 1 for matching distributions, unbounded above); coverage: share of real
    balls holding at least one fake sample. Same strict ``<`` as the authors' ``prdc`` package.
    Distance matrices are built ``chunk`` rows at a time, so memory stays O(chunk * N)."""
    real, fake = _features(real_ND, "real_ND"), _features(fake_MD, "fake_MD")
    _same_dim(real, fake, "real_ND and fake_MD")
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be in [1, {min(len(real), len(fake)) - 1}] (fewer than either set's size), got {k}")
    r_real, r_fake = _knn_radii(real, k, chunk), _knn_radii(fake, k, chunk)
    balls_per_fake = torch.zeros(len(fake), dtype=torch.float64)
    recalled = torch.zeros(len(real), dtype=torch.bool)
    covered = torch.zeros(len(real), dtype=torch.bool)
    for i in range(0, len(real), chunk):
        d_rf = torch.cdist(real[i:i + chunk], fake)  # (chunk, M)
        inside_real = d_rf < r_real[i:i + chunk, None]
        balls_per_fake += inside_real.sum(0)
        recalled[i:i + chunk] = (d_rf < r_fake[None, :]).any(1)
        covered[i:i + chunk] = inside_real.any(1)
    return {"precision": float((balls_per_fake > 0).double().mean()),
            "recall": float(recalled.double().mean()),
            "density": float(balls_per_fake.mean() / k),
            "coverage": float(covered.double().mean())}


# ---- inception score ----------------------------------------------------------------------------------

def inception_score(probs_NK: ArrayLike, splits: int = 1) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from any classifier's class probabilities: (mean, std) over ``splits``.

    Between 1 (every sample gets the same prediction) and K (confident predictions spread evenly
    over the K classes)."""
    p = _features(probs_NK, "probs_NK", min_rows=1)
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise ValueError("probs_NK must hold probabilities: non-negative rows that sum to 1 (apply softmax first)")
    if not 1 <= splits <= len(p):
        raise ValueError(f"splits must be in [1, {len(p)}] (the number of rows), got {splits}")
    scores = []
    for part in torch.tensor_split(p, splits):
        py = part.mean(0, keepdim=True)
        kl = (torch.xlogy(part, part) - torch.xlogy(part, py)).sum(1).mean()  # xlogy: 0 log 0 = 0
        scores.append(math.exp(float(kl)))
    s = torch.tensor(scores, dtype=torch.float64)
    return float(s.mean()), float(s.std(unbiased=False))


# ---- features of images -------------------------------------------------------------------------------

def _as_model_input(images: ArrayLike) -> torch.Tensor:
    """uint8 (N, C, H, W) / (N, H, W, C) or float (N, C, H, W) in [-1, 1] -> float (N, C, H, W) in [-1, 1]."""
    x = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
    if x.dim() != 4:
        raise ValueError(f"images must be (N, C, H, W) or uint8 (N, H, W, C), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)  # NHWC, as argen sample writes them
        return x.float() / 127.5 - 1.0
    return x.float()


@torch.inference_mode()
def _batched(fn, model: torch.nn.Module, images: ArrayLike, batch_size: int, device, progress: bool,
             desc: str) -> torch.Tensor:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = _as_model_input(images)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()  # batch-norm statistics and no dropout, whatever mode the caller left it in
    try:
        out = [fn(x[i:i + batch_size].to(device)).float().cpu()
               for i in tqdm(range(0, len(x), batch_size), desc=desc, disable=not progress, leave=False)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def features_of(classifier: torch.nn.Module, images: ArrayLike, batch_size: int = 500, device=None,
                progress: bool = False) -> torch.Tensor:
    """(N, D) float32 features (``classifier.features``) of images, in batches, with an optional tqdm bar.

    ``images``: float (N, C, H, W) in [-1, 1], or uint8 (N, C, H, W) / (N, H, W, C) as ``argen sample`` saves."""
    return _batched(classifier.features, classifier, images, batch_size, device, progress, "features")


def probs_of(classifier: torch.nn.Module, images: ArrayLike, batch_size: int = 500, device=None,
             progress: bool = False) -> torch.Tensor:
    """(N, K) float32 class probabilities (softmax of the logits) of images, for ``inception_score``."""
    return _batched(lambda x: classifier(x).softmax(-1), classifier, images, batch_size, device, progress, "probs")

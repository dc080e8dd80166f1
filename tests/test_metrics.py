"""Distribution metrics against closed forms and hand-computed cases (argen.evaluation.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from argen.evaluation.classifier import Classifier, ClassifierConfig
from argen.evaluation.metrics import (
    features_of,
    frechet_distance,
    frechet_distance_from_features,
    gaussian_stats,
    inception_score,
    kid,
    mmd2_unbiased,
    prdc,
    probs_of,
)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _random_cov(d, seed):
    a = _randn(d, d, seed=seed)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# ---- Frechet distance ---------------------------------------------------------------------------------

def test_fd_of_identical_sets_is_zero():
    f = _randn(500, 16)
    assert frechet_distance_from_features(f, f) == pytest.approx(0.0, abs=1e-9)
    s = _random_cov(16, 1)
    assert frechet_distance(torch.zeros(16), s, torch.zeros(16), s) == pytest.approx(0.0, abs=1e-9)


def test_fd_of_commuting_gaussians_matches_closed_form():
    a, b = torch.tensor([1.0, 4.0, 0.25, 9.0]), torch.tensor([4.0, 1.0, 0.25, 0.0])  # one singular covariance
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0, 3.0])
    want = float((mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())  # 1 + 4 + (1 + 1 + 0 + 9)
    assert want == 16.0
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(want, abs=1e-12)


def _sqrtm_2x2(m: np.ndarray) -> np.ndarray:
    """Square root of a 2x2 matrix with positive eigenvalues: (M + sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M))
    (Cayley-Hamilton), valid for non-symmetric M such as S1 S2."""
    s = math.sqrt(np.linalg.det(m))
    return (m + s * np.eye(2)) / math.sqrt(np.trace(m) + 2 * s)


def test_fd_of_non_commuting_2x2_covariances_matches_hand_derivation():
    s1, s2 = np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 4.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    # S1 S2 = [[2, 4], [1, 8]]: trace 10, det 12, so Tr sqrt(S1 S2) = sqrt(10 + 2 sqrt(12))
    by_hand = 4 + 5 - 2 * math.sqrt(10 + 4 * math.sqrt(3))
    reference = np.trace(s1) + np.trace(s2) - 2 * np.trace(_sqrtm_2x2(s1 @ s2))
    assert by_hand == pytest.approx(reference, abs=1e-12) and by_hand == pytest.approx(0.7712204, abs=1e-7)
    mu1, mu2 = np.array([1.0, -1.0]), np.array([0.0, 1.0])
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(5 + by_hand, abs=1e-12)


def test_fd_matches_general_eigenvalue_formula_and_is_symmetric():
    d = 12
    s1, s2 = _random_cov(d, 1), _random_cov(d, 2)
    mu1, mu2 = _randn(d, seed=3), _randn(d, seed=4)
    # Tr sqrt(S1 S2) from the (complex) eigenvalues of the non-symmetric product
    tr = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    want = float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * tr)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-10)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(want, rel=1e-10)


def test_fd_from_features_uses_unbiased_covariance_and_sees_a_shift():
    f = _randn(300, 5)
    mu, sigma = gaussian_stats(f)
    assert torch.allclose(sigma, torch.from_numpy(np.cov(f.numpy(), rowvar=False)), atol=1e-12)
    assert torch.allclose(mu, f.mean(0))
    shift = torch.tensor([1.0, 0.0, -2.0, 0.0, 0.5], dtype=torch.float64)
    assert frechet_distance_from_features(f, f + shift) == pytest.approx(5.25, abs=1e-9)
    assert frechet_distance_from_features(f.float().numpy(), (f + shift).float().numpy()) == pytest.approx(5.25, abs=1e-4)


def test_fd_rejects_bad_shapes_by_name():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))
    with pytest.raises(ValueError, match="same feature dimension"):
        frechet_distance_from_features(_randn(10, 3), _randn(10, 4))
    with pytest.raises(ValueError, match="f1_ND needs at least 2 rows"):
        frechet_distance_from_features(_randn(1, 3), _randn(10, 3))


# ---- KID ------------------------------------------------------------------------------------------------

def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 written out term by term, O(n^2) Python loops."""
    n, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1) ** 3
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    return kxx + kyy - 2 * kxy


def test_kid_of_shifted_sets_matches_direct_computation():
    x, y = _randn(30, 4, seed=1), _randn(30, 4, seed=2) + 1.0
    want = _mmd2_loops(x.numpy(), y.numpy())
    assert want > 0.1
    assert mmd2_unbiased(x, y) == pytest.approx(want, rel=1e-10)
    # subsets as large as the sets are the sets themselves (permuted): every subset gives the same value
    mean, std = kid(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(want, rel=1e-10) and std == pytest.approx(0.0, abs=1e-9)


def test_kid_is_unbiased_near_zero_and_can_be_negative():
    values = [mmd2_unbiased(_randn(40, 8, seed=2 * i), _randn(40, 8, seed=2 * i + 1)) for i in range(60)]
    v = np.array(values)
    assert (v < 0).any() and (v > 0).any()
    assert abs(v.mean()) < 3 * v.std() / math.sqrt(len(v))  # mean 0 within three standard errors
    # subsets of 150 keep every kernel matrix small: the test stays fast on a busy 2-core machine
    big1, big2 = _randn(1000, 8, seed=7), _randn(1000, 8, seed=8)
    same, same_std = kid(big1, big2, subsets=20, subset_size=150, seed=0)
    shifted, _ = kid(big1, big2 + 0.5, subsets=20, subset_size=150, seed=0)
    assert abs(same) < 0.05 and shifted > 0.5  # ~0.004 vs ~1.0
    assert kid(big1, big2, subsets=20, subset_size=150, seed=0) == (same, same_std)  # same seed, same subsets


# ---- precision / recall / density / coverage ----------------------------------------------------------

def test_prdc_of_identical_sets():
    f = _randn(200, 6)
    m = prdc(f, f, k=5, chunk=64)  # chunked like a large set would be
    assert m["precision"] == m["recall"] == m["coverage"] == 1.0
    # every real ball holds itself and its k - 1 nearest neighbours (strict <): k points per ball in all
    assert m["density"] == pytest.approx(1.0, abs=1e-12)


def test_prdc_of_disjoint_far_apart_sets_is_zero():
    real, fake = _randn(100, 4, seed=1), _randn(80, 4, seed=2) + 100.0
    assert prdc(real, fake, k=3) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_hand_computed_1d_case():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [10.0]])
    # k = 1: real radii all 1; fake radii 9.5. Fake 0.5 lies in the balls of real 0 and 1, fake 10 in none;
    # every real point lies in fake 0.5's ball; only real 0 and 1 have a fake inside their ball.
    assert prdc(real, fake, k=1) == {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.5}


def test_prdc_rejects_k_too_large():
    with pytest.raises(ValueError, match="k must be in"):
        prdc(_randn(5, 2), _randn(5, 2), k=5)


# ---- inception score ----------------------------------------------------------------------------------

def test_inception_score_bounds_and_hand_case():
    K = 7
    onehot = torch.eye(K).repeat(3, 1)  # confident and uniform over classes
    assert inception_score(onehot)[0] == pytest.approx(K, rel=1e-12)
    mean, std = inception_score(onehot, splits=3)
    assert mean == pytest.approx(K, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    same = torch.zeros(10, K)
    same[:, 2] = 1
    assert inception_score(same)[0] == pytest.approx(1.0, abs=1e-12)
    assert inception_score(torch.full((4, K), 1.0 / K))[0] == pytest.approx(1.0, abs=1e-12)
    # p1 = (1/2, 1/2), p2 = (1, 0): p(y) = (3/4, 1/4), mean KL = (1/2 ln(4/3) + ln(4/3)) / 2
    two = np.array([[0.5, 0.5], [1.0, 0.0]])
    assert inception_score(two)[0] == pytest.approx((4 / 3) ** 0.75, rel=1e-12)


def test_inception_score_rejects_logits():
    with pytest.raises(ValueError, match="probs_NK must hold probabilities"):
        inception_score(_randn(5, 3))


# ---- features of images ---------------------------------------------------------------------------------

def test_features_of_batches_and_takes_uint8_nhwc():
    torch.manual_seed(0)
    model = Classifier(ClassifierConfig(image_size=8, widths=(8, 16), hidden=12))
    model.train()
    u8 = torch.randint(0, 256, (10, 8, 8, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = u8.permute(0, 3, 1, 2).float() / 127.5 - 1
    f_all = features_of(model, x, batch_size=10)
    assert f_all.shape == (10, 12) and f_all.dtype == torch.float32
    assert model.training  # the caller's mode is restored
    assert torch.allclose(features_of(model, u8.numpy(), batch_size=3, progress=True), f_all, atol=1e-5)
    p = probs_of(model, x, batch_size=4)
    assert p.shape == (10, 10) and torch.allclose(p.sum(1), torch.ones(10), atol=1e-5)

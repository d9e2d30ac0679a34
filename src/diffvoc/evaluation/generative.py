"""Generation metrics of DiffWave's Table 2 (FID, IS, mIS, AM, NDB/K, accuracy) from classifier outputs.

The features and probabilities come from the digit classifier of :mod:`diffvoc.evaluation.classifier`.

**The metrics** (``p(y|x)`` = classifier softmax, ``f(x)`` = its features; n generated clips):

* FID — Fréchet distance between Gaussians fitted to f of the generated clips and of the real
  training set: ‖μ_g − μ_r‖² + tr(Σ_g + Σ_r − 2 (Σ_g Σ_r)^½) (``scipy.linalg.sqrtm``).
* IS — exp E_x[KL(p(y|x) ‖ p(y))], p(y) = E_x p(y|x) over the generated set (one split, no halves).
* mIS — modified IS (Gurumurthy et al., 2017) = exp E_{x,x'}[KL(p(y|x) ‖ p(y|x'))], here over **all**
  ordered pairs of generated clips (x = x' included), computed exactly in O(n·C) as
  exp(−E_x H(p(y|x)) − Σ_y E_x[p(y|x)] · E_x'[log p(y|x')]). This is the form that DiffWave's
  Table 2 values imply (real data: mIS ≈ 281 with 10 classes, only reachable when pairs of
  different classes count) and the form of the public SC09 evaluation code used to reproduce it.
  Gurumurthy et al. describe mIS as a *within-class* diversity score; that variant,
  exp Σ_c (n_c/n) · E_{x,x' ∈ c}[KL(p(y|x) ‖ p(y|x'))] with c the predicted class, is reported
  too as ``mis_class`` (:func:`modified_inception_score_within_class`); it is near 1 for a
  confident classifier on any data and is no measure of quality on its own.
* AM score (Zhou et al., 2018) — KL(p*(y) ‖ p(y)) + E_x H(p(y|x)), p* the label distribution of the
  real training set (stored with the classifier), p(y) the mean prediction on the generated set.
  Lower is better.
* NDB/K (Richardson & Weiss, 2018) — K = 50 k-means bins fitted on the real training features;
  a bin counts when the generated proportion differs from the training proportion in a
  two-proportion z-test with pooled variance at α = 0.05 (two-sided, |z| > 1.96); NDB/K = count / K.
* Accuracy (class-conditional models) — argmax p(y|x) equals the label asked for.

Natural logarithms throughout; probabilities are computed in float64 from the logits and floored at
1e-300 inside logarithms.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffvoc.errors import DiffvocError

LOG_FLOOR = 1e-300
DEFAULT_K = 50
DEFAULT_ALPHA = 0.05

__all__ = [
    "RealReference",
    "am_score",
    "class_accuracy",
    "fid",
    "frechet_distance",
    "gaussian_stats",
    "generation_metrics",
    "inception_score",
    "modified_inception_score",
    "modified_inception_score_within_class",
    "ndb",
    "NDBBins",
]


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, LOG_FLOOR))


def _check_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise DiffvocError(f"class probabilities must be [n >= 1, classes >= 2], got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-6):
        raise DiffvocError("class probabilities must be finite, non-negative rows that sum to 1")
    return p


def _entropy_rows(p: np.ndarray) -> np.ndarray:
    return -(p * _log(p)).sum(axis=1)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features ``[n, d]`` (n ≥ 2)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DiffvocError(f"need at least 2 feature vectors [n, d] for a Gaussian, got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½). When the product is singular (its square root not
    finite), ``eps``·I is added to both covariances; tiny imaginary parts from round-off are dropped."""
    from scipy.linalg import LinAlgWarning, sqrtm

    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise DiffvocError("Fréchet distance: means and covariances of different sizes")
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LinAlgWarning)
        covmean = sqrtm(s1 @ s2)
    if caught or not np.all(np.isfinite(covmean)):
        off = np.eye(s1.shape[0]) * eps
        covmean = sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``[n, d]``."""
    return frechet_distance(*gaussian_stats(features_a), *gaussian_stats(features_b))


def inception_score(probs: np.ndarray) -> float:
    """exp E_x[KL(p(y|x) ‖ p(y))], p(y) the mean of ``probs`` ``[n, C]``. 1 (uniform or identical
    predictions) to C (confident and balanced)."""
    p = _check_probs(probs)
    marginal = p.mean(axis=0)
    kl = (p * (_log(p) - _log(marginal)[None])).sum(axis=1)
    return float(np.exp(kl.mean()))


def modified_inception_score(probs: np.ndarray) -> float:
    """exp E_{x,x'}[KL(p(y|x) ‖ p(y|x'))] over all ordered pairs (DiffWave Table 2's scale), exactly:
    E_{x,x'} KL = −E_x H(p(y|x)) − Σ_y E_x[p(y|x)] · E_{x'}[log p(y|x')]."""
    p = _check_probs(probs)
    mean_kl = -_entropy_rows(p).mean() - float(p.mean(axis=0) @ _log(p).mean(axis=0))
    return float(np.exp(max(mean_kl, 0.0)))


def modified_inception_score_within_class(probs: np.ndarray) -> float:
    """Gurumurthy et al.'s within-class form: exp Σ_c (n_c/n) · E_{x,x'∈c}[KL(p(y|x) ‖ p(y|x'))],
    classes c by the classifier's prediction (ordered pairs within a class, x = x' included)."""
    p = _check_probs(probs)
    pred = p.argmax(axis=1)
    total = 0.0
    for c in np.unique(pred):
        q = p[pred == c]
        kl = -_entropy_rows(q).mean() - float(q.mean(axis=0) @ _log(q).mean(axis=0))
        total += len(q) / len(p) * max(kl, 0.0)
    return float(np.exp(total))


def am_score(probs: np.ndarray, p_star: np.ndarray) -> float:
    """KL(p*(y) ‖ p(y)) + E_x H(p(y|x)): p* the real training label distribution, p(y) the mean of
    ``probs``. 0 for confident predictions whose class histogram is p*; lower is better."""
    p = _check_probs(probs)
    ps = np.asarray(p_star, np.float64)
    if ps.shape != (p.shape[1],) or np.any(ps < 0) or not math.isclose(ps.sum(), 1.0, abs_tol=1e-6):
        raise DiffvocError(f"p* must be a distribution over {p.shape[1]} classes")
    marginal = p.mean(axis=0)
    kl = float(np.sum(np.where(ps > 0, ps * (_log(ps) - _log(marginal)), 0.0)))
    return kl + float(_entropy_rows(p).mean())


def class_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of clips whose argmax class is the label asked for."""
    p = _check_probs(probs)
    lab = np.asarray(labels)
    if lab.shape != (p.shape[0],):
        raise DiffvocError(f"{lab.size} labels for {p.shape[0]} clips")
    return float(np.mean(p.argmax(axis=1) == lab))


def two_proportion_z(p1: np.ndarray, n1: int, p2: np.ndarray, n2: int) -> np.ndarray:
    """z of the pooled two-proportion test, per bin (0 where both proportions are 0 or 1)."""
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (p1 - p2) / np.where(se > 0, se, 1.0), 0.0)
    return z


class NDBBins:
    """K-means bins fitted on real (training) features, with the real proportion of each bin."""

    def __init__(self, real_features: np.ndarray, k: int = DEFAULT_K, seed: int = 0) -> None:
        from sklearn.cluster import KMeans

        f = np.asarray(real_features, np.float64)
        if f.ndim != 2 or f.shape[0] < k:
            raise DiffvocError(f"NDB needs at least K={k} real feature vectors, got shape {f.shape}")
        self.k = int(k)
        self.kmeans = KMeans(n_clusters=self.k, n_init=10, random_state=seed).fit(f)
        self.n_real = f.shape[0]
        self.real_proportions = np.bincount(self.kmeans.labels_, minlength=self.k) / self.n_real

    def proportions(self, features: np.ndarray) -> np.ndarray:
        bins = self.kmeans.predict(np.asarray(features, np.float64))
        return np.bincount(bins, minlength=self.k) / len(bins)

    def score(self, features: np.ndarray, alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
        """``ndb`` (bins that differ at level ``alpha``), ``ndb_k`` = ndb / K and the proportions."""
        from scipy.stats import norm

        f = np.asarray(features, np.float64)
        if f.ndim != 2 or f.shape[0] < 1:
            raise DiffvocError("NDB needs at least one feature vector")
        q = self.proportions(f)
        z = two_proportion_z(self.real_proportions, self.n_real, q, f.shape[0])
        different = np.abs(z) > norm.ppf(1 - alpha / 2)
        n = int(different.sum())
        return {"ndb": n, "ndb_k": n / self.k, "different_bins": np.flatnonzero(different).tolist(),
                "proportions": q.tolist()}


def ndb(real_features: np.ndarray, features: np.ndarray, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA,
        seed: int = 0) -> float:
    """NDB/K of ``features`` against K k-means bins of ``real_features``."""
    return NDBBins(real_features, k, seed).score(features, alpha)["ndb_k"]


@dataclass
class RealReference:
    """What the metrics compare against: the real training set's feature Gaussian, label
    distribution p* and NDB bins."""

    mu: np.ndarray
    sigma: np.ndarray
    p_star: np.ndarray
    bins: NDBBins

    @classmethod
    def from_features(cls, features: np.ndarray, labels: np.ndarray | None = None, n_classes: int = 10,
                      p_star: np.ndarray | None = None, k: int = DEFAULT_K, seed: int = 0) -> "RealReference":
        """From real training features (and their labels, or p* directly)."""
        mu, sigma = gaussian_stats(features)
        if p_star is None:
            if labels is None:
                raise DiffvocError("give the real labels or p*")
            p_star = np.bincount(np.asarray(labels), minlength=n_classes) / len(labels)
        return cls(mu, sigma, np.asarray(p_star, np.float64), NDBBins(features, k, seed))


def generation_metrics(probs: np.ndarray, features: np.ndarray, ref: RealReference, labels: np.ndarray | None = None,
                       alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """DiffWave Table 2's metrics of one set of clips (generated or real): ``fid``, ``is``, ``mis``,
    ``mis_class``, ``am``, ``ndb``, ``ndb_k`` and, with ``labels``, ``accuracy``."""
    p = _check_probs(probs)
    out: dict[str, Any] = {
        "n": int(p.shape[0]),
        "fid": frechet_distance(*gaussian_stats(features), ref.mu, ref.sigma),
        "is": inception_score(p),
        "mis": modified_inception_score(p),
        "mis_class": modified_inception_score_within_class(p),
        "am": am_score(p, ref.p_star),
    }
    nd = ref.bins.score(features, alpha)
    out["ndb"], out["ndb_k"] = nd["ndb"], nd["ndb_k"]
    out["predicted_class_distribution"] = (np.bincount(p.argmax(1), minlength=p.shape[1]) / p.shape[0]).tolist()
    if labels is not None:
        out["accuracy"] = class_accuracy(p, labels)
    return out


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------

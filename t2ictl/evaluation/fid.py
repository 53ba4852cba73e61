"""Frechet Inception Distance between two sets of Inception pool features.

FID = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)), with the matrix square root computed as the reference
code (TTUR, pytorch-fid) does: scipy's sqrtm of S1 S2; if that is not finite, again with eps I added to both
covariances; a complex result is accepted only when the imaginary part of its diagonal is below 1e-3 (numerical
noise), and its real part is used.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

SQRTM_EPS = 1e-6  # the offset added to both covariances when sqrtm of their product is not finite
IMAGINARY_TOLERANCE = 1e-3  # largest |imag| on the diagonal of sqrt(S1 S2) accepted as round-off


class FeatureStatistics:
    """Mean and covariance of a set of feature vectors, accumulated batch by batch in float64."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, features: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        self.count += len(features)
        self.total += features.sum(axis=0)
        self.outer += features.T @ features

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma), sigma the unbiased covariance as np.cov gives it."""
        if self.count < 2:
            raise ValueError(f"FID needs at least 2 images per side, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, sigma


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    accumulator = FeatureStatistics(features.shape[1])
    accumulator.add(features)
    return accumulator.result()


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = SQRTM_EPS) -> float:
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is expected with few images and handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(sigma1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        worst = np.max(np.abs(np.diagonal(covmean).imag))
        if worst > IMAGINARY_TOLERANCE:
            raise ValueError(f"the matrix square root has an imaginary component of {worst:.3g}; "
                             "the covariances are too degenerate (use more images)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))

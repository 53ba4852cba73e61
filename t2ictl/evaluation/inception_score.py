"""Inception Score: exp(E_x KL(p(y|x) || p(y))) over splits of the images, reported as mean and std over splits
(10 splits, as Salimans et al. and the StackGAN/AttnGAN evaluation code)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    logits = np.asarray(logits, np.float64)
    if len(logits) < splits:
        raise ValueError(f"the Inception Score needs at least {splits} images (one per split), got {len(logits)}")
    scores = []
    for part in np.array_split(log_softmax(logits, axis=1), splits):
        probabilities = np.exp(part)
        log_marginal = np.log(probabilities.mean(axis=0))
        kl = np.sum(probabilities * (part - log_marginal), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))

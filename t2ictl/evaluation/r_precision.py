"""R-precision as AttnGAN evaluates it: for each generated image, rank its true caption among 100 candidates (the
true one and 99 others drawn at random from the evaluation captions) by the cosine similarity of the pretrained DAMSM
global image feature and sentence features; a hit when the true caption ranks first. Reported as mean and std over
10 folds of the images."""

from __future__ import annotations

import numpy as np

CHUNK = 1024  # images per block: the [block, 99, D] candidate array stays small


def r_precision(image_features: np.ndarray, true_sentences: np.ndarray, candidate_sentences: np.ndarray,
                seed: int = 0, candidates: int = 100, folds: int = 10) -> tuple[float, float]:
    """image_features[i] was generated from the caption whose sentence feature is true_sentences[i]; mismatched
    candidates are drawn from candidate_sentences (all captions of the split), skipping exact copies of the true one."""
    images = _normalize(image_features)
    true = _normalize(true_sentences)
    pool = _normalize(candidate_sentences)
    if len(pool) < candidates:
        raise ValueError(f"R-precision needs at least {candidates} candidate captions, got {len(pool)}")
    if len(images) < folds:
        raise ValueError(f"R-precision needs at least {folds} images (one per fold), got {len(images)}")
    rng = np.random.default_rng(seed)
    others = rng.integers(0, len(pool), size=(len(images), candidates - 1))
    hits = np.concatenate([_hits(images[i:i + CHUNK], true[i:i + CHUNK], pool[others[i:i + CHUNK]])
                           for i in range(0, len(images), CHUNK)])
    per_fold = [part.mean() for part in np.array_split(hits, folds)]
    return float(np.mean(per_fold)), float(np.std(per_fold))


def _hits(images: np.ndarray, true: np.ndarray, others: np.ndarray) -> np.ndarray:
    """True where no other candidate scores at least as high as the true caption (ties count as misses)."""
    true_score = np.sum(images * true, axis=1)
    other_scores = np.einsum("nd,nkd->nk", images, others)
    duplicate = np.isclose(others, true[:, None, :]).all(axis=2)  # the same caption text drawn as an "other"
    return ~np.any((other_scores >= true_score[:, None]) & ~duplicate, axis=1)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

"""How well pretrained encoders match captions to images and cluster same-label examples: retrieval recall, cosine
gaps, silhouette and Fisher's class separation, from held-out features (the pretraining phase reports them)."""

from __future__ import annotations

import numpy as np

from t2ictl.models.image_encoder import l2_normalize


def retrieval_metrics(image: np.ndarray, sentence: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Text->image R@1 and R@5, image->text R@1, and how tightly same-label images cluster (cosine)."""
    image_n = np.asarray(l2_normalize(image))
    sentence_n = np.asarray(l2_normalize(sentence))
    similarity = sentence_n @ image_n.T  # [captions, images]
    n = len(similarity)
    true = similarity[np.arange(n), np.arange(n)][:, None]
    text_rank = (similarity > true).sum(axis=1)
    image_rank = (similarity.T > true).sum(axis=1)
    same = (labels @ labels.T) > 0
    off_diagonal = ~np.eye(n, dtype=bool)
    cosine = image_n @ image_n.T
    intra = cosine[same & off_diagonal].mean() if (same & off_diagonal).any() else float("nan")
    inter = cosine[~same].mean() if (~same).any() else float("nan")
    nearest = np.argmax(np.where(off_diagonal, cosine, -2), axis=1)
    return {"text_to_image_r1": float((text_rank < 1).mean()), "text_to_image_r5": float((text_rank < 5).mean()),
            "image_to_text_r1": float((image_rank < 1).mean()), "chance_r1": 1.0 / n,
            "intra_class_cosine": float(intra), "inter_class_cosine": float(inter),
            "cluster_gap": float(intra - inter), "silhouette": silhouette(1.0 - cosine, labels),
            "class_separation": class_separation(image_n, labels),
            "joint_class_separation": class_separation(np.concatenate([image_n, sentence_n]),
                                                       np.concatenate([labels, labels])),
            "nearest_neighbour_label": float(same[np.arange(n), nearest].mean())}


def class_separation(features: np.ndarray, labels: np.ndarray) -> float:
    """Fisher's ratio of L2-normalised features: between-class over within-class scatter (traces), classes being the
    label sets. Unlike intra - inter cosine, it does not rise when all features collapse together."""
    keys = [tuple(row) for row in (labels > 0).astype(np.int8)]
    centre = features.mean(axis=0)
    between = within = 0.0
    for key in set(keys):
        members = features[[k == key for k in keys]]
        mean = members.mean(axis=0)
        between += len(members) * float(np.sum((mean - centre) ** 2))
        within += float(np.sum((members - mean) ** 2))
    return between / max(within, 1e-12)


def silhouette(distance: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Rousseeuw 1987) over points whose label set has another member: (b - a) / max(a, b), with a the
    mean distance to the same label set and b the smallest mean distance to another label set."""
    keys = [tuple(row) for row in (labels > 0).astype(np.int8)]
    groups = {key: np.array([k == key for k in keys]) for key in set(keys)}
    scores = []
    for i, key in enumerate(keys):
        own = groups[key].copy()
        own[i] = False
        others = [distance[i, members].mean() for other, members in groups.items() if other != key]
        if own.any() and others:
            a, b = distance[i, own].mean(), min(others)
            scores.append((b - a) / max(a, b, 1e-12))
    return float(np.mean(scores)) if scores else float("nan")

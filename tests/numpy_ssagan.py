"""SSA-GAN's NetG written out in NumPy, NCHW, from a state dict with the official names (eval mode: BatchNorms with
running statistics): the independent reference the import is checked against. NetD is DF-GAN's (numpy_dfgan)."""

from __future__ import annotations

import numpy as np
from numpy_attngan import batch_norm, sigmoid
from numpy_dfgan import conv2d, leaky, linear


def mask_predictor(state, prefix: str, x):
    h = conv2d(x, state[f"{prefix}.0.weight"], state[f"{prefix}.0.bias"], padding=1)
    h = np.maximum(batch_norm(state, f"{prefix}.1", h), 0)
    return conv2d(h, state[f"{prefix}.3.weight"], state[f"{prefix}.3.bias"])


def resize_aligned(x, size: int):
    """F.interpolate(mode="bilinear", align_corners=True)."""
    n = x.shape[2]
    positions = np.arange(size) * (n - 1) / (size - 1)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, n - 1)
    frac = positions - low
    x = x[:, :, low] * (1 - frac)[None, None, :, None] + x[:, :, high] * frac[None, None, :, None]
    return x[:, :, :, low] * (1 - frac) + x[:, :, :, high] * frac


def affine(state, prefix: str, x, sentence, mask):
    stats = {f"{prefix}.weight": np.ones(x.shape[1]), f"{prefix}.bias": np.zeros(x.shape[1]),
             **{f"{prefix}.{k}": state[f"{prefix}.batch_norm2d.{k}"] for k in ("running_mean", "running_var")}}
    x = batch_norm(stats, prefix, x)
    mlp = {part: linear(state, f"{prefix}.fc_{part}.linear2",
                        np.maximum(linear(state, f"{prefix}.fc_{part}.linear1", sentence), 0))[:, :, None, None]
           for part in ("gamma", "beta")}
    return (1 + mlp["gamma"] * mask) * x + mlp["beta"] * mask


def net_g(state, noise, sentence) -> np.ndarray:
    out = linear(state, "fc", noise).reshape(len(noise), -1, 4, 4)
    mask_logits = mask_predictor(state, "conv_mask", out)
    index = 0
    while f"block{index}.c1.weight" in state:
        prefix = f"block{index}"
        if index:
            out = out.repeat(2, axis=2).repeat(2, axis=3)
            mask_logits = resize_aligned(mask_logits, out.shape[2])
        mask = sigmoid(mask_logits)
        h = conv2d(np.maximum(affine(state, f"{prefix}.affine0", out, sentence, mask), 0),
                   state[f"{prefix}.c1.weight"], state[f"{prefix}.c1.bias"], padding=1)
        h = conv2d(np.maximum(affine(state, f"{prefix}.affine2", h, sentence, mask), 0),
                   state[f"{prefix}.c2.weight"], state[f"{prefix}.c2.bias"], padding=1)
        if f"{prefix}.c_sc.weight" in state:
            out = conv2d(out, state[f"{prefix}.c_sc.weight"], state[f"{prefix}.c_sc.bias"])
        out = out + state[f"{prefix}.gamma"][0] * h
        if f"{prefix}.conv_mask.0.weight" in state:
            mask_logits = mask_predictor(state, f"{prefix}.conv_mask", out)
        index += 1
    out = leaky(batch_norm(state, "conv_img.0", out))
    return np.tanh(conv2d(out, state["conv_img.2.weight"], state["conv_img.2.bias"], padding=1))

"""DF-GAN's NetG, NetD and NetC written out in NumPy, NCHW, from a state dict with the official names: the
independent reference the import is checked against (torch semantics: cross-correlation, zero padding, nearest
upsampling, 2x2 average pooling)."""

from __future__ import annotations

import numpy as np


def conv2d(x: np.ndarray, weight: np.ndarray, bias=None, stride: int = 1, padding: int = 0) -> np.ndarray:
    """torch.nn.functional.conv2d on [B, C, H, W] with weight [out, in, kh, kw]."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    size = weight.shape[2]
    rows = (x.shape[2] - size) // stride + 1
    cols = (x.shape[3] - size) // stride + 1
    out = np.zeros((x.shape[0], weight.shape[0], rows, cols))
    for i in range(size):
        for j in range(size):
            patch = x[:, :, i:i + stride * rows:stride, j:j + stride * cols:stride]
            out += np.einsum("bchw,oc->bohw", patch, weight[:, :, i, j])
    return out if bias is None else out + bias[None, :, None, None]


def leaky(x):
    return np.where(x > 0, x, 0.2 * x)


def linear(state, prefix: str, x):
    return x @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]


def affine(state, prefix: str, x, condition):
    gamma = linear(state, f"{prefix}.fc_gamma.linear2", np.maximum(linear(state, f"{prefix}.fc_gamma.linear1",
                                                                          condition), 0))
    beta = linear(state, f"{prefix}.fc_beta.linear2", np.maximum(linear(state, f"{prefix}.fc_beta.linear1",
                                                                        condition), 0))
    return gamma[:, :, None, None] * x + beta[:, :, None, None]


def net_g(state, noise, sentence, nf: int) -> np.ndarray:
    out = linear(state, "fc", noise).reshape(len(noise), 8 * nf, 4, 4)
    condition = np.concatenate([noise, sentence], axis=1)
    index = 0
    while f"GBlocks.{index}.c1.weight" in state:
        prefix = f"GBlocks.{index}"
        out = out.repeat(2, axis=2).repeat(2, axis=3)
        h = out
        for fuse, conv in (("fuse1", "c1"), ("fuse2", "c2")):
            h = leaky(affine(state, f"{prefix}.{fuse}.affine1",
                             leaky(affine(state, f"{prefix}.{fuse}.affine0", h, condition)), condition))
            h = conv2d(h, state[f"{prefix}.{conv}.weight"], state[f"{prefix}.{conv}.bias"], padding=1)
        if f"{prefix}.c_sc.weight" in state:
            out = conv2d(out, state[f"{prefix}.c_sc.weight"], state[f"{prefix}.c_sc.bias"])
        out = out + h
        index += 1
    return np.tanh(conv2d(leaky(out), state["to_rgb.1.weight"], state["to_rgb.1.bias"], padding=1))


def net_d(state, images) -> np.ndarray:
    out = conv2d(images, state["conv_img.weight"], state["conv_img.bias"], padding=1)
    index = 0
    while f"DBlocks.{index}.conv_r.0.weight" in state:
        prefix = f"DBlocks.{index}"
        res = leaky(conv2d(out, state[f"{prefix}.conv_r.0.weight"], stride=2, padding=1))
        res = leaky(conv2d(res, state[f"{prefix}.conv_r.2.weight"], padding=1))
        if state[f"{prefix}.conv_s.weight"].shape[0] != state[f"{prefix}.conv_s.weight"].shape[1]:
            out = conv2d(out, state[f"{prefix}.conv_s.weight"], state[f"{prefix}.conv_s.bias"])
        batch, channels, height, width = out.shape
        out = out.reshape(batch, channels, height // 2, 2, width // 2, 2).mean(axis=(3, 5))
        out = out + state[f"{prefix}.gamma"][0] * res
        index += 1
    return out


def net_c(state, features, sentence) -> np.ndarray:
    tiled = np.broadcast_to(sentence[:, :, None, None], sentence.shape + (4, 4))
    h = leaky(conv2d(np.concatenate([features, tiled], axis=1), state["joint_conv.0.weight"], padding=1))
    return conv2d(h, state["joint_conv.2.weight"]).reshape(-1)

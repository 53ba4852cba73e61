"""AttnGAN's and DM-GAN's G_NET and D_NET written out in NumPy, NCHW, from state dicts with the official names: the
independent reference the import is checked against. BatchNorms in eval mode (running statistics), the attention's
word mask repeated over the pixels as the official `mask.repeat(queryL, 1)`, DM-GAN's spectral norm with one power
iteration from the file's u."""

from __future__ import annotations

import numpy as np
from numpy_dfgan import conv2d, leaky


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def glu(x):
    half = x.shape[1] // 2
    return x[:, :half] * sigmoid(x[:, half:])


def batch_norm(state, prefix: str, x):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-5)
    return (x - state[f"{prefix}.running_mean"].reshape(shape)) * scale.reshape(shape) + state[
        f"{prefix}.bias"].reshape(shape)


def up_block(state, prefix: str, x):
    x = x.repeat(2, axis=2).repeat(2, axis=3)
    return glu(batch_norm(state, f"{prefix}.2", conv2d(x, state[f"{prefix}.1.weight"], padding=1)))


def softmax_rows(scores, mask_rows):
    scores = np.where(mask_rows, -np.inf, scores)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def attend(query, keys, values, padding):
    """query [B, C, H, W], keys / values [B, C, T], padding [B, T] bool: the official attention's weighted context."""
    batch, channels, height, width = query.shape
    pixels = height * width
    scores = np.einsum("bcq,bct->bqt", query.reshape(batch, channels, pixels), keys).reshape(batch * pixels, -1)
    weights = softmax_rows(scores, np.tile(padding, (pixels, 1))).reshape(batch, pixels, -1)
    return np.einsum("bct,bqt->bcq", values, weights).reshape(batch, -1, height, width)


def pointwise(state, prefix: str, x):
    """A Conv1d with kernel 1 (and bias) on [B, C, T]."""
    return np.einsum("oc,bct->bot", state[f"{prefix}.weight"][:, :, 0], x) + state[f"{prefix}.bias"][None, :, None]


def memory_refinement(state, prefix: str, h, words, padding):
    mean = h.mean(axis=(2, 3))  # [B, C]
    gate = sigmoid((words.transpose(0, 2, 1) @ state[f"{prefix}.A.weight"].T).transpose(0, 2, 1)
                   + (mean @ state[f"{prefix}.B.weight"].T)[:, :, None])  # [B, 1, T]
    memory = (np.maximum(pointwise(state, f"{prefix}.M_w.0", words), 0) * gate
              + np.maximum(pointwise(state, f"{prefix}.M_r.0", mean[:, :, None]), 0) * (1 - gate))
    key = np.maximum(pointwise(state, f"{prefix}.key.0", memory), 0)
    value = np.maximum(pointwise(state, f"{prefix}.value.0", memory), 0)
    read = attend(h, key, value, padding)
    response = sigmoid(conv2d(np.concatenate([h, read], 1), state[f"{prefix}.response_gate.0.weight"],
                              state[f"{prefix}.response_gate.0.bias"]))
    refined = h * (1 - response) + read * response
    return np.concatenate([refined, refined], 1)


def g_net(state, z, epsilon, sentence, words, padding, kind: str) -> list[np.ndarray]:
    """G_NET: every stage's image [B, 3, S, S]; words [B, D, T] (zero at padding), padding [B, T] bool."""
    x = glu(sentence @ state["ca_net.fc.weight"].T + state["ca_net.fc.bias"])
    half = x.shape[1] // 2
    c = x[:, :half] + np.exp(0.5 * x[:, half:]) * epsilon
    h = glu(batch_norm(state, "h_net1.fc.1", np.concatenate([c, z], 1) @ state["h_net1.fc.0.weight"].T))
    h = h.reshape(len(z), -1, 4, 4)
    for index in range(1, 5):
        h = up_block(state, f"h_net1.upsample{index}", h)
    images = [np.tanh(conv2d(h, state["img_net1.img.0.weight"], padding=1))]
    stage = 2
    while f"img_net{stage}.img.0.weight" in state:
        prefix = f"h_net{stage}"
        if kind == "dmgan":
            h = memory_refinement(state, prefix, h, words, padding)
        else:
            context = np.einsum("oc,bct->bot", state[f"{prefix}.att.conv_context.weight"][:, :, 0, 0], words)
            h = np.concatenate([h, attend(h, context, context, padding)], 1)
        index = 0
        while f"{prefix}.residual.{index}.block.0.weight" in state:
            block = f"{prefix}.residual.{index}.block"
            r = glu(batch_norm(state, f"{block}.1", conv2d(h, state[f"{block}.0.weight"], padding=1)))
            h = h + batch_norm(state, f"{block}.4", conv2d(r, state[f"{block}.3.weight"], padding=1))
            index += 1
        h = up_block(state, f"{prefix}.upsample", h)
        images.append(np.tanh(conv2d(h, state[f"img_net{stage}.img.0.weight"], padding=1)))
        stage += 1
    return images


def spectral_weight(state, prefix: str):
    """code/spectral.py: v = W^T u / |.|, u = W v / |.|, W / (u . W v)."""
    weight = state[f"{prefix}.module.weight_bar"]
    matrix = weight.reshape(weight.shape[0], -1)
    v = matrix.T @ state[f"{prefix}.module.weight_u"]
    v = v / (np.linalg.norm(v) + 1e-12)
    u = matrix @ v
    u = u / (np.linalg.norm(u) + 1e-12)
    return weight / (u @ matrix @ v)


def conv_block(state, prefix: str, norm: str | None, x, stride: int, padding: int, kind: str):
    if kind == "dmgan":
        return leaky(conv2d(x, spectral_weight(state, prefix), state[f"{prefix}.module.bias"], stride, padding))
    x = conv2d(x, state[f"{prefix}.weight"], stride=stride, padding=padding)
    return leaky(batch_norm(state, norm, x) if norm else x)


def d_net(state, images, kind: str) -> np.ndarray:
    """D_NET64 / 128 / 256: the 4x4 x 8 df features."""
    first = [0, 2, 4, 6] if kind == "dmgan" else [0, 2, 5, 8]
    x = images
    for index, layer in enumerate(first):
        norm = None if kind == "dmgan" or index == 0 else f"img_code_s16.{layer + 1}"
        x = conv_block(state, f"img_code_s16.{layer}", norm, x, 2, 1, kind)
    for name in ("img_code_s32", "img_code_s64"):
        if any(k.startswith(f"{name}.") for k in state):
            x = conv_block(state, f"{name}.0", f"{name}.1", x, 2, 1, kind)
    for name in ("img_code_s32_1", "img_code_s64_1", "img_code_s64_2"):
        if any(k.startswith(f"{name}.") for k in state):
            x = conv_block(state, f"{name}.0", f"{name}.1", x, 1, 1, kind)
    return x


def d_logits(state, features, sentence, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(conditional, unconditional) logits of D_GET_LOGITS, before the official sigmoid."""
    tiled = np.broadcast_to(sentence[:, :, None, None], sentence.shape + (4, 4))
    joint = conv_block(state, "COND_DNET.jointConv.0", "COND_DNET.jointConv.1", np.concatenate([features, tiled], 1),
                       1, 1, kind)
    return tuple(conv2d(x, state[f"{head}.outlogits.0.weight"], state[f"{head}.outlogits.0.bias"], stride=4).reshape(-1)
                 for x, head in ((joint, "COND_DNET"), (features, "UNCOND_DNET")))

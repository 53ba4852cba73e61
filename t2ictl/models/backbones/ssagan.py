"""SSA-GAN (Liao et al., CVPR 2022): DF-GAN's one-stage generator with semantic-spatial aware blocks.

The rules, as the official code (wtliao/text2image: model.py, main.py, miscc/losses.py, miscc/config.py,
cfg/bird.yml, cfg/coco.yml) has them:
- generator: noise z -> linear (with bias) -> 4x4 map of 8 nf channels; one SSACN block at 4x4 and one after every
  nearest x2 upsampling up to the image size, channels 8 nf while they can stay there and halving over the last
  blocks down to nf (256 px: 8-8-8-8-8-4-2-1 x nf); then BatchNorm, LeakyReLU(0.2), conv3x3 to RGB, tanh.
- semantic mask predictor: conv3x3 to 100, BatchNorm, ReLU, conv1x1 to one channel; one on the 4x4 map and one after
  every block but the last. A block takes the sigmoid of the previous prediction, upsampled bilinearly with aligned
  corners to its size, as its mask m.
- SSACN block: shortcut (a 1x1 conv when the channels change) + gamma x residual, gamma a learned scalar from 0;
  residual = affine, ReLU, conv3x3, affine, ReLU, conv3x3. The affine is a BatchNorm without its own scale and
  shift, then (1 + m gamma(s)) x + m beta(s), gamma and beta from two 2-layer MLPs (linear 256, ReLU, linear) of the
  sentence alone whose last layers start at zero.
- discriminator: DF-GAN v1's: conv3x3 to nf, then D blocks (DF-GAN's, see dfgan.py) halving the size and growing
  the channels up to 16 nf at 4x4; the head tiles the sentence: conv3x3 to 2 nf, LReLU(0.2), conv4x4 (valid) to one
  logit, no biases.
- losses (hinge): D = relu(1 - D(x_i, s_i)) + (relu(1 + D(fake_i, s_i)) + relu(1 + D(x_i, s_i+1))) / 2, the mismatched
  pairs for i < B - 1; MA-GP = 2 x mean ||(dD/dx_i, dD/ds_i)||^6 on the real pairs. G = -mean D(fake_i, s_i)
  + 0.05 x lambda x DAMSM (word + sentence, both directions; lambda 1, gamma1 5, gamma2 5, gamma3 10 from
  miscc/config.py, which cfg/*.yml do not override).
- Adam, betas (0.0, 0.9): generator lr 1e-4, discriminator (with its head) lr 4e-4; nf 64, batch 24; BatchNorm is
  synchronised across devices (sync_batchnorm).

Differences: the official loop takes the MA-GP as a second Adam step on the same batch after the hinge step; here it is
added to the discriminator loss of one step, as DF-GAN does. Weights start like PyTorch's defaults (SSA-GAN applies no
custom initialisation), as in the DF-GAN module. NHWC instead of NCHW.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from t2ictl import replicas
from t2ictl.models.backbones.configs import SSAGANConfig
from t2ictl.models.backbones.dfgan import DFGAN
from t2ictl.models.backbones.layers import (LEAKY_SLOPE, channel_shortcut, condition_mlp, generator_widths, torch_conv,
                                            torch_dense)

MASK_CHANNELS = 100  # model.py conv_mask: Conv2d(ch, 100, 3, 1, 1)


def synchronised_batch_norm(center: bool = True, scale: bool = True, name: str | None = None):
    """PyTorch BatchNorm defaults (momentum 0.1, eps 1e-5), statistics over the global batch under tf.distribute."""
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=center, scale=scale, synchronized=True,
                                     name=name)


class AlignedBilinearResize(layers.Layer):
    """F.interpolate(mode="bilinear", align_corners=True) to size x size: output i reads input i (n-1) / (size-1)."""

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def _along(self, x, axis: int):
        n = x.shape[axis]
        positions = [i * (n - 1) / (self.size - 1) if self.size > 1 else 0.0 for i in range(self.size)]
        low = [int(p) for p in positions]
        high = [min(i + 1, n - 1) for i in low]
        shape = [1, 1, 1, 1]
        shape[axis] = self.size
        frac = ops.reshape(ops.convert_to_tensor([p - i for p, i in zip(positions, low)], x.dtype), shape)
        return ops.take(x, low, axis=axis) * (1.0 - frac) + ops.take(x, high, axis=axis) * frac

    def call(self, x):
        return self._along(self._along(x, 1), 2)

    def compute_output_shape(self, shape):
        return (shape[0], self.size, self.size, shape[3])


class MaskPredictor(layers.Layer):
    """conv3x3 to 100, BatchNorm, ReLU, conv1x1 to one channel: the mask logits of the next block."""

    def __init__(self, in_channels: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = torch_conv(MASK_CHANNELS, 3, in_channels, name="conv")
        self.norm = synchronised_batch_norm(name="bn")
        self.out = torch_conv(1, 1, MASK_CHANNELS, name="out")

    def call(self, x, training=None):
        return self.out(ops.relu(self.norm(self.conv(x), training=training)))


class MaskedAffine(layers.Layer):
    """BatchNorm (no scale, no shift), then (1 + m gamma(s)) x + m beta(s) with gamma, beta from the sentence."""

    def __init__(self, channels: int, condition_dim: int, hidden: int, **kwargs):
        super().__init__(**kwargs)
        self.norm = synchronised_batch_norm(center=False, scale=False, name="bn")
        self.gamma_hidden, self.gamma_out = condition_mlp("gamma", channels, hidden, condition_dim, "zeros")
        self.beta_hidden, self.beta_out = condition_mlp("beta", channels, hidden, condition_dim, "zeros")

    def call(self, x, sentence, fusion_mask, training=None):
        x = self.norm(x, training=training)
        gamma = ops.cast(self.gamma_out(self.gamma_hidden(sentence)), x.dtype)[:, None, None, :]
        beta = ops.cast(self.beta_out(self.beta_hidden(sentence)), x.dtype)[:, None, None, :]
        return (1.0 + gamma * fusion_mask) * x + beta * fusion_mask


class SSACNBlock(layers.Layer):
    """(x, sentence, mask) -> shortcut(x) + gamma x residual."""

    def __init__(self, in_channels: int, out_channels: int, condition_dim: int, hidden: int, **kwargs):
        super().__init__(**kwargs)
        self.affine_1 = MaskedAffine(in_channels, condition_dim, hidden, name="affine_0")
        self.conv_1 = torch_conv(out_channels, 3, in_channels, name="conv_1")
        self.affine_2 = MaskedAffine(out_channels, condition_dim, hidden, name="affine_2")
        self.conv_2 = torch_conv(out_channels, 3, out_channels, name="conv_2")
        self.shortcut = channel_shortcut(in_channels, out_channels)

    def build(self, x_shape, sentence_shape, fusion_mask_shape):
        self.gamma = self.add_weight(shape=(), initializer="zeros", name="gamma")

    def call(self, x, sentence, fusion_mask, training=None):
        fusion_mask = ops.cast(fusion_mask, x.dtype)
        h = self.conv_1(ops.relu(self.affine_1(x, sentence, fusion_mask, training=training)))
        h = self.conv_2(ops.relu(self.affine_2(h, sentence, fusion_mask, training=training)))
        return (x if self.shortcut is None else self.shortcut(x)) + ops.cast(self.gamma, h.dtype) * h


class SSAGAN(DFGAN):
    config_class = SSAGANConfig
    config: SSAGANConfig
    d_width_cap = 16  # NetD: ndf x 1, 2, 4, 8, 16, 16, 16

    def build_generator(self) -> keras.Model:
        c = self.config
        nf = c.nf
        inputs = self.generator_input_layers()  # words and mask unused: SSA-GAN fuses the sentence
        x = torch_dense(4 * 4 * 8 * nf, c.z_dim, name="project")(inputs["noise"])
        x = layers.Reshape((4, 4, 8 * nf), name="to_4x4")(x)
        mask_logits = MaskPredictor(8 * nf, name="mask_initial")(x)
        widths = [8] + generator_widths(self.image_size)
        for index, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            size = 4 * 2**index
            if index > 0:
                x = layers.UpSampling2D(2, interpolation="nearest", name=f"upsample_{index}")(x)
                mask_logits = AlignedBilinearResize(size, name=f"mask_resize_{index}")(mask_logits)
            fusion_mask = layers.Activation("sigmoid", name=f"fusion_mask_{index}")(mask_logits)
            x = SSACNBlock(w_in * nf, w_out * nf, self.text_dim, c.affine_hidden, name=f"block_{index}")(
                x, inputs["sentence"], fusion_mask)
            if index < len(widths) - 2:  # every block but the last predicts the next block's mask
                mask_logits = MaskPredictor(w_out * nf, name=f"mask_after_{index}")(x)
        x = layers.LeakyReLU(LEAKY_SLOPE, name="rgb_activation")(synchronised_batch_norm(name="rgb_bn")(x))
        x = torch_conv(3, 3, nf, name="to_rgb")(x)
        image = layers.Activation("tanh", dtype="float32", name="image")(x)
        return keras.Model(inputs, {"images": [image], "mask": fusion_mask}, name="ssagan_generator")

    def mismatched_logits(self, real_features, sentence):
        """main.py: COND_DNET(real_features[:B-1], sent_emb[1:B])."""
        features, sentence = (replicas.gather(x, self.batch_blocks) for x in (real_features, sentence))
        return self.judge(features[:-1], sentence[1:])

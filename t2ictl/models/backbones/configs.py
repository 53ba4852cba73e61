"""Each backbone's recipe section `[model]`: its keys, the official defaults (with where each comes from) and their
checks. Apart from the backbones' modules, so that a recipe loads and is checked without starting TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field

from t2ictl.models.backbones.base import BackboneConfig

AUGMENTATION_NAMES = ("translation", "cutout")  # t2ictl/models/backbones/diffaugment.py AUGMENTATIONS


def _require(config: BackboneConfig, keys: tuple[str, ...], holds, requirement: str) -> None:
    """A ValueError naming the first of `keys` whose value `holds` rejects."""
    for key in keys:
        value = getattr(config, key)
        if not holds(value):
            raise ValueError(f"{key}: must be {requirement}, got {value}")


@dataclass
class DFGANConfig(BackboneConfig):
    backbone: str = "dfgan"
    nf: int = 32  # base channel width of G and D (cfg/bird.yml, cfg/coco.yml: nf: 32)
    z_dim: int = 100  # noise size (cfg/*.yml: z_dim: 100)
    g_lr: float = 1e-4  # src/train.py: Adam(netG, lr=0.0001, betas=(0.0, 0.9))
    d_lr: float = 4e-4  # src/train.py: Adam(netD + netC, lr=0.0004, betas=(0.0, 0.9))
    beta_1: float = 0.0  # src/train.py betas[0], both optimizers
    beta_2: float = 0.9  # src/train.py betas[1], both optimizers
    gp_weight: float = 2.0  # lib/modules.py MA_GP: 2.0 * mean(norm ** 6)
    gp_power: float = 6.0  # lib/modules.py MA_GP: the exponent 6
    # lib/modules.py D_Block: gamma = zeros(1), so D's body starts as an affine map of the image (RGB conv, 1x1
    # shortcuts, average pools) that sees pooled colour and place but not shape, and in a 3,000-step run the gammas
    # only reach about 0.1; the shapes recipe starts them at 1.0 (BENCHMARKS.md)
    d_gate_init: float = 0.0
    # model.py NetG: fc(noise) makes the first 4x4 map, so the sentence acts only through channel-wise affines; true
    # makes it from concat(noise, sentence), as AttnGAN's first stage does (the shapes recipe, BENCHMARKS.md)
    project_condition: bool = False
    # model.py NetC: concat(features, sentence) -> convs; true adds a projection term (Miyato and Koyama 2018), the
    # mean over the 4x4 map of <features, W sentence>, a bilinear check of the image against the sentence
    projection_head: bool = False
    # DiffAugment (Zhao et al. 2020) policies applied to every image the discriminator sees, real and generated alike:
    # "translation" (shift by up to 1/8 of the size, zero padded), "cutout" (a zeroed square of half the size)
    augment: list[str] = field(default_factory=list)
    # AttnGAN's DAMSM loss on the generated images (word and sentence terms through the frozen pretrained encoders,
    # miscc/losses.py words_loss + sent_loss), which DF-GAN drops and SSA-GAN keeps at 0.05
    damsm_weight: float = 0.0
    gamma1: float = 5.0  # SSA-GAN miscc/config.py TRAIN.SMOOTH.GAMMA1, as AttnGAN's bird.yml
    gamma2: float = 5.0
    gamma3: float = 10.0
    # the options above that leave the official rules: an import of an official file puts them back at their defaults
    departures = ("d_gate_init", "project_condition", "projection_head", "augment", "damsm_weight")

    def validate(self) -> None:
        _require(self, ("nf", "z_dim"), lambda v: v > 0, "a positive integer")
        _require(self, ("g_lr", "d_lr", "gp_power"), lambda v: v > 0, "positive")
        _require(self, ("beta_1", "beta_2"), lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        unknown = set(self.augment) - set(AUGMENTATION_NAMES)
        if unknown:
            raise ValueError(f"augment: unknown {sorted(unknown)}, choose from {list(AUGMENTATION_NAMES)}")
        _require(self, ("gp_weight", "damsm_weight"), lambda v: v >= 0, "zero or positive")
        _require(self, ("gamma1", "gamma2", "gamma3"), lambda v: v > 0, "positive")


@dataclass
class SSAGANConfig(DFGANConfig):
    backbone: str = "ssagan"
    nf: int = 64  # cfg/bird.yml, cfg/coco.yml TRAIN.NF
    affine_hidden: int = 256  # model.py affine: Linear(256, 256), ReLU, Linear(256, C)
    damsm_weight: float = 0.05  # main.py: 0.05 x DAMSM_loss, whose terms carry TRAIN.SMOOTH.LAMBDA = 1.0

    def validate(self) -> None:
        super().validate()
        _require(self, ("affine_hidden",), lambda v: v > 0, "a positive integer")


@dataclass
class AttnGANConfig(BackboneConfig):
    backbone: str = "attngan"
    stages: int = 3  # cfg TREE.BRANCH_NUM: 64, 128, 256 px
    gf_dim: int = 32  # cfg GAN.GF_DIM (bird 32, coco 48)
    df_dim: int = 64  # cfg GAN.DF_DIM (bird 64, coco 96)
    z_dim: int = 100  # cfg GAN.Z_DIM
    condition_dim: int = 100  # cfg GAN.CONDITION_DIM
    residual_blocks: int = 2  # cfg GAN.R_NUM (bird 2, coco 3)
    g_lr: float = 2e-4  # cfg TRAIN.GENERATOR_LR
    d_lr: float = 2e-4  # cfg TRAIN.DISCRIMINATOR_LR
    beta_1: float = 0.5  # trainer.py: Adam betas (0.5, 0.999)
    beta_2: float = 0.999
    damsm_weight: float = 5.0  # cfg TRAIN.SMOOTH.LAMBDA (bird 5, coco 50)
    gamma1: float = 4.0  # cfg TRAIN.SMOOTH.GAMMA1
    gamma2: float = 5.0  # GAMMA2
    gamma3: float = 10.0  # GAMMA3
    kl_weight: float = 1.0  # trainer.py: errG_total += KL_loss(mu, logvar)
    batch_shared_mask: bool = False  # the official attention's word mask (see the module docstring); imports set it

    def validate(self) -> None:
        _require(self, ("stages", "gf_dim", "df_dim", "z_dim", "condition_dim", "residual_blocks"), lambda v: v > 0,
                 "a positive integer")
        _require(self, ("g_lr", "d_lr", "gamma1", "gamma2", "gamma3"), lambda v: v > 0, "positive")
        _require(self, ("beta_1", "beta_2"), lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        _require(self, ("damsm_weight", "kl_weight"), lambda v: v >= 0, "zero or positive")

    def image_sizes(self, image_size: int) -> list[int]:
        return [image_size // 2**k for k in reversed(range(self.stages))]


@dataclass
class DMGANConfig(AttnGANConfig):
    backbone: str = "dmgan"
    gf_dim: int = 64  # cfg/bird_DMGAN.yml, coco_DMGAN.yml GAN.GF_DIM
    df_dim: int = 32  # GAN.DF_DIM
    residual_blocks: int = 2  # GAN.R_NUM (bird 2, coco 3)
    damsm_weight: float = 5.0  # TRAIN.SMOOTH.LAMBDA (bird 5, coco 50)


@dataclass
class GALIPConfig(BackboneConfig):
    backbone: str = "galip"
    clip: str = "clip/ViT-B-32.pt"  # cfg/*.yml clip4trn: OpenAI ViT-B/32 (see t2ictl/models/clip.py for the forms)
    nf: int = 64  # cfg/birds.yml, cfg/coco.yml: nf: 64
    z_dim: int = 100  # cfg/*.yml: z_dim: 100
    g_lr: float = 1e-4  # cfg/*.yml lr_g: 0.0001
    d_lr: float = 4e-4  # cfg/*.yml lr_d: 0.0004 (netD + netC)
    beta_1: float = 0.0  # src/train.py: Adam betas=(0.0, 0.9), both optimizers
    beta_2: float = 0.9
    gp_weight: float = 2.0  # lib/modules.py MA_GP_FP32: 2.0 * mean(norm ** 6)
    gp_power: float = 6.0
    sim_weight: float = 4.0  # cfg/*.yml sim_w: 4.0
    mapper_channels: int = 64  # models/GALIP.py NetG: code_ch = 64
    mapper_mid_channels: int = 32  # models/GALIP.py NetG: mid_ch = 32
    mapper_blocks: int = 4  # models/GALIP.py NetG: CLIP_Adapter(..., map_num=4)
    align_temperature: float = 0.07  # CLIP's initial logit scale 1/0.07 (the sentence projection's InfoNCE)
    # the official architecture where this module departs from it (see "Adaptations"); `t2ictl import galip` sets them
    clip_text: bool = False  # the text encoder is CLIP's text tower: the CLIP similarity takes the sentence itself
    final_size: int = 0  # the last G block's size; 0: data.image_size (official: 224, CLIP's input, on 256-px data)
    rgb_tanh: bool = True  # tanh after the RGB conv (official: none; sampling clips to [-1, 1])
    clip_input: str = "bilinear"  # how images reach the ViT: bilinear | official (nearest, [-1, 1] mapped twice)

    def validate(self) -> None:
        if not isinstance(self.clip, str) or not self.clip.strip():
            raise ValueError('clip: must name "tiny", OpenAI\'s ViT-B-32.pt, a .npz or .weights.h5 file, a SavedModel '
                             'folder or a TF-Hub handle')
        _require(self, ("nf", "z_dim", "mapper_channels", "mapper_mid_channels", "mapper_blocks"), lambda v: v > 0,
                 "a positive integer")
        _require(self, ("g_lr", "d_lr", "gp_power", "align_temperature"), lambda v: v > 0, "positive")
        _require(self, ("beta_1", "beta_2"), lambda v: 0.0 <= v < 1.0, "in [0, 1)")
        _require(self, ("gp_weight", "sim_weight", "final_size"), lambda v: v >= 0, "zero or positive")
        if self.clip_input not in ("bilinear", "official"):
            raise ValueError(f'clip_input: must be "bilinear" or "official", got {self.clip_input!r}')


CONFIGS = {"dfgan": DFGANConfig, "ssagan": SSAGANConfig, "attngan": AttnGANConfig, "dmgan": DMGANConfig,
           "galip": GALIPConfig}

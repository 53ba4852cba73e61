"""`t2ictl import`: the field's released PyTorch files (DAMSM encoders, generator checkpoints) as t2ictl runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from t2ictl.commands import common
from t2ictl.console import console, table

import_app = typer.Typer(help="Import the field's released PyTorch files as t2ictl runs (read safely: no file can "
                         "run code, torch is not needed).", no_args_is_help=True, rich_markup_mode=None)

TEXT_ENCODER_HELP = "AttnGAN's DAMSM text encoder (RNN_ENCODER), e.g. text_encoder200.pth (birds), text_encoder100.pth."
CAPTIONS_HELP = "The captions pickle the encoder was trained with (captions.pickle; DF-GAN's captions_DAMSM.pickle)."
IMAGE_ENCODER_HELP = ("Its DAMSM image encoder (CNN_ENCODER), e.g. image_encoder200.pth; needed for R-precision, "
                      "the contrastive loss and AttnGAN's or SSA-GAN's DAMSM loss.")
IMPORT_RECIPE_HELP = ("The recipe whose data the encoders will serve (its max words and image size), a name or a "
                      ".toml path.")
OVERWRITE_HELP = "Replace what an earlier import wrote in --run-dir."
TrainingRunOption = typer.Option(..., "--run-dir", help="The run directory to write (a training run).")
OverwriteOption = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)


@import_app.command("damsm")
def damsm(
    text_encoder: Path = typer.Option(..., "--text-encoder", help=TEXT_ENCODER_HELP),
    captions: Path = typer.Option(..., "--captions", help=CAPTIONS_HELP),
    image_encoder: Optional[Path] = typer.Option(None, "--image-encoder", help=IMAGE_ENCODER_HELP),
    run_dir: Path = typer.Option(..., "--run-dir", help="The run directory to write (recipe, vocabulary, encoders/)."),
    recipe: str = typer.Option("cub", "--recipe", "-r", help=IMPORT_RECIPE_HELP),
    set_: Optional[List[str]] = common.SetOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Import released DAMSM encoders and their vocabulary as the encoders of a run.

    The run then serves `t2ictl train --set train.encoders=RUN_DIR` (every DAMSM-based backbone trains on the field's
    standard encoders) and R-precision in `t2ictl score`. Captions are tokenized as the official loaders do: lower
    case, word characters, non-ASCII letters removed, words outside the vocabulary dropped.
    """
    from t2ictl.interop import damsm as damsm_files

    done = damsm_files.import_encoders(text_encoder, image_encoder, captions, run_dir, recipe, set_ or [], overwrite)
    train_count, test_count = done["captions"]
    console.print(table(f"imported DAMSM encoders into {run_dir}", ["item", "value"], [
        ("vocabulary", f"{len(done['vocab']) - 1} words + <end> (official ids)"),
        ("captions pickle", f"{train_count} train, {test_count} test captions"),
        ("text encoder", f"bi-LSTM, {done['text_dim']}-d words and sentences"),
        ("image encoder", "torchvision Inception-v3" if done["image"] else "none (no --image-encoder)"),
        ("recipe", f"{done['recipe'].name}: {done['recipe'].data.max_words} words, "
                   f"{done['recipe'].data.image_size} px"),
    ]))
    console.print(f"train on them with: t2ictl train --recipe {recipe} --set train.encoders={run_dir}")


@import_app.command("dfgan")
def dfgan(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="DF-GAN's checkpoint (tobran/DF-GAN "
                                    "state_epoch_XXX.pth: netG, netD, netC and, when saved, both Adam states)."),
    text_encoder: Path = typer.Option(..., "--text-encoder", help=TEXT_ENCODER_HELP),
    captions: Path = typer.Option(..., "--captions", help=CAPTIONS_HELP),
    image_encoder: Optional[Path] = typer.Option(None, "--image-encoder", help=IMAGE_ENCODER_HELP),
    recipe: str = typer.Option(..., "--recipe", "-r", help="The recipe of the data the model was trained on (cub, "
                               "coco, or a .toml path); the file's sizes (nf, z_dim, image size) override it."),
    run_dir: Path = TrainingRunOption,
    set_: Optional[List[str]] = common.SetOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Import a DF-GAN checkpoint as a training run that sample, export, score and train --resume accept.

    The run keeps the official architecture (the embedded recipe's d_gate_init and project_condition stay off) and
    the released text encoder's features as they are; its EMA generator starts at the official netG. Without
    --image-encoder the run has no R-precision and trains on without the contrastive loss.
    """
    from t2ictl.interop import dfgan as dfgan_files
    from t2ictl.interop.mapping import DamsmFiles

    done = dfgan_files.import_checkpoint(checkpoint, DamsmFiles(text_encoder, captions, image_encoder), run_dir,
                                         recipe, set_ or [], overwrite)
    model = done["recipe"].model
    console.print(table(f"imported DF-GAN into {run_dir}", ["item", "value"], [
        ("generator", f"nf {model.nf}, z {model.z_dim}, {done['recipe'].data.image_size} px"),
        ("parameters", done["parameters"]),
        ("epoch in the file", "-" if done["epoch"] is None else done["epoch"]),
        ("Adam state", f"yes, step {done['step']}" if done["adam"] else "none in the file (restarts at step 0)"),
        ("image encoder", "yes" if done["image"] else "none (no R-precision, no contrastive loss)"),
        ("checkpoint", done["checkpoint"]),
    ]))
    console.print(f"sample with: t2ictl sample \"a caption\" --run {run_dir}")


DISCRIMINATOR_HELP = ("A trainer's discriminator of one stage, in stage order: --discriminator netD0.pth "
                      "--discriminator netD1.pth --discriminator netD2.pth. Without them the run's discriminators "
                      "start fresh.")
RELEASE_IMAGE_ENCODER_HELP = ("Its DAMSM image encoder (CNN_ENCODER), e.g. image_encoder200.pth (birds), "
                              "image_encoder100.pth (COCO): the backbone's DAMSM loss and R-precision need it.")
RELEASE_RECIPE_HELP = ("The recipe of the data the model was trained on (cub, coco, or a .toml path); cub and coco "
                       "take their -attngan / -dmgan sibling, and the file's sizes (stages, gf, z, residual blocks) "
                       "override it.")


def _import_attngan_family(kind: str, checkpoint: Path, discriminator: list[Path], text_encoder: Path,
                           captions: Path, image_encoder: Path, recipe: str, run_dir: Path, set_: list[str],
                           overwrite: bool) -> None:
    from t2ictl.interop import attngan as attngan_files
    from t2ictl.interop.mapping import DamsmFiles

    done = attngan_files.import_generator(kind, checkpoint, discriminator, DamsmFiles(text_encoder, captions,
                                                                                       image_encoder),
                                          run_dir, recipe, set_, overwrite)
    model, data = done["recipe"].model, done["recipe"].data
    console.print(table(f"imported {attngan_files.NAMES[kind]} into {run_dir}", ["item", "value"], [
        ("recipe", done["recipe"].name),
        ("generator", f"{model.stages} stages up to {data.image_size} px, gf {model.gf_dim}, z {model.z_dim}, "
                      f"{model.residual_blocks} residual blocks"),
        ("discriminators", f"{done['discriminators']} from the files (df {model.df_dim})" if done["discriminators"]
         else f"fresh (df {model.df_dim}): no --discriminator given"),
        ("parameters", done["parameters"]),
        ("epoch in the name", "-" if done["epoch"] is None else done["epoch"]),
        ("Adam state", "none in the files (restarts at step 0)"),
        ("word mask", "shared across the batch, as the official attention (model.batch_shared_mask)"),
        ("checkpoint", done["checkpoint"]),
    ]))
    console.print(f"sample with: t2ictl sample \"a caption\" --run {run_dir}")


def _attngan_family_command(kind: str, checkpoint_help: str, doc: str):
    """The `import attngan` / `import dmgan` command: the same options, the generator file named as its README does."""
    def command(
        checkpoint: Path = typer.Option(..., "--checkpoint", help=checkpoint_help),
        discriminator: Optional[List[Path]] = typer.Option(None, "--discriminator", help=DISCRIMINATOR_HELP),
        text_encoder: Path = typer.Option(..., "--text-encoder", help=TEXT_ENCODER_HELP),
        captions: Path = typer.Option(..., "--captions", help=CAPTIONS_HELP),
        image_encoder: Path = typer.Option(..., "--image-encoder", help=RELEASE_IMAGE_ENCODER_HELP),
        recipe: str = typer.Option(..., "--recipe", "-r", help=RELEASE_RECIPE_HELP),
        run_dir: Path = TrainingRunOption,
        set_: Optional[List[str]] = common.SetOption,
        overwrite: bool = OverwriteOption,
    ) -> None:
        _import_attngan_family(kind, checkpoint, discriminator or [], text_encoder, captions, image_encoder, recipe,
                               run_dir, set_ or [], overwrite)

    command.__doc__ = doc
    return command


import_app.command("attngan")(_attngan_family_command(
    "attngan", "AttnGAN's generator: bird_AttnGAN2.pth, coco_AttnGAN2.pth, or a trainer's netG_epoch_N.pth "
    "(taoxugit/AttnGAN).",
    """Import a released AttnGAN generator (and its discriminators) as a training run.

    The run keeps the official architecture and its word mask shared across the batch (so that it draws what the
    released model draws for the same batch); its EMA generator is the file's generator, which the official trainer
    saves averaged. sample, export, score and train --resume accept it.
    """))
import_app.command("dmgan")(_attngan_family_command(
    "dmgan", "DM-GAN's generator: bird_DMGAN.pth, coco_DMGAN.pth, or a trainer's netG_epoch_N.pth "
    "(MinfengZhu/DM-GAN).",
    """Import a released DM-GAN generator (and its spectrally normalised discriminators) as a training run.

    As `t2ictl import attngan`: the official architecture, the word mask shared across the batch, the EMA generator
    at the file's (averaged) generator; sample, export, score and train --resume accept the run.
    """))


@import_app.command("ssagan")
def ssagan(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="SSA-GAN's generator, a trainer's netG_XXX.pth "
                                    "(wtliao/text2image), e.g. the released netG_550.pth."),
    discriminator: Optional[Path] = typer.Option(None, "--discriminator", help="Its discriminator netD_XXX.pth; "
                                                 "without it the run's discriminator starts fresh."),
    text_encoder: Path = typer.Option(..., "--text-encoder", help=TEXT_ENCODER_HELP),
    captions: Path = typer.Option(..., "--captions", help=CAPTIONS_HELP),
    image_encoder: Path = typer.Option(..., "--image-encoder", help=RELEASE_IMAGE_ENCODER_HELP),
    recipe: str = typer.Option(..., "--recipe", "-r", help="The recipe of the data the model was trained on (cub, "
                               "coco, or a .toml path); cub and coco take their -ssagan sibling, and the file's "
                               "sizes (nf, z_dim, image size) override it."),
    run_dir: Path = TrainingRunOption,
    set_: Optional[List[str]] = common.SetOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Import SSA-GAN's generator (and discriminator) as a training run that sample, export, score and train
    --resume accept; its EMA generator starts at the file's NetG (SSA-GAN keeps no average)."""
    from t2ictl.interop import ssagan as ssagan_files
    from t2ictl.interop.mapping import DamsmFiles

    done = ssagan_files.import_generator(checkpoint, discriminator, DamsmFiles(text_encoder, captions, image_encoder),
                                         run_dir, recipe, set_ or [], overwrite)
    model = done["recipe"].model
    console.print(table(f"imported SSA-GAN into {run_dir}", ["item", "value"], [
        ("recipe", done["recipe"].name),
        ("generator", f"nf {model.nf}, z {model.z_dim}, {done['recipe'].data.image_size} px"),
        ("discriminator", "from the file" if done["discriminator"] else "fresh: no --discriminator given"),
        ("parameters", done["parameters"]),
        ("epoch in the name", "-" if done["epoch"] is None else done["epoch"]),
        ("Adam state", "none in the files (restarts at step 0)"),
        ("checkpoint", done["checkpoint"]),
    ]))
    console.print(f"sample with: t2ictl sample \"a caption\" --run {run_dir}")


@import_app.command("galip")
def galip(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="GALIP's checkpoint (tobran/GALIP): a trainer's "
                                    "state_epoch_XXX.pth or a released model the README puts in "
                                    "saved_models/pretrained/ (netG, netD, netC and, when saved, both Adam states)."),
    clip: Path = typer.Option(..., "--clip", help="The CLIP GALIP froze: OpenAI's ViT-B-32.pt as released (a "
                              "TorchScript archive, read without running it); its text tower encodes the captions, "
                              "its ViT runs inside the generator and the discriminator."),
    bpe: Optional[Path] = typer.Option(None, "--bpe", help="CLIP's BPE vocabulary bpe_simple_vocab_16e6.txt.gz; "
                                       "default: the one of an installed clip package (openai-clip, clip-anytorch)."),
    recipe: str = typer.Option(..., "--recipe", "-r", help="The recipe of the data the model was trained on (cub, "
                               "coco, or a .toml path); cub and coco take their -galip sibling, and the file's sizes "
                               "(nf, z_dim, mapper, image size) override it."),
    run_dir: Path = TrainingRunOption,
    set_: Optional[List[str]] = common.SetOption,
    overwrite: bool = OverwriteOption,
) -> None:
    """Import a GALIP checkpoint and its CLIP as a training run that sample, export, score and train --resume accept.

    The run keeps the official architecture (CLIP's text embedding as the condition, 224-px images, no tanh, CLIP's
    input as the official code prepares it); training on, the contrastive loss reads the fakes with the same CLIP.
    """
    from t2ictl.interop import galip as galip_files

    done = galip_files.import_checkpoint(checkpoint, clip, bpe, run_dir, recipe, set_ or [], overwrite)
    model = done["recipe"].model
    console.print(table(f"imported GALIP into {run_dir}", ["item", "value"], [
        ("recipe", done["recipe"].name),
        ("generator", f"nf {model.nf}, z {model.z_dim}, {model.final_size}-px images from "
                      f"{done['recipe'].data.image_size}-px data"),
        ("text encoder", f"CLIP's text tower, {done['recipe'].pretrain.text_dim}-d sentences, BPE vocabulary"),
        ("parameters", done["parameters"]),
        ("epoch in the file", "-" if done["epoch"] is None else done["epoch"]),
        ("Adam state", f"yes, step {done['step']}" if done["adam"] else "none in the file (restarts at step 0)"),
        ("checkpoint", done["checkpoint"]),
    ]))
    console.print(f"sample with: t2ictl sample \"a caption\" --run {run_dir}")

"""Phase 1: DAMSM pretraining of the text and image encoders, with label-guided supervised contrast.

Two branches share one text encoder and one image encoder: branch A is a batch of (image, caption, label), branch B a
batch whose i-th example shares a label with A's i-th. Running both through the same models is running the models once
on the concatenated batch [A; B], which is what the step does. The DAMSM word and sentence losses (AttnGAN) are computed
over the whole 2B batch; the supervised contrastive loss sees the features of both branches together, across modalities:
with `contrastive.pretrain_features = "both"` the pool is [image features; sentence features] (4B rows) and positives
are rows whose labels match, plus each image with its own caption (so an image with no label still has a positive).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from t2ictl.console import console
from t2ictl.errors import UserError
from t2ictl.data import pipeline
from t2ictl.data.vocab import GraphTokenizer, Vocabulary
from t2ictl.evaluation.representation import retrieval_metrics
from t2ictl.losses import damsm
from t2ictl.models.image_encoder import build_image_encoder
from t2ictl.models.text_encoder import build_text_encoder, encode_captions
from t2ictl.recipes import Recipe
from t2ictl.runs import RunDir, find_encoders, load_encoders, save_encoders
from t2ictl.training import branches, distribute, loop
from t2ictl.training.loop import Phase


class EpochDecay(keras.optimizers.schedules.LearningRateSchedule):
    """AttnGAN's encoder schedule: multiply by `decay` after every epoch while above initial / 10."""

    def __init__(self, initial: float, decay: float, steps_per_epoch: int):
        self.initial, self.decay, self.steps_per_epoch = initial, decay, steps_per_epoch
        # lr stays above initial/10: the number of decays is capped where decay**n first reaches 1/10
        self.max_decays = float(np.ceil(np.log(0.1) / np.log(decay))) if decay < 1 else 0.0

    def __call__(self, step):
        epoch = tf.cast(step, tf.float32) // float(self.steps_per_epoch)
        return self.initial * tf.pow(self.decay, tf.minimum(epoch, self.max_decays))

    def get_config(self):
        return {"initial": self.initial, "decay": self.decay, "steps_per_epoch": self.steps_per_epoch}


class PretrainPhase(Phase):
    name = "pretrain"

    def __init__(self, recipe: Recipe, vocab: Vocabulary, manifest: dict, data_dir: Path, run: RunDir,
                 steps_per_epoch: int):
        self.recipe, self.vocab, self.manifest, self.data_dir, self.run = recipe, vocab, manifest, data_dir, run
        self.config = recipe.pretrain
        self.paired = recipe.contrastive.enabled
        self.multi_label = bool(manifest["multi_label"])
        self.steps_per_epoch = steps_per_epoch
        self.images_per_step = branches.images_per_step(recipe)

    def build(self) -> None:
        c = self.config
        self.text_encoder = build_text_encoder(len(self.vocab), self.recipe.data.max_words, c.embedding_dim,
                                               c.text_dim, c.text_dropout)
        self.text_encoder.get_layer("dropout").batch_blocks = 2 if self.paired else 1  # the merged batch [A; B]
        train_trunk = "false" if c.init and c.train_trunk == "auto" else c.train_trunk  # the init's trunk is trained
        self.image_encoder = build_image_encoder(c.image_trunk, self.recipe.data.image_size, c.text_dim,
                                                 c.image_weights, train_trunk, c.small_trunk_width)
        if c.init:
            self.start_from(Path(c.init))
        self.label_head = None
        if self.paired and self.recipe.contrastive.loss == "classifier":
            self.label_head = branches.label_head(len(self.manifest["classes"]), c.text_dim, "label_head")
        schedule = EpochDecay(c.learning_rate, c.lr_decay, self.steps_per_epoch)
        self.optimizer = distribute.optimizer(keras.optimizers.Adam(schedule, beta_1=c.beta_1, beta_2=c.beta_2))
        self.optimizer.build(self.text_encoder.trainable_variables + self.image_encoder.trainable_variables
                             + self.head_variables)

    @property
    def head_variables(self) -> list:
        return [] if self.label_head is None else self.label_head.trainable_variables

    def trackables(self) -> dict:
        heads = {} if self.label_head is None else {"label_head": self.label_head}
        return {"text_encoder": self.text_encoder, "image_encoder": self.image_encoder, "optimizer": self.optimizer,
                **heads}

    def start_from(self, path: Path) -> None:
        """Weights of the encoders in `path` (a calibrated text encoder's Rescaling layers hold none)."""
        folder = find_encoders(path)
        encoders, info = load_encoders(folder, self.recipe)
        self.init_scales = (float(info.get("sentence_scale", 1.0)), float(info.get("word_scale", 1.0)))
        for ours, theirs in ((self.text_encoder, encoders.text), (self.image_encoder, encoders.image)):
            try:
                ours.set_weights(theirs.get_weights())
            except ValueError as exc:
                raise UserError(f"pretrain.init: the {ours.name} in {folder} does not fit the recipe's: "
                                f"{str(exc).splitlines()[0]}") from None

    def losses(self, batch: dict, training: bool) -> dict:
        """All loss terms of one merged batch."""
        c = self.config
        text = self.text_encoder(batch["tokens"], training=training)
        image = self.image_encoder(batch["image"], training=training)
        class_ids = None if self.multi_label else batch["class_id"]
        word0, word1 = damsm.word_loss(text["words"], batch["lengths"], image["regions"], c.gamma1, c.gamma2,
                                       c.gamma3, class_ids)
        sent0, sent1 = damsm.sentence_loss(image["global"], text["sentence"], c.gamma3, class_ids)
        terms = {"word": word0 + word1, "sentence": sent0 + sent1}
        total = terms["word"] + terms["sentence"]
        if self.paired:
            name = self.recipe.contrastive.loss
            terms[name] = self.contrastive_loss(image["global"], text["sentence"], batch)
            total += self.recipe.contrastive.pretrain_weight * terms[name]
        terms["loss"] = total
        return terms

    def contrastive_loss(self, image_features, sentence_features, batch):
        """contrastive.loss over the phase-1 features: SupCon or the label head over the pretrain_features pool, or
        the UniCL-style loss over the image-sentence pairs."""
        config = self.recipe.contrastive
        if config.loss == "unicl":
            return branches.image_text_loss(image_features, sentence_features, batch, self.recipe, self.multi_label,
                                            config.pretrain_temperature)
        pools = {"image": [image_features], "text": [sentence_features],
                 "both": [image_features, sentence_features]}[config.pretrain_features]
        if config.loss == "classifier":
            return branches.classifier_loss(self.label_head, tf.concat(pools, axis=0), batch, self.multi_label,
                                            groups=len(pools))
        return branches.contrastive_loss(tf.concat(pools, axis=0), batch, self.recipe, self.multi_label,
                                         config.pretrain_temperature, groups=len(pools))

    def train_step(self, batch) -> dict:
        merged = branches.merge_branches(batch, self.paired)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        text_vars = self.text_encoder.trainable_variables
        other_vars = self.image_encoder.trainable_variables + self.head_variables
        with tf.GradientTape() as tape:
            terms = self.losses(merged, training=True)
            scaled = self.optimizer.scale_loss(terms["loss"] / replicas)
        grads = tape.gradient(scaled, text_vars + other_vars)
        text_grads = self.clipped(grads[: len(text_vars)], replicas)
        self.optimizer.apply_gradients(zip(text_grads + grads[len(text_vars):], text_vars + other_vars))
        return terms

    def clipped(self, grads: list, replicas: int) -> list:
        """The text encoder's gradients clipped by the global norm of the whole batch's gradient, on any number of
        replicas: each replica clips the sum over replicas and hands on its share, which the optimizer sums again.
        Dense, as PyTorch's nn.Embedding gives AttnGAN: Keras's Adam squares a sparse gradient once per occurrence of
        a token, not once per row, which is neither the official rule nor the same on every replica count."""
        grads = [tf.convert_to_tensor(g) for g in grads]
        if replicas > 1:
            grads = tf.distribute.get_replica_context().all_reduce("sum", grads)
        # Clipping scaled gradients at a threshold scaled alike equals clipping the true ones (loss scaling).
        threshold = self.config.text_grad_clip * self.optimizer.scale_loss(tf.constant(1.0))
        clipped, _ = tf.clip_by_global_norm(grads, threshold)
        return [g / replicas for g in clipped]

    # -- evaluation --------------------------------------------------------------------------------------------------

    def encode_split(self, split: str = "test") -> dict[str, np.ndarray]:
        """Global image features, sentence features and labels of up to eval_examples held-out examples."""
        dataset = pipeline.eval_dataset(self.data_dir, self.recipe.data, self.vocab, split=split, caption="first")
        images, sentences, labels = [], [], []
        seen = 0
        for batch in dataset:
            images.append(self.image_encoder(batch["image"], training=False)["global"].numpy())
            sentences.append(self.text_encoder(batch["tokens"], training=False)["sentence"].numpy())
            labels.append(batch["labels"].numpy())
            seen += len(images[-1])
            if seen >= self.config.eval_examples:
                break
        limit = self.config.eval_examples
        return {"image": np.concatenate(images)[:limit], "sentence": np.concatenate(sentences)[:limit],
                "labels": np.concatenate(labels)[:limit]}

    def evaluate(self) -> dict[str, float]:
        if not self.manifest["splits"]["test"]["examples"]:
            return {}  # nothing held out (prepare noted the empty test split)
        return retrieval_metrics(**self.encode_split())

    def export(self) -> None:
        if self.config.init:  # what was trained on the init's features (an imported generator) expects their scale
            scales = self.init_scales
        else:
            scales = text_feature_scales(self.text_encoder, self.data_dir, self.recipe, self.vocab)
        save_encoders(self.run.encoders, calibrated_text_encoder(self.text_encoder, *scales), self.image_encoder,
                      self.recipe, scales, vocab=self.vocab)  # the encoders carry their vocabulary when copied


def text_feature_scales(text_encoder: keras.Model, data_dir: Path, recipe: Recipe, vocab: Vocabulary,
                        limit: int = 4096) -> tuple[float, float]:
    """1 / RMS of the sentence features and of the word features (real tokens only) over up to `limit` training
    captions."""
    tokenizer = GraphTokenizer(vocab, recipe.data.max_words)
    captions = pipeline.split_captions(data_dir, "train", max_images=limit)[:limit]
    sums, counts = np.zeros(2), np.zeros(2)
    for tokens, out in encode_captions(text_encoder, tokenizer, captions):
        real = tokens != 0
        sums += [np.sum(np.square(out["sentence"].numpy())), np.sum(np.square(out["words"].numpy()[real]))]
        counts += [out["sentence"].shape[0] * out["sentence"].shape[1], real.sum() * out["words"].shape[-1]]
    rms = np.sqrt(sums / np.maximum(counts, 1))
    return tuple(float(1.0 / max(r, 1e-6)) for r in rms)


def calibrated_text_encoder(text_encoder: keras.Model, sentence_scale: float, word_scale: float) -> keras.Model:
    """The text encoder with its outputs scaled to unit RMS per dimension on the training captions.

    The GAN phase concatenates the sentence with noise z ~ N(0, I) as the generator's condition. The DAMSM and SupCon
    losses are cosine similarities, blind to the features' scale, so a briefly pretrained LSTM leaves sentence
    features with an RMS near 0.07, which the noise then drowns: the generator ignores the text and the embedded run
    collapses. A fixed scale puts text and noise on the same footing and leaves every cosine-based use unchanged.
    """
    tokens = keras.Input(shape=text_encoder.input_shape[1:], dtype="int32", name="tokens")
    out = text_encoder(tokens)
    words = keras.layers.Rescaling(word_scale, name="words")(out["words"])
    sentence = keras.layers.Rescaling(sentence_scale, name="sentence")(out["sentence"])
    return keras.Model(tokens, {"words": words, "sentence": sentence}, name="calibrated_text_encoder")


def pretrain(recipe: Recipe, data_dir: Path, manifest: dict, run: RunDir,
             strategy: tf.distribute.Strategy | None = None) -> dict[str, float]:
    """Run (or resume) phase 1 in `run`; the encoders end up in run.encoders."""
    strategy = loop.prepare_runtime(recipe.runtime, strategy)
    steps_per_epoch = pipeline.steps_per_epoch(manifest, recipe.data, paired=recipe.contrastive.enabled)
    config = recipe.pretrain
    schedule = loop.Schedule(total_steps=config.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                             log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                             keep_checkpoints=config.keep_checkpoints, eval_every=config.eval_every)
    note = branches.positives_note(manifest, recipe)
    if note:
        console.print(note, markup=False)
    phase = PretrainPhase(recipe, run.vocab(), manifest, data_dir, run, steps_per_epoch)
    return loop.run(phase, branches.dataset_fn(data_dir, recipe, run.vocab()), run, schedule, strategy,
                    jit_compile=recipe.runtime.xla)

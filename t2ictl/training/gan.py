"""Phase 2: a backbone's GAN trained on the frozen pretrained encoders, with the supervised contrastive framework.

Both branches of the paired batch run the same generator and discriminator, which is one run on the merged batch
[A; B]. Per step, as DF-GAN and AttnGAN do: the generator makes images once; the discriminator takes one step on them
(cut from the generator's graph); then the generator takes one step against the updated discriminator. The framework
encodes the final generated images of both branches with the frozen pretrained image encoder and adds
gan_weight x SupCon(features, labels) to the generator loss (or an ablation's loss: contrastive.loss). An EMA of the
generator weights is kept for sampling.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from t2ictl import runs
from t2ictl.console import console
from t2ictl.data import pipeline
from t2ictl.data.prepare import load_manifest
from t2ictl.data.vocab import Vocabulary
from t2ictl.errors import UserError
from t2ictl.models import backbones
from t2ictl.losses.mode_seeking import mode_seeking_loss
from t2ictl.models.text_encoder import TextFeatures, text_features
from t2ictl.recipes import Recipe
from t2ictl.recipes.schema import LABEL_LOSSES
from t2ictl.runs import RunDir
from t2ictl.training import branches, distribute, loop
from t2ictl.training.loop import Phase


class GANPhase(Phase):
    name = "train"

    def __init__(self, recipe: Recipe, vocab: Vocabulary, manifest: dict, data_dir: Path, run: RunDir,
                 encoders_dir: Path):
        self.recipe, self.vocab, self.manifest, self.data_dir, self.run = recipe, vocab, manifest, data_dir, run
        self.encoders_dir = encoders_dir
        self.paired = recipe.contrastive.enabled
        self.multi_label = bool(manifest["multi_label"])
        self.images_per_step = branches.images_per_step(recipe)
        self._sampler = None

    def build(self) -> None:
        self.encoders, info = runs.load_encoders(self.encoders_dir, self.recipe)
        self.backbone = runs.build_backbone(self.recipe, self.encoders, info["text_dim"])
        contrastive_needs_encoder = self.recipe.contrastive.enabled and not self.backbone.has_image_embedding
        if self.encoders.image is None and (self.backbone.uses_image_encoder or contrastive_needs_encoder):
            needs = "the contrastive loss" if contrastive_needs_encoder else f"{self.backbone.name}'s losses"
            raise UserError(f"{needs} read images with the DAMSM image encoder, and the encoders in "
                            f"{self.encoders_dir} have none; import them with --image-encoder")
        self.backbone.batch_blocks = 2 if self.paired else 1  # the merged batch [A; B]
        self.backbone.build()
        self.generator = self.backbone.generator
        self.label_head = None
        if self.paired and self.recipe.contrastive.loss == "classifier":
            self.label_head = branches.label_head(len(self.manifest["classes"]), info["text_dim"], "gan_label_head")
        self.g_optimizer, self.d_optimizer = build_optimizers(self.backbone, self.head_variables)
        self.ema_generator = self.backbone.build_generator()
        self.ema_generator.set_weights(self.generator.get_weights())
        self.sizes = sorted(self.recipe.model.image_sizes(self.recipe.data.image_size))

    @property
    def head_variables(self) -> list:
        """The label head of contrastive.loss = "classifier", trained beside the discriminator."""
        return [] if self.label_head is None else self.label_head.trainable_variables

    def trackables(self) -> dict:
        heads = {} if self.label_head is None else {"label_head": self.label_head}
        return {**self.backbone.trackables(), "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer,
                "ema_generator": self.ema_generator, **heads}

    def draw_noise(self, count):
        """This replica's noise for the merged rows [A; B]; with contrastive.shared_noise, B's rows repeat A's."""
        seed, dim = self.recipe.runtime.seed, self.backbone.noise_dim
        if not (self.paired and self.recipe.contrastive.shared_noise):
            return distribute.global_normal(tf.stack([count, dim]), seed, self.step, blocks=2 if self.paired else 1)
        half = distribute.global_normal(tf.stack([count // 2, dim]), seed, self.step)
        return tf.concat([half, half], axis=0)

    def train_step(self, batch) -> dict:
        merged = branches.merge_branches(batch, self.paired)
        text = text_features(self.encoders.text, merged["tokens"])
        real = {size: merged["image" if size == self.recipe.data.image_size else f"image_{size}"]
                for size in self.sizes}
        count = tf.shape(merged["tokens"])[0]
        noise = self.draw_noise(count)
        class_ids = merged["class_id"]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        g_vars = self.generator.trainable_variables
        real_features = self.real_features(real[self.recipe.data.image_size])
        with tf.GradientTape() as g_tape:
            generated = self.generator(text.generator_inputs(noise), training=True)
            with g_tape.stop_recording():
                d_terms = self.discriminator_step(real, generated["images"], text, replicas, real_features, merged)
            g_terms = self.backbone.generator_loss(generated, text, class_ids)
            total = g_terms["loss"]
            if self.paired:
                name = self.recipe.contrastive.loss
                g_terms[name] = self.contrastive_loss(generated["images"][-1], merged, text, real_features)
                total += self.recipe.contrastive.gan_weight * g_terms[name]
            if self.recipe.train.mode_seeking_weight > 0:
                g_terms["mode_seeking"] = self.mode_seeking_term(text, noise, generated["images"][-1])
                total += self.recipe.train.mode_seeking_weight * g_terms["mode_seeking"]
            scaled = self.g_optimizer.scale_loss(total / replicas)
        grads = g_tape.gradient(scaled, g_vars)
        self.g_optimizer.apply_gradients(zip(grads, g_vars))
        report = {f"g_{k}" if k not in (*LABEL_LOSSES, "mode_seeking") else k: v for k, v in g_terms.items()}
        report["g_total"] = total
        report.update({f"d_{k}": v for k, v in d_terms.items()})
        return report

    def discriminator_step(self, real, fake_images, text, replicas, real_features=None, merged=None) -> dict:
        d_vars = self.backbone.discriminator_variables + self.head_variables
        with tf.GradientTape() as d_tape:
            terms = self.backbone.discriminator_loss(real, [tf.stop_gradient(x) for x in fake_images], text)
            total = terms["loss"]
            if self.label_head is not None:  # the head learns the labels from real images, as AC-GAN's classifier
                terms["label_head"] = branches.classifier_loss(self.label_head, real_features, merged,
                                                               self.multi_label)
                total += terms["label_head"]
            scaled = self.d_optimizer.scale_loss(total / replicas)
        grads = d_tape.gradient(scaled, d_vars)
        self.d_optimizer.apply_gradients(zip(grads, d_vars))
        return terms

    def mode_seeking_term(self, text: TextFeatures, noise, images) -> tf.Tensor:
        """The mode seeking loss of every fourth example, drawn again with new noise (every fourth, not the first
        quarter, so that the same examples take part on any number of replicas)."""
        again_text = TextFeatures(text.words[::4], text.sentence[::4], text.mask[::4])
        again_noise = distribute.global_normal(tf.shape(noise), self.recipe.runtime.seed, self.step, stream=1,
                                               blocks=self.backbone.batch_blocks)[::4]
        again = self.generator(again_text.generator_inputs(again_noise), training=True)["images"][-1]
        return mode_seeking_loss(images[::4], again, noise[::4], again_noise)

    def image_features(self, images) -> tf.Tensor:
        """The frozen pretrained image encoder's features: the DAMSM encoder's, else the backbone's own (GALIP
        imported with its CLIP)."""
        if self.encoders.image is not None:
            return self.encoders.image(images, training=False)["global"]
        return self.backbone.image_embedding(images)

    def real_features(self, images):
        """The real images' features where the framework reads them (gan_features, the classifier's head)."""
        config = self.recipe.contrastive
        if self.paired and (config.gan_features == "generated_and_real" or config.loss == "classifier"):
            return tf.stop_gradient(self.image_features(images))
        return None

    def contrastive_loss(self, images, merged, text: TextFeatures, real_features) -> tf.Tensor:
        """contrastive.loss over the generated images' features (and the real ones', with generated_and_real)."""
        config = self.recipe.contrastive
        features = self.image_features(images)
        if config.loss == "classifier":
            return branches.classifier_loss(self.label_head, features, merged, self.multi_label)
        groups = 2 if config.gan_features == "generated_and_real" else 1
        if groups == 2:
            features = tf.concat([features, tf.cast(real_features, features.dtype)], axis=0)
        if config.loss == "unicl":
            sentences = tf.concat([tf.cast(text.sentence, features.dtype)] * groups, axis=0)
            return branches.image_text_loss(features, sentences, merged, self.recipe, self.multi_label,
                                            config.gan_temperature, groups=groups)
        return branches.contrastive_loss(features, merged, self.recipe, self.multi_label, config.gan_temperature,
                                         groups=groups)

    def after_step(self) -> None:
        # warm-up as tf.train.ExponentialMovingAverage with num_updates: min(decay, (1 + n) / (10 + n)), so the
        # average follows the fast early changes of the generator instead of keeping its random start for ~1/(1-decay)
        updates = tf.cast(self.g_optimizer.iterations, tf.float32)
        decay = tf.minimum(self.recipe.train.ema_decay, (1.0 + updates) / (10.0 + updates))
        for average, weight in zip(self.ema_generator.weights, self.generator.weights):
            average.assign(decay * average + (1.0 - decay) * tf.cast(weight, average.dtype))

    def sampler(self):
        """The EMA generator's sampler, made once: its graph is traced on the first grid or evaluation."""
        from t2ictl import sampling

        if self._sampler is None:
            self._sampler = sampling.Sampler(self.ema_generator, self.encoders.text, self.vocab,
                                             self.recipe.data.max_words, self.backbone.noise_dim)
        return self._sampler

    def report(self, step: int) -> None:
        from t2ictl import sampling

        captions = held_out_captions(self.data_dir, self.recipe, self.vocab, self.recipe.train.sample_captions)
        images = self.sampler().sample(captions, per_caption=4, seed=0)
        path = self.run.path / "samples" / f"step-{step:07d}.png"
        picture = sampling.write_grid(path, images, captions)
        tf.summary.image("samples", picture[None], step=step)

    def evaluate(self) -> dict[str, float]:
        from t2ictl.evaluation.consistency import READERS, shapes_consistency

        if self.recipe.data.dataset not in READERS:
            return {}
        from t2ictl.evaluation.variation import shapes_variation

        sampler = self.sampler()
        return {**shapes_consistency(sampler, self.data_dir, self.recipe, self.vocab),
                **shapes_variation(sampler, self.data_dir, self.recipe, self.vocab)}

    def export(self) -> None:
        pass  # the EMA generator lives in the checkpoint; `t2ictl export` writes the servable model


def build_optimizers(backbone: backbones.Backbone, extra_d_variables: list | None = None
                     ) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
    """The generator's and the discriminators' Adam, as the backbone sets them, wrapped for loss scaling under a
    float16 policy, and built now so that a restore finds every variable (a loss-scale wrapper has its own)."""
    g_settings, d_settings = backbone.optimizer_settings()
    g_optimizer, d_optimizer = _adam(g_settings, "g_adam"), _adam(d_settings, "d_adam")
    g_optimizer.build(backbone.generator.trainable_variables)
    d_optimizer.build(backbone.discriminator_variables + (extra_d_variables or []))
    return g_optimizer, d_optimizer


def _adam(settings, name: str) -> keras.optimizers.Optimizer:
    return distribute.optimizer(keras.optimizers.Adam(settings.learning_rate, beta_1=settings.beta_1,
                                                      beta_2=settings.beta_2, epsilon=settings.epsilon, name=name))


def held_out_captions(data_dir: Path, recipe: Recipe, vocab: Vocabulary, count: int) -> list[str]:
    """The first captions of the test split (of the training split when the test split is empty)."""
    split = "test" if load_manifest(data_dir)["splits"]["test"]["examples"] else "train"
    dataset = pipeline.eval_dataset(data_dir, recipe.data, vocab, split=split, batch_size=count, caption="first")
    batch = next(iter(dataset))
    return [c.decode("utf-8") for c in batch["caption"].numpy()]


def train(recipe: Recipe, data_dir: Path, manifest: dict, run: RunDir,
          strategy: tf.distribute.Strategy | None = None) -> dict[str, float]:
    """Run (or resume) phase 2 in `run`."""
    strategy = loop.prepare_runtime(recipe.runtime, strategy)
    steps_per_epoch = pipeline.steps_per_epoch(manifest, recipe.data, paired=recipe.contrastive.enabled)
    config = recipe.train
    schedule = loop.Schedule(total_steps=config.epochs * steps_per_epoch, steps_per_epoch=steps_per_epoch,
                             log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                             keep_checkpoints=config.keep_checkpoints, report_every=config.sample_every,
                             eval_every=config.eval_every)
    note = branches.positives_note(manifest, recipe)
    if note:
        console.print(note, markup=False)
    phase = GANPhase(recipe, run.vocab(), manifest, data_dir, run, run.encoders_for(recipe))
    return loop.run(phase, branches.dataset_fn(data_dir, recipe, run.vocab()), run, schedule, strategy,
                    jit_compile=recipe.runtime.xla)

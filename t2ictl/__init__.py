"""t2ictl: text-to-image GANs with label-guided supervised contrastive learning."""

__version__ = "0.1.0"

"""The ViT classifier, and the model file that carries everything needed to rebuild it.

`ViTClassifier` is a plain `nn.Module` (Hugging Face's ViT plus the study's input path), so
evaluation rebuilds and runs it without Lightning; training wraps it (augvit/training.py).
The model file holds its config: the ViT config, the input size, mean and std, the class names,
the recipe it was trained with and the run it came from. Evaluation never re-derives any of it
from params.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from augvit.augment import build_inputs
from augvit.io import StageError, atomic_path
from augvit.params import ModelParams

FORMAT = "augvit-classifier/1"


def vit_config(m: ModelParams, num_labels: int) -> dict[str, Any]:
    """A from-scratch ViT config from params (ViT-B/16 would be 224/16/768/12/12/4)."""
    return ViTConfig(
        image_size=m.image_size, patch_size=m.patch_size, hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
        intermediate_size=m.mlp_ratio * m.hidden_size, hidden_dropout_prob=m.dropout,
        attention_probs_dropout_prob=m.dropout, num_labels=num_labels,
    ).to_dict()


def build_vit(config: dict[str, Any] | None, pretrained: str | None,
              num_labels: int) -> ViTForImageClassification:
    """From a pretrained hub id / local folder (new classifier head), or from a config dict."""
    if pretrained:
        return ViTForImageClassification.from_pretrained(
            pretrained, num_labels=num_labels, ignore_mismatched_sizes=True,
            attn_implementation="sdpa")
    cfg = ViTConfig.from_dict(config)
    cfg._attn_implementation = "sdpa"   # PyTorch's fused scaled-dot-product attention
    return ViTForImageClassification(cfg)


def pick_device(accelerator: str) -> torch.device:
    """train.accelerator -> the device: auto means CUDA when there is one."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class ViTClassifier(nn.Module):
    """uint8 images at the stored size -> class logits, through the one input path."""

    def __init__(self, *, vit_config: dict | None, classes: list[str], recipe: dict,
                 image_size: int, mean: list[float], std: list[float], freeze_backbone: bool,
                 version: str = "", seed: int = 0, pretrained: str | None = None):
        super().__init__()
        self.vit = build_vit(vit_config, pretrained, len(classes))
        # The resolved config (a pretrained model's own included): the model file rebuilds the
        # model from it without the hub or the pretrained folder.
        self.config = {"vit_config": self.vit.config.to_dict(), "classes": list(classes),
                       "recipe": recipe, "image_size": image_size, "mean": list(mean),
                       "std": list(std), "freeze_backbone": freeze_backbone,
                       "version": version, "seed": seed}
        if freeze_backbone:
            self.vit.vit.requires_grad_(False)

    @property
    def frozen(self) -> bool:
        return self.config["freeze_backbone"]

    def train(self, mode: bool = True) -> ViTClassifier:
        super().train(mode)
        if self.frozen:
            self.vit.vit.eval()     # a frozen backbone is a fixed feature extractor: no dropout
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():   # no autograd graph through the frozen backbone
                feats = self.vit.vit(pixel_values).last_hidden_state[:, 0]
            return self.vit.classifier(feats)
        return self.vit(pixel_values=pixel_values).logits

    def inputs(self, images: torch.Tensor, train: bool,
               gen: torch.Generator | None = None) -> torch.Tensor:
        """The one input path: uint8 batch -> normalized inputs; augmentation only if train."""
        c = self.config
        return build_inputs(images, c["recipe"] if train else {}, c["image_size"], c["mean"],
                            c["std"], gen)


def save_classifier(model: ViTClassifier, path: Path, **record: Any) -> None:
    """The model file: format tag, config, weights, and `record` (epoch, step, ...)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "config": model.config, "state_dict": state, **record},
                   tmp)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> ViTClassifier:
    """Rebuild the model from its file alone (config, preprocessing, classes), in eval mode."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise StageError(f"{path}: not a model file of this project ({FORMAT}); it is written "
                         "by the train stage (`dvc repro`)")
    model = ViTClassifier(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()

"""The ViT classifier as a LightningModule, and how to rebuild it from a checkpoint.

The checkpoint's hyper-parameters carry everything evaluation needs: the ViT config, the input
size, mean and std, the class names and the recipe it was trained with. Evaluation never
re-derives any of it from params.yaml.
"""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from transformers import ViTConfig, ViTForImageClassification

from stages.augment import build_inputs
from stages.io import StageError
from stages.params import ModelParams


class NonFiniteLossError(StageError):
    pass


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


def seed_for(*parts: int) -> int:
    """A stable 63-bit seed from integers (run seed, epoch, ...)."""
    s = 0x9E3779B97F4A7C15
    for p in parts:
        s = (s ^ (int(p) + 0x9E3779B97F4A7C15 + (s << 6) + (s >> 2))) & ((1 << 63) - 1)
    return s


class AugViT(L.LightningModule):
    def __init__(self, *, vit_config: dict | None, classes: list[str], recipe: dict,
                 image_size: int, mean: list[float], std: list[float], freeze_backbone: bool,
                 seed: int, version: str = "", pretrained: str | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup_steps: int = 0, total_steps: int = 1,
                 label_smoothing: float = 0.0):
        super().__init__()
        self.vit = build_vit(vit_config, pretrained, len(classes))
        # Store the resolved config so a checkpoint rebuilds the model without the hub.
        # `pretrained` stays in the hyper-parameters as a record; load_model() overrides it.
        self.save_hyperparameters()
        self.hparams["vit_config"] = self.vit.config.to_dict()
        if freeze_backbone:
            self.vit.vit.requires_grad_(False)
        n = len(classes)
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.aug_gen = torch.Generator()

    # ---------------------------------------------------------------- forward
    def train(self, mode: bool = True) -> AugViT:
        super().train(mode)
        if self.hparams.freeze_backbone:
            self.vit.vit.eval()     # a frozen backbone is a fixed feature extractor: no dropout
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.hparams.freeze_backbone:
            with torch.no_grad():   # no autograd graph through the frozen backbone
                feats = self.vit.vit(pixel_values).last_hidden_state[:, 0]
            return self.vit.classifier(feats)
        return self.vit(pixel_values=pixel_values).logits

    def inputs(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        """The one input path: uint8 batch -> normalized inputs; augmentation only if train."""
        h = self.hparams
        return build_inputs(images, h.recipe if train else {}, h.image_size, h.mean, h.std,
                            self.aug_gen)

    # ---------------------------------------------------------------- steps
    def on_train_epoch_start(self) -> None:
        # Every epoch's randomness derives from (seed, epoch): a run resumed from an epoch
        # checkpoint draws exactly what an uninterrupted run would have drawn.
        self.aug_gen.manual_seed(seed_for(self.hparams.seed, self.current_epoch, 1))
        torch.manual_seed(seed_for(self.hparams.seed, self.current_epoch, 2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        images, labels = batch
        logits = self(self.inputs(images, train=True))
        loss = F.cross_entropy(logits.float(), labels,
                               label_smoothing=self.hparams.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"version {self.hparams.version!r} seed {self.hparams.seed}: loss is "
                f"{loss.item()} at epoch {self.current_epoch}, step {self.global_step}. "
                "Lower train.lr (or set train.precision: 32-true) and rerun.")
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels),
                 sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        images, labels = batch
        logits = self(self.inputs(images, train=False))
        loss = F.cross_entropy(logits.float(), labels)
        self.val_acc(logits, labels)
        self.log("val/loss", loss, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True)

    # ---------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict:
        h = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]         # no decay on biases and norms
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": h.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=h.lr)

        def schedule(step: int) -> float:      # linear warmup, then cosine to zero
            if step < h.warmup_steps:
                return (step + 1) / h.warmup_steps
            t = (step - h.warmup_steps) / max(1, h.total_steps - h.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_model(path: str, device: torch.device | str = "cpu") -> AugViT:
    """Rebuild the model from a checkpoint alone (config, preprocessing, classes)."""
    model = AugViT.load_from_checkpoint(path, map_location=device, pretrained=None)
    return model.eval()

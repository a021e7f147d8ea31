"""Batch mixing's entry point (training and the previews call it after build_inputs): which ops
mix the batch, and a dispatch to their code (ops/mixup_cutmix.py), imported only when a recipe
uses one of them."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from augvit.augment.registry import load_op

MIXING_OPS = ("mixup", "cutmix")


def mix_batch(x: torch.Tensor, labels: torch.Tensor, num_classes: int,
              recipe: Mapping[str, Mapping], gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(mixed inputs, soft targets (B, num_classes), which op ran) for one training batch; x is
    mixed in place. See ops/mixup_cutmix.py."""
    return load_op("mixup").mix_batch(x, labels, num_classes, recipe, gen)   # cutmix's too

"""The test set through a trained model: accuracy (the run's metric), and its loss, per-class
accuracy, confusion matrix and every image's prediction (data for the summary and the plots).

Plain torch (no Lightning, no torchmetrics): this runs once per run, so its start-up counts,
and a confusion matrix is one bincount.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from augvit.data.batches import ArrayBatches, load_split
from augvit.environment import describe, plain_environment
from augvit.model import load_classifier
from augvit.predictions import encode_predictions


def load_test(prepared: Path, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split on `device`, loaded once for all the models a stage evaluates."""
    images, labels = load_split(prepared, "test")
    return images.to(device), labels.to(device)


@torch.inference_mode()
def evaluate(model_path: Path, prepared: Path | tuple[torch.Tensor, torch.Tensor],
             batch_size: int, device: torch.device) -> tuple[dict, dict]:
    """(metrics, details) of one model on the prepared test split (a folder, or its tensors
    from `load_test`)."""
    model = load_classifier(model_path, device)
    classes = model.config["classes"]
    n = len(classes)
    images, labels = load_test(prepared, device) if isinstance(prepared, Path) else prepared
    confusion = torch.zeros(n * n, dtype=torch.int64, device=device)    # row: true, col: pred
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    predicted = []
    batches = ArrayBatches(images, labels, batch_size)     # no shuffle, keeps the last batch
    for x, y in tqdm(batches, desc="evaluate", unit="batch", mininterval=2):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(model.inputs(x, train=False)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        pred = logits.argmax(1)
        predicted.append(pred)
        confusion += torch.bincount(y * n + pred, minlength=n * n)
    matrix = confusion.view(n, n).cpu()
    per_class = matrix.diag() / matrix.sum(1).clamp(min=1)
    # The run's metric is one number, so that `dvc exp show` stays a table however many runs
    # the study has; the loss (its mean per version is a summary metric) and the rest are data.
    metrics = {"acc": round(matrix.diag().sum().item() / len(labels), 6)}
    details = {"version": model.config["version"], "seed": model.config["seed"],
               "loss": round(loss_sum.item() / len(labels), 6),
               "classes": classes, "n_test": len(labels),
               "per_class_acc": [round(v, 6) for v in per_class.tolist()],
               "confusion": matrix.tolist(),             # rows: actual class, columns: predicted
               # every test image's predicted class, in test set order, as short text
               "predicted": encode_predictions(torch.cat(predicted).cpu().numpy(), n),
               "environment": {"train": plain_environment(model.record.get("environment")),
                               "evaluate": describe(device, "bf16-mixed" if device.type ==
                                                    "cuda" else "32-true")}}
    return metrics, details

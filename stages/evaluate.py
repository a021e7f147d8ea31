"""Stage `evaluate@<version>-<seed>`: the official test set through the trained model.

Writes test accuracy, loss and per-class accuracy (a DVC metrics file), and the confusion
matrix. The model and its preprocessing are rebuilt from the checkpoint alone.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import torchmetrics
from tqdm import tqdm

from stages.batches import ArrayBatches, load_split
from stages.io import raise_on_sigterm, save_json, user_errors
from stages.model import load_model, pick_device
from stages.params import load_params


@torch.inference_mode()
def evaluate(model_path: Path, prepared: Path, batch_size: int,
             device: torch.device) -> tuple[dict, dict]:
    model = load_model(str(model_path), device)
    classes = model.hparams.classes
    images, labels = (t.to(device) for t in load_split(prepared, "test"))
    n = len(classes)
    acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro").to(device)
    per_class = torchmetrics.classification.MulticlassAccuracy(n, average="none").to(device)
    confusion = torchmetrics.classification.MulticlassConfusionMatrix(n).to(device)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    batches = ArrayBatches(images, labels, batch_size)     # no shuffle, keeps the last batch
    for x, y in tqdm(batches, desc="evaluate", unit="batch", mininterval=2):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(model.inputs(x, train=False)).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        acc.update(logits, y)
        per_class.update(logits, y)
        confusion.update(logits, y)
    # Flat keys that sort first, so `dvc metrics show` puts accuracy and loss up front.
    metrics = {
        "acc": round(acc.compute().item(), 6),
        "loss": round(loss_sum.item() / len(labels), 6),
        "n_test": len(labels),
        "per_class_acc": {c: round(v, 6) for c, v in zip(classes, per_class.compute().tolist())},
    }
    conf = {"classes": classes, "matrix": confusion.compute().cpu().tolist(),
            "version": model.hparams.version, "seed": model.hparams.seed}
    return metrics, conf


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--metrics-out", type=Path, required=True)
    ap.add_argument("--confusion-out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("evaluate"):
        params = load_params(args.params)
        metrics, conf = evaluate(args.model, args.prepared, params.eval.batch_size,
                                 pick_device(params.train.accelerator))
        save_json(args.confusion_out, conf)
        save_json(args.metrics_out, metrics)
    print(f"evaluate {conf['version']} seed {conf['seed']}: test acc {metrics['acc']:.4f} "
          f"loss {metrics['loss']:.4f}")


if __name__ == "__main__":
    main()

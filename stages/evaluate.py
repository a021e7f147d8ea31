"""Stage `evaluate@<version>-<backbone>-<size>-<seed>`: one trained model on the test set.

Writes the run's test accuracy (a DVC metrics file) and its details (loss, per-class accuracy,
confusion matrix, every test image's prediction) for the compare and plots stages. The model and its
preprocessing are rebuilt from the model file alone.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.evaluation import evaluate
from augvit.io import raise_on_sigterm, save_json, user_errors
from augvit.model import pick_device
from augvit.params import load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--metrics-out", type=Path, required=True)
    ap.add_argument("--details-out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("evaluate"):
        params = load_params(args.params)
        metrics, details = evaluate(args.model, args.prepared, params.eval.batch_size,
                                 pick_device(params.train.accelerator))
        save_json(args.details_out, details)
        save_json(args.metrics_out, metrics)
    print(f"evaluate {details['version']} seed {details['seed']}: test acc {metrics['acc']:.4f} "
          f"loss {details['loss']:.4f}")


if __name__ == "__main__":
    main()

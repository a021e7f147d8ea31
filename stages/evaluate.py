"""Stage `evaluate@<version>-<backbone>-<size>`: every seed's trained model of one group on the
test set, in one process (its start-up is paid once per group, not once per seed).

Writes, per seed, the run's test accuracy (a DVC metrics file) and its details (loss, per-class
accuracy, confusion matrix, every test image's prediction) for the compare and plots stages,
into one folder per group each. The model and its preprocessing are rebuilt from the model file
alone.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.evaluation import evaluate, load_test
from augvit.io import atomic_path, raise_on_sigterm, save_json, user_errors
from augvit.model import SUFFIX, pick_device
from augvit.params import CheckParams, load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
    ap.add_argument("--models", type=Path, required=True,
                    help="the group's folder of model files, seed<k>.safetensors")
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--metrics-out", type=Path, required=True)
    ap.add_argument("--details-out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("evaluate"):
        params = load_params(args.params)
        device = pick_device(params.train.accelerator)
        test = load_test(args.prepared, device)
        with atomic_path(args.metrics_out) as metrics_tmp, \
                atomic_path(args.details_out) as details_tmp:
            for seed in params.study.seeds:
                metrics, details = evaluate(args.models / f"seed{seed}{SUFFIX}", test,
                                            params.eval.batch_size, device)
                save_json(details_tmp / f"seed{seed}.json", details)
                save_json(metrics_tmp / f"seed{seed}.json", metrics)
                print(f"evaluate {details['version']} seed {seed}: test acc "
                      f"{metrics['acc']:.4f} loss {details['loss']:.4f}", flush=True)


if __name__ == "__main__":
    main()

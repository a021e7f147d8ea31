"""Stage `train@<version>-<backbone>-<size>-<seed>`: train one ViT on one recipe, one train size,
one seed.

Writes the model file and the DVCLive per-epoch curves; epoch checkpoints go to --resume-dir
(outside DVC's outputs), so a killed run continues after its last epoch (augvit/training.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.io import raise_on_sigterm, user_errors
from augvit.layout import Run
from augvit.params import CheckParams, load_params
from augvit.training import train_run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
    ap.add_argument("--version", required=True)
    ap.add_argument("--backbone", choices=["finetuned", "frozen"], required=True,
                    help="one value of study.backbones")
    ap.add_argument("--train-size", type=int, required=True,
                    help="one value of study.train_sizes: train on the first N images")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--model-out", type=Path, required=True)
    ap.add_argument("--live-out", type=Path, required=True)
    ap.add_argument("--resume-dir", type=Path, required=True)
    ap.add_argument("--fresh", action="store_true", help="ignore any resume checkpoint")
    ap.add_argument("--timing-out", type=Path, default=None,
                    help="where to note this run's wall time (machine data, not an output)")
    args = ap.parse_args(argv)
    raise_on_sigterm()
    run = Run(args.version, args.backbone, args.train_size, args.seed)
    with user_errors(f"train@{run.stage_suffix}"):
        train_run(load_params(args.params), run, args.recipe, args.prepared, args.model_out,
                  args.live_out, args.resume_dir, fresh=args.fresh,
                  timing_out=args.timing_out)


if __name__ == "__main__":
    main()

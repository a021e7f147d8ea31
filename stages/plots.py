"""Stage `plots`: plot data (curves, per-class accuracy, confusion rows) and pictures (curves
with seed bands, the comparison with CIs, augmentation previews) -> plots/."""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.figures import render_all
from augvit.io import raise_on_sigterm, user_errors
from augvit.params import CheckParams, load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
    ap.add_argument("--live", type=Path, required=True)
    ap.add_argument("--details", type=Path, required=True)
    ap.add_argument("--analysis", type=Path, required=True)
    ap.add_argument("--recipes", type=Path, required=True)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("plots"):
        render_all(load_params(args.params), args.live, args.details, args.analysis,
                   args.recipes, args.prepared, args.out)


if __name__ == "__main__":
    main()

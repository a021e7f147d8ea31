"""Stage `validate`: params.yaml, checked as a whole, before any stage that uses its values.

DVC writes params values (versions, seeds, backbone settings, train sizes) into the other
stages' command lines, which a shell runs. Every stage depends on this stage's output, so DVC
runs it first and stops at its error: a value that is not what its key allows (a seed of
`1; rm -rf ~`, say) never reaches a shell. Its output never changes, so a valid change of params
reruns only the stages that use what changed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.io import raise_on_sigterm, save_json, user_errors
from augvit.params import CheckParams, load_params

CHECKED = {"params": "valid"}      # constant: downstream stages see no change through it


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("validate"):
        load_params(args.params)
        save_json(args.out, CHECKED)
    print(f"validate: {args.params} is valid")


if __name__ == "__main__":
    main()

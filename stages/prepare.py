"""Stage `prepare`: data/raw -> data/prepared/{train,val,test}.npz (uint8) and meta.json."""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.data.decode import prepare
from augvit.io import raise_on_sigterm, user_errors
from augvit.params import CheckParams, load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("prepare"):
        prepare(load_params(args.params).data, args.raw, args.out)


if __name__ == "__main__":
    main()

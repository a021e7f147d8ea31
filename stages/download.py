"""Stage `download`: data.source (hub id or local copy) -> data/raw, still encoded."""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.data.fetch import fetch
from augvit.data.sources import Limits
from augvit.io import raise_on_sigterm, user_errors
from augvit.params import CheckParams, load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors("download"):
        data = load_params(args.params).data
        fetch(data.source, args.out, data.sha256, Limits.of(data))


if __name__ == "__main__":
    main()

"""Stage `recipe@<version>`: resolve one version's effective augmentation recipe into a file.

The recipe is the `aug` settings of the ops the version names, minus the ops set to `false`, in
canonical order. `train@<version>-*` depends on this file instead of the whole `aug` block, so
DVC retrains only the versions whose effective recipe changed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.io import raise_on_sigterm, save_json, user_errors
from augvit.params import ParamsError, load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--version", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors(f"recipe@{args.version}"):
        params = load_params(args.params)
        if args.version not in params.versions:
            raise ParamsError([f"versions.{args.version}: not defined; defined versions: "
                               f"{', '.join(params.versions)}"], args.params)
        recipe = params.recipe(args.version)
        save_json(args.out, {"version": args.version, "ops": recipe})
    print(f"recipe {args.version}: {', '.join(recipe) or '(no augmentation)'}")


if __name__ == "__main__":
    main()

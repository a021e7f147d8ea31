"""Stage `recipe@<version>`: resolve one version's effective augmentation recipe into a file.

The recipe is the `aug` settings of the ops the version names, minus the ops set to `false`, in
canonical order, and the identity of each of those ops' code (a sha256 of its files,
augvit/augment/registry.py). `train@<version>-*` depends on this file instead of the whole `aug`
block and the op modules, so DVC retrains only the versions whose effective recipe changed: its
settings, or the code of an op it uses.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from augvit.augment.registry import code_identity
from augvit.io import raise_on_sigterm, save_json, user_errors
from augvit.params import CheckParams, ParamsError, load_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--check-params", action=CheckParams)
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
        save_json(args.out, {"version": args.version, "ops": recipe,
                             "code": code_identity(recipe)})
    print(f"recipe {args.version}: {', '.join(recipe) or '(no augmentation)'}")


if __name__ == "__main__":
    main()

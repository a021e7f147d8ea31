"""Augmentation speed of the working tree against an earlier revision, in one process.

    python -m bench.vs_revision HEAD~1            # or any commit / tag / branch
    python -m bench.vs_revision efb902e~1 --sizes 32 224 --rounds 200

Loads the augmentation code as it was at REV (via `git show`) next to the current one, and times
`build_inputs` of both on the same batch (128 prepared CIFAR-10 test images, version_1 recipe),
alternating them round after round (bench.bench.interleaved), so machine drift hits both alike.
Prints the median ms per batch of each and the speed-up, per output size. Only for revisions
whose `build_inputs` has today's signature.
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.bench import MEAN, ROOT, STD, interleaved, load_images
from augvit import augment as current
from augvit.params import load_params


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)


def load_revision(rev: str):
    """The augmentation code at `rev` as a module: `augvit/augment/` (a package, imported under
    another name beside today's) or, before the library was split out, `stages/augment.py`."""
    listing = _git("ls-tree", "-r", "--name-only", rev, "--", "augvit/augment", "stages/augment.py")
    if listing.returncode != 0 or not listing.stdout.strip():
        sys.exit(f"vs_revision: cannot read the augmentation code at {rev!r}: "
                 f"{listing.stderr.strip() or 'neither augvit/augment/ nor stages/augment.py'}")
    files = [f for f in listing.stdout.split() if f.endswith(".py")]
    tmp = Path(tempfile.mkdtemp(prefix="vs_revision-"))
    # Kept until the process ends: the op modules (augvit/augment/ops/) are imported by name
    # when build_inputs first runs a recipe that uses them, after this returns.
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    for f in files:
        src = _git("show", f"{rev}:{f}").stdout.replace("augvit.augment", "_rev_augment")
        rel = "__init__.py" if f == "stages/augment.py" else Path(f).relative_to("augvit/augment")
        (tmp / "_rev_augment" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "_rev_augment" / rel).write_text(src)
    sys.path.insert(0, str(tmp))
    try:
        return importlib.import_module("_rev_augment")
    finally:
        sys.path.remove(str(tmp))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("rev", help="git revision to compare the working tree against")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224], help="output sizes")
    ap.add_argument("--rounds", type=int, default=100,
                    help="timed rounds at sizes <= 64 (a tenth, at least 5, above)")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args(argv)
    if min(args.sizes) < 1 or args.rounds < 1 or args.batch < 1:
        ap.error(f"--sizes, --rounds and --batch must be positive (got sizes {args.sizes}, "
                 f"rounds {args.rounds}, batch {args.batch})")
    old = load_revision(args.rev)
    recipe = load_params(ROOT / "params.yaml").recipe("version_1")
    images = torch.from_numpy(load_images(args.batch))
    gen = torch.Generator().manual_seed(0)
    print(f"build_inputs, version_1 recipe, batch {args.batch}, {torch.get_num_threads()} threads,"
          " median of alternating rounds")
    for size in args.sizes:
        rounds = args.rounds if size <= 64 else max(5, args.rounds // 10)   # 224: ~50x the work
        t = interleaved({
            "rev": lambda: old.build_inputs(images, recipe, size, MEAN, STD, gen),
            "tree": lambda: current.build_inputs(images, recipe, size, MEAN, STD, gen)}, rounds)
        print(f"  {size:>4}x{size:<4} {args.rev}: {1000 * t['rev']:7.2f} ms   working tree: "
              f"{1000 * t['tree']:7.2f} ms   speed-up {t['rev'] / t['tree']:.2f}x   ({rounds} rounds)")


if __name__ == "__main__":
    main()

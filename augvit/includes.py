"""Quotes of generated files in hand-written pages, brought up to date.

A page (README.md, docs/*.md) quotes a generated file between `<!-- include FILE -->` (or
`<!-- include FILE PART -->` for the part between `<!-- PART:start -->` and `<!-- PART:end -->`,
as reports/comparison.md marks its reading) and `<!-- /include -->`. After `dvc repro`:

    python -m augvit.includes README.md docs/*.md

rewrites each quote with the file's current text; tests/test_docs.py fails on a stale one.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

INCLUDE = re.compile(r"(<!-- include (\S+?)(?: (\w+))? -->\n)(.*?)(<!-- /include -->)", re.S)


def generated_text(root: Path, name: str, part: str | None) -> str:
    """A generated file's text, or its marked part, stripped."""
    text = (root / name).read_text(encoding="utf-8")
    if part is None:
        return text.strip()
    start, end = f"<!-- {part}:start -->", f"<!-- {part}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{name} has no {start} ... {end} part")
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def sync(page: Path, root: Path) -> bool:
    """Rewrite the page's quotes; True if it changed."""
    old = page.read_text(encoding="utf-8")
    new = INCLUDE.sub(lambda m: m[1] + generated_text(root, m[2], m[3]) + "\n" + m[5], old)
    if new != old:
        page.write_text(new, encoding="utf-8")
    return new != old


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pages", nargs="+", type=Path)
    ap.add_argument("--root", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    for page in args.pages:
        if sync(page, args.root):
            print(f"includes: updated {page}")


if __name__ == "__main__":
    main()

"""The README and docs/ as a user reads them: links that resolve, the project's own words only,
a README that stays a front door, and no number that can go stale.

- Every relative link and image in README.md and docs/*.md names an existing file in the
  repository, and every #anchor matches a heading of the page it points into (GitHub's slugs).
- No text file of the project points readers at what they cannot see: tracker tickets, paths
  of one machine, commit hashes in prose (OWN_WORDS).
- Every image under docs/ or plots/ is shown by a page or drawn by `dvc.yaml`'s plots.
- Every measured figure in README.md and docs/ (a number with a unit: images/s, s, minutes,
  MiB, %, pp, x) is tied to a committed file: by a marker `<!-- = EXPR -->` right after it
  (EXPR computes it from FILE:KEY terms), or in a table row that names its bench/results/ file
  (checked against that file). The README's first screen names the versions and their ops.
- README.md stays a front door of a few screens (README_MAX_LINES).
- Every number in docs/performance.md's tables equals what bench/results/*.json records, and its
  prose quotes no measured figure (a figure belongs in a checked table).
- The default settings and limits the docs state in prose are params.yaml's and the code's;
  every metrics/summary.json key the docs name exists; a quote of a generated file
  (`<!-- include FILE [PART] -->` ... `<!-- /include -->`) equals that file (or its part).
- Every `dvc exp run -S ...` the pages give yields params the validator accepts today.
"""
from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml

from augvit.includes import INCLUDE, generated_text
from conftest import DEFAULT_PARAMS, ROOT

THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220

FENCE = re.compile(r"^\s*(```|~~~)")


# ------------------------------------------------------------------ Markdown, just enough

def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked out."""
    out, fenced = [], False
    for k, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((k, re.sub(r"`[^`]*`", "``", line)))
    return out


def heading_texts(text: str) -> list[str]:
    """The text of every heading (ATX `## x`, or setext: a line underlined by === or ---)."""
    heads, fenced, prev = [], False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            fenced, prev = not fenced, ""
            continue
        if fenced:
            continue
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if m:
            heads.append(m[1])
        elif re.match(r"^ {0,3}(=+|-+)\s*$", line) and prev.strip() and \
                not prev.lstrip().startswith(("|", "-", "*", ">")):
            heads.append(prev.strip())
        prev = line
    return heads


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text, lowercased, punctuation dropped except
    - and _, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)      # links, images: their text
    text = re.sub(r"<[^>]+>", "", text)                              # inline HTML
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page has: its headings' slugs (repeats get -1, -2, ...) and HTML ids."""
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    out = set()
    for h in heading_texts(text):
        s = slug(h)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    out |= set(re.findall(r"""<a\s+(?:name|id)=["']([^"']+)["']""", text))
    return out


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_LINK = re.compile(r"""\b(?:src|href)=["']([^"']+)["']""")


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for k, line in prose_lines(path.read_text(encoding="utf-8")):
        for rx in (LINK, REF_DEF, HTML_LINK):
            out += [(k, m) for m in rx.findall(line)]
    return out


def is_external(target: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target)) or target.startswith("//")


def in_repository(path: Path) -> bool:
    """Is `path` a file git keeps (tracked or new, not ignored), or a folder holding one? True
    outside a git checkout, where only existence can be checked."""
    kept = repository_paths(ROOT)
    return kept is None or path.relative_to(ROOT).as_posix() in kept


@functools.lru_cache(maxsize=4)
def repository_paths(root: Path) -> frozenset[str] | None:
    """The files git keeps under `root` and every folder above them; None without git."""
    r = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=root,
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None
    files = r.stdout.splitlines()
    return frozenset(files) | {p.as_posix() for f in files for p in Path(f).parents}


def link_problems(page: Path) -> list[str]:
    problems = []
    for line, target in links(page):
        if is_external(target):
            continue
        where = f"{page.relative_to(ROOT)}:{line}: {target}"
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part)
        if not path_part:
            dest = page
        elif path_part.startswith("/"):
            dest = ROOT / path_part.lstrip("/")
        else:
            dest = page.parent / path_part
        dest = Path(os.path.normpath(dest.absolute()))
        try:
            dest.relative_to(ROOT)
        except ValueError:
            problems.append(f"{where}: points outside the repository")
            continue
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif not in_repository(dest):
            problems.append(f"{where}: here, but not in the repository (ignored by git)")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            problems.append(f"{where}: no heading with anchor #{anchor} in "
                            f"{dest.relative_to(ROOT)}")
    return problems


# ------------------------------------------------------------------ links and anchors

def test_the_markdown_helpers_see_what_github_renders():
    assert slug("What reproducible means here, measured.") == \
        "what-reproducible-means-here-measured"
    assert slug("The `validate` stage: params before any shell") == \
        "the-validate-stage-params-before-any-shell"
    assert slug("GPU: the check (for [air-gapped](x.md) machines)") == \
        "gpu-the-check-for-air-gapped-machines"
    assert slug("version_1 vs version_2") == "version_1-vs-version_2"
    text = "# A\n\n```bash\n# not a heading [x](nowhere.md)\n```\n\nB\n---\n## A\n"
    assert heading_texts(text) == ["A", "B", "A"]
    assert [t for _, line in prose_lines(text) for t in LINK.findall(line)] == []
    assert LINK.findall("see ![pic](img/a.png) and [page](b.md#c 'title')") == \
        ["img/a.png", "b.md#c"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    problems = link_problems(page)
    assert not problems, "broken links:\n  " + "\n  ".join(problems)


def test_a_broken_link_or_anchor_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Second part\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#second-part) [ok](#top) ![no](docs/missing.png)\n"
                    "[bad anchor](docs/a.md#third-part) [out](../elsewhere.md)\n\n# Top\n")
    problems = link_problems(page)
    assert len(problems) == 3, problems
    assert "missing.png: no such file" in problems[0]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    repository_paths.cache_clear()
    (tmp_path / ".gitignore").write_text("docs/built.png\n")
    (tmp_path / "docs" / "built.png").write_bytes(b"png")
    page.write_text("[ok](docs/a.md) ![ignored](docs/built.png)\n")
    [ignored] = link_problems(page)
    assert "built.png: here, but not in the repository" in ignored
    assert "#third-part" in problems[1] and "outside the repository" in problems[2]


# ------------------------------------------------------------------ the project's own words

# What a text of this project must not say: it speaks to its users about the project itself,
# not about a tracker's tickets or the paths of one particular machine.
OWN_WORDS = {
    r"\bissues? \d+": "names a tracker ticket",
    r"(?<![\w&#/\"'])#\d{2,5}\b(?![\w-])": "a ticket reference (#NN)",
    r"\bthe issues? (?:set|asks?|asked|says|said|reports?|compare)\b": "speaks of a ticket",
    r"(?<![\w.])/tmp/": "a path of one machine (/tmp/...)",
    r"/work/|/root/|/home/[a-z]|/Users/": "a path of one machine",
    r"\.\./shared\b": "a path beside one checkout (../shared)",
    r"\bcommit [0-9a-f]{7,40}\b": "a commit hash in prose, stale by the next commit",
}
# Matches that are the project's own words after all: (file, text on the line), and why.
OWN_WORDS_ALLOWED = {
    ("tests/test_hostile_data.py", "/tmp/absolute.png"):
        "a hostile archive member's name under test, never a path written or read",
    ("tests/test_data.py", "shared/data.tar.gz"):
        "a relative data.source in a fixture the test builds under its tmp_path",
    ("params.yaml", "- ../shared/data/cifar10-jpeg.tar.gz"):
        "the default source list's first entry: a local copy of CIFAR-10 beside the project, "
        "one source among others (the hub is the next entry)",
    ("README.md", "../shared/data/cifar10-jpeg.tar.gz"):
        "the README explaining that default",
    ("bench/gpu_check.sh", "DATA=${DATA:-../shared/data/cifar10-jpeg.tar.gz}"):
        "the same default, for the archive the GPU check carries",
}
SCOPE = ("README.md", "docs", "augvit", "stages", "bench", "tests", "dvc.yaml", "params.yaml",
         ".ci")
TEXT_SUFFIXES = {".md", ".py", ".sh", ".yaml", ".yml", ".txt", ".in", ".ini", ".toml", ".cfg",
                 ".json", ""}


def project_text_files() -> list[str]:
    """The project's text files in SCOPE, as git sees them (tracked or new, not ignored);
    without git (a copy of the tree), every file there but caches and environments."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", *SCOPE],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
        names = listed.splitlines()
    except (OSError, subprocess.CalledProcessError):
        names = [p.relative_to(ROOT).as_posix() for s in SCOPE for p in
                 ([ROOT / s] if (ROOT / s).is_file() else (ROOT / s).rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts]
    return sorted({n for n in names if n != THIS and (ROOT / n).is_file()
                   and Path(n).suffix in TEXT_SUFFIXES})


def own_words_hits(files: list[str]) -> list[str]:
    hits = []
    for name in files:
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for k, line in enumerate(text.splitlines(), 1):
            if any(f == name and s in line for f, s in OWN_WORDS_ALLOWED):
                continue
            why = [w for pattern, w in OWN_WORDS.items() if re.search(pattern, line, re.I)]
            if why:
                hits.append(f"{name}:{k}: {'; '.join(why)}: {line.strip()[:120]}")
    return hits


def test_the_own_words_patterns_catch_one_machines_paths_and_spare_plain_text():
    caught = ["log: /tmp/out.log", "/home/alice/data", "data.source=../shared/x.tar.gz",
              "as of commit d0bb29e"]
    spared = ["## 12 epochs", "<project>/.dvc/tmp/exps/<name>/", "commit the lock file",
              "Python 3.12"]
    for text in caught:
        assert any(re.search(p, text, re.IGNORECASE) for p in OWN_WORDS), text
    for text in spared:
        assert not any(re.search(p, text, re.IGNORECASE) for p in OWN_WORDS), text


def test_the_project_speaks_in_its_own_words():
    """Fails while a line of a file in SCOPE matches OWN_WORDS; each hit is file:line and
    the reason."""
    hits = own_words_hits(project_text_files())
    assert not hits, f"{len(hits)} line(s) point readers at what they cannot see:\n  " + \
        "\n  ".join(hits)


# ------------------------------------------------------------------ README: a front door

def test_readme_is_a_front_door_of_a_few_screens():
    """The README is what it is, set-up, daily commands and the headline result; everything
    else is a page in docs/. (Fails until the README is rewritten as that front door.)"""
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (f"README.md has {n} lines, over {README_MAX_LINES}: move "
                                   "the detail into a page in docs/ and link to it")


def test_readme_first_screen_names_the_versions_and_their_ops():
    """Within its first README_FIRST_SCREEN lines the README has one table row per version of
    the default study, naming exactly its ops (params.yaml `versions:`); a number in brackets
    after an op is one of that op's settings (`aug:`)."""
    problems = first_screen_problems((ROOT / "README.md").read_text(encoding="utf-8"),
                                     DEFAULT_PARAMS)
    assert not problems, "README.md's first screen: " + "; ".join(problems)


README_FIRST_SCREEN = 40


def flat_numbers(node) -> list[float]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in flat_numbers(v)]
    if isinstance(node, list):
        return [x for v in node for x in flat_numbers(v)]
    return [float(node)] if isinstance(node, (int, float)) and not isinstance(node, bool) else []


def first_screen_problems(text: str, params: dict) -> list[str]:
    ops, problems = set(params["aug"]), []
    lines = text.splitlines()[:README_FIRST_SCREEN]
    for version in params["study"]["versions"]:
        row = next((ln for ln in lines if re.match(rf"^\|\s*`{re.escape(version)}`\s*\|", ln)),
                   None)
        if row is None:
            problems.append(f"no table row `{version}` in the first {README_FIRST_SCREEN} lines")
            continue
        named = [op for op in re.findall(r"`(\w+)`", row) if op in ops]
        want = params["versions"][version]
        if not want and "no augmentation" not in row:
            problems.append(f"`{version}` has no ops: its row should say 'no augmentation'")
        if set(named) != set(want):
            problems.append(f"`{version}`'s row names {named}, params.yaml gives {want}")
        for op, said in re.findall(r"`(\w+)`\s*\(([^)]*)\)", row):
            allowed = flat_numbers(params["aug"].get(op, {}))
            for num in re.findall(r"\d+(?:\.\d+)?", said):
                if float(num) not in allowed:
                    problems.append(f"`{version}`: {op} ({said}): {num} is not a setting of "
                                    f"aug.{op} {allowed}")
    return problems


def test_a_wrong_version_row_is_caught():
    params = {"aug": {"hflip": {"p": 0.5}, "crop": {"scale": [0.08, 1.0]}, "blur": {}},
              "versions": {"none": [], "v0": ["hflip", "crop"]},
              "study": {"versions": ["none", "v0"]}}
    good = "# T\n\n| version | ops |\n|---|---|\n| `none` | no augmentation |\n" \
           "| `v0` | `hflip` (p 0.5), `crop` (scale 0.08 to 1.0) |\n"
    assert first_screen_problems(good, params) == []
    assert "row names ['hflip', 'blur']" in \
        first_screen_problems(good.replace("`crop` (", "`blur` ("), params)[0]
    assert "0.3 is not a setting" in first_screen_problems(good.replace("p 0.5", "p 0.3"),
                                                           params)[0]
    assert "no table row" in first_screen_problems("\n" * 40 + good, params)[0]


def test_the_python_versions_the_docs_state_are_the_locks():
    """README.md and docs/reproducibility.md give the Python versions pyproject.toml's
    requires-python says the locks are compiled for, and no other range."""
    m = re.search(r'requires-python = ">=(3\.\d+)"', (ROOT / "pyproject.toml").read_text())
    assert m, "pyproject.toml no longer names the lowest Python of the locks"
    for name in ("README.md", "docs/reproducibility.md"):
        text = (ROOT / name).read_text()
        said = set(re.findall(r"Python (3\.\d+) (?:or newer|and later)", text))
        assert said == {m[1]}, f"{name} gives Python {said}, the locks are for {m[1]} and later"
        assert not re.search(r"Python 3\.\d+ to 3\.\d+", text), f"{name} gives a closed range"


# ------------------------------------------------------------------ figures and their files

# A measured figure: a number with a unit of speed, time, size, share or ratio.
FIGURE = re.compile(r"(?<![\w.,/-])([-+]?\d[\d,]*(?:\.\d+)?)\s?(images/s|img/s|images per second"
                    r"|ms\b|s\b|seconds?\b|minutes?\b|min\b|hours?\b|[KMGT]i?B\b|%|pp\b|x\b)")
# What ties a number to a committed file: `<!-- = EXPR -->` right after the number (and unit).
MARKED = re.compile(r"([-+]?\d[\d,]*(?:\.\d+)?)\s?(?:[^\d\s<|]{1,20})?\s*<!-- = (.*?) -->")
TERM = re.compile(r"([\w./-]+\.(?:json|ya?ml|py|lock)):([\w.]+)")
EXPR_FUNCS = {"len": len, "min": min, "max": max, "sum": sum,
              "mean": lambda xs: sum(xs) / len(xs)}
# Where figures are not this test's to check: docs/results.md quotes the study's reports (the
# include test checks the quotes); a sentence another test checks, or a number that measures
# nothing.
FIGURES_ELSEWHERE = {"docs/results.md"}
FIGURES_ALLOWED = {
    ("docs/security.md", "refused above 1 MiB"): "test_the_limits_docs_state_are_the_codes",
    ("docs/scale-out.md", "well below 100% means room"): "a full GPU, not a measurement",
}


def term_value(file: str, key: str):
    """The value at `key` (dotted; list items by index) of a committed JSON or YAML file, or a
    module-level constant of a Python file."""
    path = ROOT / file
    if not path.is_file():
        raise KeyError(f"{file} is not in the repository")
    if path.suffix == ".py":
        import ast
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == key
                                                    for t in node.targets):
                return constant(node.value)
        raise KeyError(f"{file} has no constant {key}")
    text = path.read_text(encoding="utf-8")
    node = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    for part in key.split("."):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise KeyError(f"{file} has no {key} (at {part!r})") from None
    return node


def constant(node):
    """A module constant's value: a literal, or whole-number arithmetic of literals (16 << 20)."""
    import ast
    import operator
    ops = {ast.LShift: operator.lshift, ast.Mult: operator.mul, ast.Add: operator.add,
           ast.Sub: operator.sub, ast.Pow: operator.pow}
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        return ops[type(node.op)](constant(node.left), constant(node.right))
    return ast.literal_eval(node)


def marker_value(expr: str) -> float:
    """EXPR of a marker: FILE:KEY terms, numbers, + - * / and len/min/max/sum/mean."""
    values = []

    def term(m: re.Match) -> str:
        values.append(term_value(m[1], m[2]))
        return f"_v[{len(values) - 1}]"
    code = TERM.sub(term, expr)
    if not values or not re.fullmatch(r"[\w\s()\[\].*/+\-,]*", code) or \
            set(re.findall(r"[A-Za-z_]\w*", code)) - {*EXPR_FUNCS, "_v"}:
        raise KeyError(f"not a figure's expression: {expr!r}")
    return float(eval(code, {"__builtins__": {}, "_v": values, **EXPR_FUNCS}))  # noqa: S307


def shows(text: str, value: float) -> bool:
    """Does `text` ("1,520", "18.6", "+2.30") show `value` to its own precision?"""
    shown = float(text.replace(",", ""))
    places = len(text.split(".")[1]) if "." in text else 0
    return abs(value - shown) <= 0.5 * 10 ** -places + 1e-9


def skipped_lines(name: str, text: str) -> set[int]:
    """Lines whose figures are checked elsewhere: a page of FIGURES_ELSEWHERE, include blocks,
    table rows that name their bench/results/ file."""
    lines, skip = text.splitlines(), set()
    if name in FIGURES_ELSEWHERE:
        return set(range(1, len(lines) + 1))
    for m in INCLUDE.finditer(text):
        first = text.count("\n", 0, m.start()) + 1
        skip |= set(range(first, first + m.group(0).count("\n") + 1))
    for k, line in enumerate(lines, 1):
        if line.lstrip().startswith("|") and "bench/results/" in line.split("|")[1]:
            skip.add(k)
    return skip


def figure_problems(name: str, text: str) -> list[str]:
    """Measured figures of a page that no marker ties to a file, and markers whose file says
    otherwise."""
    problems, skip = [], skipped_lines(name, text)
    for k, line in prose_lines(text):
        if k in skip:
            continue
        for m in MARKED.finditer(line):
            try:
                value = marker_value(m[2])
            except (KeyError, ZeroDivisionError, TypeError, ValueError) as e:
                problems.append(f"{name}:{k}: {m[1]}: {e}")
                continue
            if not shows(m[1], value):
                problems.append(f"{name}:{k}: says {m[1]}, its file gives {value:g} ({m[2]})")
        plain = re.sub(r"<!--.*?-->", "", MARKED.sub("", line))
        if line.count("<!-- = ") != len(MARKED.findall(line)):
            problems.append(f"{name}:{k}: a `<!-- = ... -->` marker right after no number")
        for m in FIGURE.finditer(plain):
            if any(f == name and s in line for f, s in FIGURES_ALLOWED):
                continue
            problems.append(f"{name}:{k}: {m[0]!r} is tied to no committed file: add "
                            "`<!-- = FILE:KEY -->` after it, or put it in a checked table")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_figure_is_tied_to_a_committed_file(page):
    name = page.relative_to(ROOT).as_posix()
    problems = figure_problems(name, page.read_text(encoding="utf-8"))
    assert not problems, "figures without a source:\n  " + "\n  ".join(problems)


def test_an_untied_or_stale_figure_is_caught():
    name = "cpu-2core-epyc-final.json"
    rate_ = json.loads((BENCH / name).read_text())["train_step"][0]["model_only"]
    marker = f"<!-- = bench/results/{name}:train_step.0.model_only -->"
    good = f"# P\n\nIt runs {rate(rate_)} images/s{marker} on that CPU.\n"
    assert figure_problems("p.md", good) == []
    assert "9,999" in figure_problems("p.md", good.replace(rate(rate_), "9,999"))[0]
    assert "tied to no committed file" in figure_problems("p.md", "It takes 19 minutes.\n")[0]
    derived = "About 2 hours<!-- = len(params.yaml:study.versions) * 30 / 60 -->.\n"
    assert figure_problems("p.md", derived) == []
    for bad in ("3 s<!-- = __import__('os') -->", "x<!-- = params.yaml:data.seed -->",
                "3 s<!-- = nothing.json:a -->",
                "3 s<!-- = params.yaml:study.nokey -->"):
        assert len(figure_problems("p.md", bad)) == 1, bad
    quoted = "<!-- include reports/x.md -->\n1,356 images/s\n<!-- /include -->\n48 s\n"
    assert [p.split(":")[1] for p in figure_problems("README.md", quoted)] == ["4"]
    assert figure_problems("docs/results.md", quoted) == []


# ------------------------------------------------------------------ images nothing shows

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}


def shown_paths() -> tuple[set[Path], set[Path]]:
    """The files the pages link (README.md, docs/**/*.md), and the files or folders `dvc.yaml`
    draws (a folder: every image in it)."""
    linked, drawn = set(), set()
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for _, target in links(page):
            path = unquote(target.partition("#")[0])
            if path and not is_external(target):
                linked.add(Path(os.path.normpath(page.parent / path)))
    for entry in yaml.safe_load((ROOT / "dvc.yaml").read_text()).get("plots", []):
        for key in (entry if isinstance(entry, dict) else {entry: None}):
            drawn.add(Path(os.path.normpath(ROOT / key)))
    return linked, drawn


def unshown_images(images: list[Path], linked: set[Path], drawn: set[Path]) -> list[str]:
    return sorted(p.relative_to(ROOT).as_posix() for p in images
                  if p not in linked and not any(p == s or s in p.parents for s in drawn))


def test_every_image_under_docs_and_plots_is_shown():
    images = [p for d in ("docs", "plots") for p in (ROOT / d).rglob("*")
              if p.suffix.lower() in IMAGE_SUFFIXES]
    orphans = unshown_images(images, *shown_paths())
    assert not orphans, ("images no page links and dvc.yaml does not draw: link them from a "
                         f"page (with the command that makes them) or remove them: {orphans}")


def test_an_image_nothing_shows_is_caught():
    a, b = ROOT / "docs" / "results" / "a.png", ROOT / "plots" / "previews" / "b.png"
    assert unshown_images([a, b], {a}, {ROOT / "plots" / "previews"}) == []
    assert unshown_images([a, b], {ROOT / "docs"}, {ROOT / "plots" / "previews"}) == \
        ["docs/results/a.png"]
    assert unshown_images([a, b], {a}, {ROOT / "plots" / "curves.png"}) == \
        ["plots/previews/b.png"]


# ------------------------------------------------------------------ docs/performance.md

BENCH = ROOT / "bench" / "results"
PERF = ROOT / "docs" / "performance.md"


def rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def bench_result(cells: list[str]) -> tuple[str, dict]:
    m = re.search(r"([\w.-]+\.json)", cells[0])
    if not m or not (BENCH / m[1]).is_file():
        raise KeyError(f"first cell {cells[0]!r} names no file of bench/results/")
    return m[1], json.loads((BENCH / m[1]).read_text())


def augment_entry(res: dict, recipe: str, size: str) -> dict:
    """A row of `augment`: keyed device/recipe/size; the first files' only key, `cpu`, was the
    version_1 recipe at 224x224."""
    key = RECIPES[recipe]
    size = {"224x224": "224", "32x32": "32"}[size]
    found = res["augment"].get(f"cpu/{key}/{size}")
    if found is None and (key, size) == ("version_1", "224"):
        found = res["augment"]["cpu"]
    if found is None:
        raise KeyError(f"no augment row {recipe} {size}")
    return found


RECIPES = {"version_1": "version_1", "DeiT-style": "deit"}


def step_entry(res: dict, model: str, batch: str, recipe: str) -> dict:
    """A row of `train_step`; rows without a recipe (the first files) ran version_1."""
    recipe = RECIPES[recipe]
    for t in res["train_step"]:
        if (t["model"], str(t["batch"]), t.get("recipe", "version_1")) == (model, batch, recipe):
            return t
    raise KeyError(f"no train_step row {model}, batch {batch}, {recipe}")


def fp32_bf16(res: dict, model: str, batch: int) -> str:
    t = next((t for t in res["train_step"] if t["model"] == model and t["batch"] == batch), None)
    if t is None or "model_only_cpu_bf16_autocast" not in t:
        return "not measured"
    return f"{rate(t['model_only'])} / {rate(t['model_only_cpu_bf16_autocast'])}"


def expect_augment(cells: list[str]) -> list[str | None]:
    _, res = bench_result(cells)
    a = augment_entry(res, cells[2], cells[3])
    return [None, res["machine"]["cpu"], None, None, rate(a["notebook_pil_1core"]),
            rate(a["batched_cpu_1thread"]),
            f"{a['batched_cpu_1thread'] / a['notebook_pil_1core']:.1f}x", rate(a["batched_cpu"])]


def expect_step(cells: list[str]) -> list[str | None]:
    _, res = bench_result(cells)
    t = step_entry(res, cells[1], cells[2], cells[3])
    return [None, None, None, None, rate(t["model_only"]), rate(t["project_path"]),
            rate(t["notebook_path"]), f"{t['project_path'] / t['notebook_path']:.1f}x",
            pct(t["data_path_share_of_step"]), pct(t["augment_share_of_step"])]


def expect_bf16(cells: list[str]) -> list[str | None]:
    _, res = bench_result(cells)
    return [None, res["machine"]["cpu"], ", ".join(res["machine"].get("isa", [])) or
            "not recorded", fp32_bf16(res, "vit-small-32 (default)", 128),
            fp32_bf16(res, "ViT-B/16-224 frozen", 8)]


def expect_noop(cells: list[str]) -> list[str | None]:
    _, res = bench_result(cells)
    seconds = res["noop_repro"].get("seconds")
    return [None, "not measured" if seconds is None else f"{seconds:.1f}"]


# A table of docs/performance.md is known by its header; each row's first cell names its result
# file, the next cells which entry of it, and the rest are that entry's figures.
PERF_TABLES = {
    ("result file", "CPU", "recipe", "output", "notebook, 1 core (img/s)",
     "project, 1 thread (img/s)", "per core", "project, all cores (img/s)"): expect_augment,
    ("result file", "model", "batch", "recipe", "model only (img/s)", "project path (img/s)",
     "notebook path (img/s)", "project / notebook", "data path share", "augmentation share"):
        expect_step,
    ("result file", "CPU", "ISA flags recorded",
     "default small ViT, batch 128: fp32 / bf16 (img/s)",
     "ViT-B/16 frozen, batch 8: fp32 / bf16 (img/s)"): expect_bf16,
    ("result file", "no-op `dvc repro` (s)"): expect_noop,
}


def cell_text(cell: str) -> str:
    """A table cell as read: a link's text, no bold, no code marks."""
    cell = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)
    return cell.replace("**", "").replace("`", "").strip()


def tables(text: str) -> list[tuple[int, list[str], list[tuple[int, list[str]]]]]:
    """(line, header cells, [(line, row cells)]) of every pipe table outside code blocks."""
    out, lines = [], dict(prose_lines(text))
    raw = text.splitlines()

    def cells(k: int) -> list[str]:
        return [c.strip() for c in raw[k - 1].strip().strip("|").split("|")]
    k = 1
    while k <= len(raw):
        if k in lines and raw[k - 1].lstrip().startswith("|") and k + 1 in lines and \
                re.match(r"^\s*\|?\s*:?-{3,}", raw[k]):
            head, rows, j = cells(k), [], k + 2
            while j <= len(raw) and j in lines and raw[j - 1].lstrip().startswith("|"):
                rows.append((j, cells(j)))
                j += 1
            out.append((k, head, rows))
            k = j
        else:
            k += 1
    return out


def perf_problems(text: str) -> tuple[list[str], set[str]]:
    """What in a performance page disagrees with bench/results/, and the result files it shows."""
    problems, files_shown = [], set()
    for line, head, rows in tables(text):
        expect = PERF_TABLES.get(tuple(head))
        if expect is None:
            problems.append(f"performance.md:{line}: a table the test does not check (header "
                            f"{head}); give it a header of PERF_TABLES or add one there")
            continue
        for k, row in rows:
            try:
                want = expect([row[0], *map(cell_text, row[1:])])
                files_shown.add(bench_result(row)[0])
            except (KeyError, IndexError) as e:
                problems.append(f"performance.md:{k}: {e}")
                continue
            for col, (have, need) in enumerate(zip(row, want)):
                if need is not None and cell_text(have) != need:
                    problems.append(f"performance.md:{k}: column {head[col]!r} says "
                                    f"{cell_text(have)!r}, {row[0]} records {need!r}")
    for k, line in prose_lines(text):
        if not line.lstrip().startswith("|") and \
                re.search(r"\d[\d,.]*\s?(?:img/s|ms\b|%|x\b)", line):
            problems.append(f"performance.md:{k}: a measured figure in prose (put it in a "
                            f"checked table): {line.strip()[:100]}")
    return problems, files_shown


def test_performance_tables_match_the_benchmark_results():
    problems, shown = perf_problems(PERF.read_text(encoding="utf-8"))
    unshown = sorted({p.name for p in BENCH.glob("*.json")} - shown)
    assert not problems, "\n  ".join(["docs/performance.md is stale:", *problems])
    assert not unshown, f"bench/results/ files no table of docs/performance.md shows: {unshown}"


def test_a_stale_performance_figure_is_caught():
    name = "cpu-2core-epyc-final.json"
    res = json.loads((BENCH / name).read_text())
    a = res["augment"]["cpu/version_1/224"]
    good = (f"| result file | CPU | recipe | output | notebook, 1 core (img/s) | project, 1 thread "
            f"(img/s) | per core | project, all cores (img/s) |\n"
            f"|---|---|---|---|---|---|---|---|\n"
            f"| [{name}](../bench/results/{name}) | {res['machine']['cpu']} | version_1 | 224x224 "
            f"| {rate(a['notebook_pil_1core'])} | {rate(a['batched_cpu_1thread'])} | "
            f"**{a['batched_cpu_1thread'] / a['notebook_pil_1core']:.1f}x** | "
            f"{rate(a['batched_cpu'])} |\n")
    assert perf_problems(good)[0] == []
    stale = good.replace(f"| {rate(a['batched_cpu'])} |", "| 9,999 |")
    assert len(perf_problems(stale)[0]) == 1
    assert "a measured figure in prose" in perf_problems(good + "\nIt is 8.8x faster.\n")[0][0]


# ------------------------------------------------------------------ results and generated text

def test_the_defaults_docs_state_in_prose_are_params_yamls():
    p, text = DEFAULT_PARAMS, (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    m = re.search(r"on \*\*([\d,]+) training images for (\d+) epochs at batch (\d+)\*\*", text)
    assert m, "docs/results.md no longer states the default regime as the test expects"
    assert [int(m[1].replace(",", "")), int(m[2]), int(m[3])] == \
        [p["study"]["train_sizes"][0], p["train"]["epochs"], p["train"]["batch_size"]]
    m = re.search(r"\(patch (\d+), width (\d+), (\d+) layers,\s+(\d+) heads\)", text)
    model = p["model"]
    assert m and [int(g) for g in m.groups()] == \
        [model["patch_size"], model["hidden_size"], model["num_layers"], model["num_heads"]]
    m = re.search(r"validated on ([\d,]+) held-out\s+images", text)
    assert m and int(m[1].replace(",", "")) == round(50000 * p["data"]["val_fraction"])
    m = re.search(r"`study.target_difference`\s+\(default `([\d.]+)`", text)
    assert m and float(m[1]) == p["study"]["target_difference"]
    m = re.search(r"the study runs those listed in `study.versions`, by default\s+(.*?):", text,
                  re.S)
    assert m, "docs/results.md no longer lists the default study's versions as the test expects"
    assert re.findall(r"`(\w+)`", m[1]) == p["study"]["versions"]


KNOB_HEADER = ["key", "default", "what it does"]


def knob_problems(text: str, params: dict) -> list[str]:
    """Rows of a `| key | default | what it does |` table whose default is not params.yaml's.
    A key cell names one or more `section.key` (joined by " / "), the default cell as many
    values, each read as YAML, so `[0, 1]`, `null` and `grayscale: [a, b]` all compare; a row
    whose key is a pattern (`aug.<op>`) is words only."""
    problems = []
    for _, head, rows in tables(text):
        if [cell_text(h).lower() for h in head] != KNOB_HEADER:
            continue
        for k, row in rows:
            keys = re.findall(r"`([\w.]+)`", row[0])
            if not keys:            # a row about a family of keys (`aug.<op>`): words only
                continue
            values = [v.strip().strip("`") for v in row[1].split(" / ")]
            if len(keys) != len(values):
                problems.append(f"line {k}: {len(keys)} key(s) but {len(values)} default(s)")
                continue
            for key, value in zip(keys, values):
                node = params
                for part in key.split("."):
                    node = node.get(part, KeyError) if isinstance(node, dict) else KeyError
                if node is KeyError:
                    problems.append(f"line {k}: {key} is not in params.yaml")
                elif yaml.safe_load(value) != node:
                    problems.append(f"line {k}: {key} defaults to {node!r}, not {value}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_knob_tables_state_params_yamls_defaults(page):
    problems = knob_problems(page.read_text(encoding="utf-8"), DEFAULT_PARAMS)
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_a_stale_knob_default_is_caught():
    params = {"study": {"seeds": [0, 1], "baseline": "none", "contrasts": {"g": ["a", "b"]}},
              "train": {"epochs": 40, "batch_size": 32}}
    table = ("| key | default | what it does |\n|---|---|---|\n"
             "| `study.seeds` | `[0, 1]` | one run each |\n"
             "| `study.contrasts` | `g: [a, b]` | named |\n"
             "| `train.epochs` / `train.batch_size` | `40` / `32` | the schedule |\n")
    assert knob_problems(table, params) == []
    stale = table.replace("`[0, 1]`", "`[0, 1, 2]`") + "| `train.lr` | `0.1` | gone |\n"
    assert len(knob_problems(stale, params)) == 2


def test_summary_keys_the_docs_name_exist():
    summary = json.loads((ROOT / "metrics" / "summary.json").read_text())

    def has(key: str) -> bool:
        node = summary
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for key in re.findall(r"\b([A-Za-z]\w*\.(?:finetuned|frozen)\.n\d+\.\w+)\b", text):
            assert has(key), f"{page.relative_to(ROOT)} names {key}, not in metrics/summary.json"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_included_generated_text_equals_its_file(page):
    """A page may quote a generated file between `<!-- include reports/x.md -->` (or
    `<!-- include reports/x.md PART -->` for its marked part) and `<!-- /include -->`; the quote
    must equal the file's current text."""
    for _, name, part, body, _ in INCLUDE.findall(page.read_text(encoding="utf-8")):
        assert (ROOT / name).is_file(), f"{page.name} includes {name}, which does not exist"
        assert body.strip() == generated_text(ROOT, name, part or None), (
            f"{page.relative_to(ROOT)}: the text quoted from {name} {part} is stale: run "
            "`python -m augvit.includes README.md docs/*.md`")


def test_a_stale_quote_of_generated_text_is_caught(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "r.md").write_text("# R\n<!-- reading:start -->\nA helps.\n<!-- reading:end -->\n")
    page = tmp_path / "p.md"
    page.write_text("<!-- include r.md reading -->\nA helps.\n<!-- /include -->\n")
    test_included_generated_text_equals_its_file(page)
    page.write_text("<!-- include r.md reading -->\nA hurts.\n<!-- /include -->\n")
    with pytest.raises(AssertionError, match="stale"):
        test_included_generated_text_equals_its_file(page)


def test_the_limits_docs_state_are_the_codes():
    from augvit.params import MAX_FILE_BYTES, MAX_NODES
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    m = re.search(r"refused above (\d+) MiB, and\s+refused when its YAML aliases .*? more than "
                  r"([\d,]+) values", text, re.S)
    assert m, "docs/security.md no longer states the params file's limits as the test expects"
    assert int(m[1]) << 20 == MAX_FILE_BYTES and int(m[2].replace(",", "")) == MAX_NODES


# ------------------------------------------------------------------ commands the docs give

def code_commands(text: str, program: str = "dvc exp run") -> list[tuple[int, str]]:
    """(line, command) of each `program` command in the fenced code blocks, continuation
    lines joined, the comment after it dropped."""
    out, fenced, pending, start = [], False, "", 0
    for k, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            continue
        line = re.sub(r"\s+#\s.*$", "", line)
        if pending:
            pending += " " + line.strip()
        elif program in line:
            pending, start = line[line.index(program):].strip(), k
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1]
        else:
            out.append((start, pending))
            pending = ""
    return out


def apply_overrides(params: dict, command: str) -> dict:
    """params.yaml as `dvc exp run -S` leaves it: key=value sets (the value read as YAML),
    +key=value adds a key, ~key removes one."""
    import copy
    import shlex
    p, words = copy.deepcopy(params), shlex.split(command)
    for flag, spec in zip(words, words[1:]):
        if flag not in ("-S", "--set-param"):
            continue
        key, _, value = spec.lstrip("+~").partition("=")
        *parents, leaf = key.split(".")
        node = p
        for part in parents:
            node = node.setdefault(part, {})
        if spec.startswith("~"):
            node.pop(leaf, None)
        else:
            node[leaf] = yaml.safe_load(value) if value else None
    return p


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_experiment_command_the_docs_give_is_valid_today(page):
    """Each `dvc exp run -S ...` in a code block yields params the validator accepts (commands
    with shell variables or placeholders are skipped)."""
    from augvit.params import ParamsError, parse_params
    base, problems = DEFAULT_PARAMS, []
    for line, command in code_commands(page.read_text(encoding="utf-8")):
        if re.search(r"\$|\.\.\.|…|<[a-z]|PATH|NAME", command):
            continue
        try:
            parse_params(apply_overrides(base, command))
        except ParamsError as e:
            problems.append(f"{page.relative_to(ROOT)}:{line}: `{command}`:\n{e}")
    if problems:
        pytest.fail("commands that give invalid params today:\n" + "\n".join(problems),
                    pytrace=False)


def test_the_command_reader_sees_overrides_and_continuations():
    text = "```bash\ndvc exp run -n x -S 'study.seeds=[0,1]' \\\n  -S '~versions.none'  # c\n```\n"
    [(line, command)] = code_commands(text)
    assert line == 2 and command.endswith("-S '~versions.none'")
    p = apply_overrides({"study": {"seeds": [0]}, "versions": {"none": []}}, command)
    assert p == {"study": {"seeds": [0, 1]}, "versions": {}}
    p = apply_overrides({}, "dvc exp run -S '+versions.deit=[hflip]' -S train.lr=0.001")
    assert p == {"versions": {"deit": ["hflip"]}, "train": {"lr": 0.001}}

"""Text from outside, shown: nothing in it acts on a terminal or renders as markup in a report."""
from __future__ import annotations

import re

import pytest

from augvit.markdown import READING_START, render_environments
from augvit.text import md, printable

HOSTILE = {
    "escape": "AMD\x1b]0;owned\x07\x1b[2J\x1b[31m",
    "newline heading": "x\n## Reading\n- **helps.** forged",
    "html": "<img src=x onerror=alert(1)><script>alert(1)</script>",
    "link": "[click](http://example.invalid) ![x](y)",
    "table": "a | b | c",
    "bidi": "safe\u202etxt.exe",
    "undecodable": b"name\xff\xfe.png".decode("utf-8", "surrogateescape"),
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_printable_shows_every_control_and_undecodable_byte(text):
    shown = printable(text)
    assert not re.search("[\x00-\x1f\x7f-\x9f\u202e\ud800-\udfff]", shown), ascii(shown)
    assert shown.isprintable() and shown.encode("utf-8")        # writable to any terminal


def test_printable_names_what_it_replaced():
    assert printable("a\x1b[31mb\nc\u202ed") == "a\\x1b[31mb\\x0ac\\u202ed"
    assert printable(b"x\xff".decode("utf-8", "surrogateescape")) == "x\\xff"
    assert printable("version_1 ünïcode 猫") == "version_1 ünïcode 猫"      # plain text as is


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_md_leaves_no_markup_and_no_line_break(text):
    shown = md(text)
    assert "\n" not in shown and "<" not in shown and ">" not in shown
    assert not re.search(r"(?<!\\)[\[\]|*#`]", shown), shown     # each one escaped


def test_a_model_files_environment_cannot_forge_the_report():
    """A pulled model file's record reaches the environments table: raw HTML, a forged
    section and terminal escapes there before; each is text now."""
    env = {"cpu": HOSTILE["newline heading"], "cpu_flags": [HOSTILE["html"]],
           "torch": HOSTILE["escape"], "precision": HOSTILE["table"]}
    report = render_environments({"v/finetuned/n24/seed0": env})
    assert "\n## Reading" not in report and READING_START not in report
    assert "<img" not in report and "<script" not in report and "\x1b" not in report
    row = report.splitlines()[-1]
    assert row.count(" | ") == 8, row                # still the table's 9 cells
    assert "x\\\\x0a\\#\\# Reading" in row and "&lt;img src=x" in row


def test_a_stage_error_keeps_its_lines_and_shows_outside_escapes(capsys):
    from augvit.io import StageError, user_errors
    with pytest.raises(SystemExit), user_errors("download"):
        raise StageError("first line\n  - 'train/cat/\x1b[2Jx.png' is too large")
    err = capsys.readouterr().err
    assert "first line\n  - 'train/cat/\\x1b[2Jx.png'" in err and "\x1b" not in err

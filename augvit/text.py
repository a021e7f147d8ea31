"""Text from outside (params values, model files, archives, file names), made safe where it is
shown. One rule, two places:

- a terminal (`printable`): every control character, escape sequence, bidirectional or
  zero-width mark, and every byte that was not valid UTF-8 (a file name decoded with
  surrogateescape) is written visibly as `\\xNN` or `\\uNNNN`, so nothing from outside can move
  the cursor, recolour, retitle or hide text;
- a Markdown report (`md`): the same, then HTML and the Markdown characters that make links,
  emphasis, code, headings or table cells escaped, so outside text reads as itself and never
  as markup (no raw HTML, no forged section: a newline is already visible as `\\x0a`).
"""
from __future__ import annotations

import re

# C0 and C1 controls, DEL, zero-width and bidirectional marks, line/paragraph separators, BOM,
# and lone surrogates (undecodable bytes of a file name).
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
                        "\ud800-\udfff]")
# Markdown's own characters; `_` only where it could open or close emphasis (not in version_1).
_MARKDOWN = re.compile(r"[\\`*\[\]#|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}


def _visible(m: re.Match) -> str:
    cp = ord(m.group())
    if 0xDC80 <= cp <= 0xDCFF:              # surrogateescape: the original byte
        return f"\\x{cp - 0xDC00:02x}"
    return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}"


def printable(text: object) -> str:
    """`text` for a terminal or a log: nothing in it acts, everything in it shows."""
    return _INVISIBLE.sub(_visible, str(text))


def md(text: object) -> str:
    """`text` for a Markdown report: printable, with HTML and Markdown escaped."""
    s = _MARKDOWN.sub(lambda m: "\\" + m.group(), printable(text))
    return "".join(_HTML.get(ch, ch) for ch in s)

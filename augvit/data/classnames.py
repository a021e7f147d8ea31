"""What a class name may be, wherever it comes from: a class folder, a Hugging Face dataset's
ClassLabel names, or data/raw/source.json and data/prepared/meta.json pulled from a DVC remote.

A class name becomes a folder name and a label in logs, plots and reports, so it must be plain:
no markup, no path, nothing some OS cannot hold as a folder name. Kept apart from the readers so
that the stages which only read class names back (train, evaluate, plots) depend on this file
alone.
"""
from __future__ import annotations

import re

from augvit.io import StageError

CLASS_NAME = re.compile(r"[\w ,.()+-]{1,100}")          # \w: letters and digits of any script
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"{p}{i}" for p in ("COM", "LPT")
                                                for i in range(1, 10))}
CLASS_RULE = ("letters, digits, spaces and _ - . , ( ) + only; 1 to 100 characters; not "
              "starting or ending with a space or a dot; not a Windows device name (CON, PRN, "
              "AUX, NUL, COM1-9, LPT1-9)")


def class_name_ok(name: object) -> bool:
    return (isinstance(name, str) and CLASS_NAME.fullmatch(name) is not None
            and name[0] not in " ." and name[-1] not in " ."
            and name.split(".")[0].upper() not in WINDOWS_DEVICES)


def check_class_names(classes: object, where: str,
                      error: type[StageError] = StageError) -> None:
    """Refuse, by name, a class list that is not a list of distinct plain names (CLASS_RULE)."""
    if not isinstance(classes, list) or not classes:
        raise error(f"{where}: the class names are {classes!r:.80}, not a list of names. The "
                    "copy is broken: fetch a fresh one and rerun. Nothing was written.")
    bad = [c for c in classes if not class_name_ok(c)]
    if bad:
        raise error(f"{where}: class name {bad[0]!r:.120} is not allowed; class names may "
                    f"hold {CLASS_RULE}. Rename the class (its folders in train/ and test/, "
                    "or the dataset's ClassLabel names) and rerun. Nothing was written.")
    if len(set(classes)) != len(classes):
        dupes = sorted({c for c in classes if classes.count(c) > 1})
        raise error(f"{where}: class name(s) {dupes} appear more than once; each class needs "
                    "one name. Fix the copy and rerun. Nothing was written.")

"""Which module holds each augmentation op's code, and that code's identity.

An op's code lives in augvit/augment/ops/ and is imported by name, only when a recipe uses the
op (`load_op`), so the shared input path (evaluation, an empty recipe) loads none of it. Each
version's recipe file records `code_identity` of its ops (stages/recipe.py): `train@*` depends
on that file instead of on the op modules, so an edit to one op retrains only the versions
that use it. tests/test_dvc_yaml.py checks OP_MODULES against the ops' imports.
"""
from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

OPS_DIR = Path(__file__).parent / "ops"

# op -> the modules of augvit/augment/ops/ its code is in: the op's own module (imported by
# load_op), then the helpers it imports.
OP_MODULES: dict[str, tuple[str, ...]] = {
    "hflip": ("hflip",),
    "crop": ("crop", "common"),
    "pad_crop": ("pad_crop",),
    "rand_augment": ("policy", "common"),
    "trivial_augment": ("policy", "common"),
    "color_jitter": ("color_jitter", "common"),
    "blur": ("blur", "common"),
    "grayscale": ("grayscale", "common"),
    "erasing": ("erasing",),
    "mixup": ("mixup_cutmix",),
    "cutmix": ("mixup_cutmix",),
}


def load_op(op: str) -> ModuleType:
    """The op's module, imported now (once per process)."""
    return importlib.import_module(f"{__package__}.ops.{OP_MODULES[op][0]}")


def op_files(op: str) -> list[Path]:
    return [OPS_DIR / f"{module}.py" for module in OP_MODULES[op]]


def code_identity(ops: Iterable[str]) -> dict[str, str]:
    """op -> sha256 over the bytes of its files (with their names), for each of `ops`."""
    out = {}
    for op in ops:
        digest = hashlib.sha256()
        for path in op_files(op):
            data = path.read_bytes()
            digest.update(f"{path.name}\0{len(data)}\0".encode())
            digest.update(data)
        out[op] = digest.hexdigest()
    return out

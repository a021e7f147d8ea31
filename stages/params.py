"""Typed, validated view of params.yaml.

Every stage calls `load_params()` before doing any work. Validation walks the whole file and
collects every problem, so a typo and an out-of-range value are reported together, each naming
the key, the bad value and what is allowed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

# Canonical order of the ops: geometric first, then photometric (timm's transforms_factory order).
# A version lists which ops it uses; the order they run in is always this one.
AUG_OPS = ("hflip", "crop", "color_jitter", "blur", "grayscale")
VERSION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class ParamsError(ValueError):
    """params.yaml is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str], path: str | Path = "params.yaml"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path} has {len(problems)} problem(s):\n{lines}\n"
                         f"Fix them in {path} (or in your `dvc exp run -S` overrides) and rerun.")


@dataclass(frozen=True)
class DataParams:
    source: str = "uoft-cs/cifar10"
    sha256: str | None = None       # expected checksum (archive file, else content); null: none
    image_size: int = 32
    val_fraction: float = 0.1
    train_size: int | None = None   # stratified subset of the train split (None: all of it)
    seed: int = 0


@dataclass(frozen=True)
class HFlip:
    p: float = 0.5


@dataclass(frozen=True)
class Crop:
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ColorJitter:
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.2


@dataclass(frozen=True)
class Blur:
    kernel_size: int = 3
    sigma: tuple[float, float] = (0.1, 2.0)


@dataclass(frozen=True)
class Grayscale:
    p: float = 0.2


AUG_TYPES = {"hflip": HFlip, "crop": Crop, "color_jitter": ColorJitter, "blur": Blur,
             "grayscale": Grayscale}


@dataclass(frozen=True)
class ModelParams:
    pretrained: str | None = None   # HF hub id or local folder; None builds from the config below
    image_size: int = 32
    patch_size: int = 4
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 3
    mlp_ratio: int = 4
    dropout: float = 0.0
    # A study axis: each listed setting trains every version (true: only the classifier, as the
    # seed notebook did). [false, true] runs both.
    freeze_backbone: tuple[bool, ...] = (False,)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TrainParams:
    seeds: tuple[int, ...] = (0,)
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    accelerator: str = "auto"       # auto | cpu | gpu
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"          # auto | ddp | ...: Lightning's names
    precision: str = "auto"         # auto: bf16-mixed on CUDA, 32-true elsewhere
    compile: bool = False


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = 500


@dataclass(frozen=True)
class PlotParams:
    preview_images: int = 4
    preview_draws: int = 5
    preview_seed: int = 0


@dataclass(frozen=True)
class Params:
    data: DataParams
    aug: dict[str, Any]             # op name -> settings dataclass, or False when switched off
    versions: dict[str, tuple[str, ...]]
    model: ModelParams
    train: TrainParams
    eval: EvalParams
    plots: PlotParams

    def recipe(self, version: str) -> dict[str, dict[str, Any]]:
        """The effective recipe of one version: its ops in canonical order, minus those set false."""
        names = self.versions[version]
        return {op: as_plain(self.aug[op]) for op in AUG_OPS
                if op in names and self.aug.get(op) is not False}


def as_plain(obj: Any) -> Any:
    """Dataclass -> plain dict/list (tuples become lists), for JSON and checkpoints."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: as_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [as_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------- validation helpers

def _typename(t: Any) -> str:
    return getattr(t, "__name__", str(t))


def _coerce(key: str, value: Any, default: Any, annotation: str, problems: list[str]) -> Any:
    """Check one value against the type implied by its default/annotation."""
    optional = "None" in annotation
    if value is None:
        if optional:
            return None
        problems.append(f"{key}: got null; expected {annotation}")
        return default
    if annotation.startswith("tuple"):
        inner = bool if "bool" in annotation else float if "float" in annotation else int
        if not isinstance(value, (list, tuple)) or (
                "..." not in annotation and len(value) != len(default)):
            want = "a list" if "..." in annotation else f"a list of {len(default)} numbers"
            problems.append(f"{key}: got {value!r}; expected {want}")
            return default
        out = []
        for i, v in enumerate(value):
            out.append(_coerce(f"{key}[{i}]", v, inner(0), _typename(inner), problems))
        return tuple(out)
    if "bool" in annotation:
        if not isinstance(value, bool):
            problems.append(f"{key}: got {value!r}; expected true or false")
            return default
        return value
    if "int" in annotation and "float" not in annotation:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: got {value!r}; expected a whole number")
            return default
        return value
    if "float" in annotation:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}: got {value!r}; expected a number")
            return default
        return float(value)
    if "str" in annotation:
        if not isinstance(value, str) or not value:
            problems.append(f"{key}: got {value!r}; expected a non-empty string")
            return default
        return value
    return value


def _build(cls: type, prefix: str, raw: Any, problems: list[str]) -> Any:
    """Build dataclass `cls` from mapping `raw`, refusing unknown keys and wrong types."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix}: got {raw!r}; expected a mapping of "
                        f"{', '.join(f.name for f in fields(cls))}")
        return cls()
    known = {f.name: f for f in fields(cls)}
    for k in raw:
        if k not in known:
            problems.append(f"{prefix}.{k}: unknown key; allowed keys: {', '.join(known)}")
    kwargs = {}
    for name, f in known.items():
        if name in raw:
            kwargs[name] = _coerce(f"{prefix}.{name}", raw[name], f.default, str(f.type), problems)
    return cls(**kwargs)


def _check(problems: list[str], ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        problems.append(f"{key}: got {value!r}; allowed: {allowed}")


def _check_prob(problems: list[str], key: str, p: float) -> None:
    _check(problems, 0.0 <= p <= 1.0, key, p, "a probability in [0, 1]")


def _check_range(problems: list[str], key: str, lo_hi: tuple, lo_bound: float,
                 hi_bound: float | None = None) -> None:
    lo, hi = lo_hi
    ok = lo_bound < lo <= hi and (hi_bound is None or hi <= hi_bound)
    bound = f"({lo_bound}, {hi_bound}]" if hi_bound is not None else f"> {lo_bound}"
    _check(problems, ok, key, list(lo_hi), f"[min, max] with min <= max, both {bound}")


def _validate_aug(raw: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        problems.append(f"aug: got {raw!r}; expected a mapping of ops ({', '.join(AUG_OPS)})")
        return {}
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in AUG_TYPES:
            problems.append(f"aug.{name}: unknown augmentation op; allowed ops: {', '.join(AUG_OPS)}")
            continue
        if value is False:
            out[name] = False
            continue
        if not isinstance(value, dict):
            problems.append(f"aug.{name}: got {value!r}; expected false (op off for the whole "
                            f"study) or a mapping of its settings "
                            f"({', '.join(f.name for f in fields(AUG_TYPES[name]))})")
            continue
        out[name] = _build(AUG_TYPES[name], f"aug.{name}", value, problems)
    for name in AUG_OPS:
        out.setdefault(name, False)   # an op absent from `aug` is off
    _check_aug_ranges(out, problems)
    return out


def _check_aug_ranges(aug: dict[str, Any], problems: list[str]) -> None:
    if aug["hflip"]:
        _check_prob(problems, "aug.hflip.p", aug["hflip"].p)
    if aug["grayscale"]:
        _check_prob(problems, "aug.grayscale.p", aug["grayscale"].p)
    if aug["crop"]:
        _check_range(problems, "aug.crop.scale", aug["crop"].scale, 0.0, 1.0)
        _check_range(problems, "aug.crop.ratio", aug["crop"].ratio, 0.0)
    if aug["color_jitter"]:
        cj = aug["color_jitter"]
        for k in ("brightness", "contrast", "saturation"):
            _check(problems, getattr(cj, k) >= 0, f"aug.color_jitter.{k}", getattr(cj, k),
                   "a number >= 0 (factor drawn from [max(0, 1-x), 1+x])")
        _check(problems, 0 <= cj.hue <= 0.5, "aug.color_jitter.hue", cj.hue,
               "a number in [0, 0.5]")
    if aug["blur"]:
        k = aug["blur"].kernel_size
        _check(problems, k > 0 and k % 2 == 1, "aug.blur.kernel_size", k,
               "an odd whole number >= 1")
        _check_range(problems, "aug.blur.sigma", aug["blur"].sigma, 0.0)


def _validate_versions(raw: Any, problems: list[str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"versions: got {raw!r}; expected a non-empty mapping "
                        f"version name -> list of ops ({', '.join(AUG_OPS)})")
        return {}
    out = {}
    for name, ops in raw.items():
        if not isinstance(name, str) or not VERSION_NAME.match(name):
            problems.append(f"versions.{name}: invalid version name {name!r}; allowed: a letter "
                            "then letters, digits or _ (it names DVC stages and folders)")
            continue
        if ops is None:
            ops = []
        if not isinstance(ops, list) or not all(isinstance(o, str) for o in ops):
            problems.append(f"versions.{name}: got {ops!r}; expected a list of op names "
                            f"({', '.join(AUG_OPS)}); [] means no augmentation")
            continue
        for op in ops:
            if op not in AUG_TYPES:
                problems.append(f"versions.{name}: unknown op {op!r}; allowed ops: "
                                f"{', '.join(AUG_OPS)}")
        if len(set(ops)) != len(ops):
            problems.append(f"versions.{name}: got {ops!r}; an op may be listed once")
        out[name] = tuple(ops)
    return out


def _check_sections(p: dict, problems: list[str]) -> None:
    d, m, t = p["data"], p["model"], p["train"]
    if d.sha256 is not None:
        _check(problems, re.fullmatch(r"[0-9a-f]{64}", d.sha256) is not None, "data.sha256",
               d.sha256, "null or 64 lowercase hex digits (sha256sum's output)")
    _check(problems, d.image_size >= 8, "data.image_size", d.image_size, "a whole number >= 8")
    _check(problems, 0.0 < d.val_fraction < 1.0, "data.val_fraction", d.val_fraction,
           "a number in (0, 1)")
    if d.train_size is not None:
        _check(problems, d.train_size >= 1, "data.train_size", d.train_size,
               "null (all) or a whole number >= 1")
    _check(problems, m.image_size >= 8, "model.image_size", m.image_size, "a whole number >= 8")
    _check(problems, m.patch_size >= 1 and m.image_size % max(m.patch_size, 1) == 0,
           "model.patch_size", m.patch_size, f"a whole number >= 1 dividing model.image_size "
           f"({m.image_size})")
    for k in ("hidden_size", "num_layers", "num_heads", "mlp_ratio"):
        _check(problems, getattr(m, k) >= 1, f"model.{k}", getattr(m, k), "a whole number >= 1")
    _check(problems, m.num_heads >= 1 and m.hidden_size % max(m.num_heads, 1) == 0,
           "model.num_heads", m.num_heads,
           f"a whole number >= 1 dividing model.hidden_size ({m.hidden_size})")
    _check(problems, 0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "a number in [0, 1)")
    _check(problems, all(s > 0 for s in m.std), "model.std", list(m.std), "3 numbers > 0")
    _check(problems, len(m.freeze_backbone) >= 1 and
           len(set(m.freeze_backbone)) == len(m.freeze_backbone), "model.freeze_backbone",
           list(m.freeze_backbone), "a non-empty list of distinct booleans: [false], [true] or "
           "[false, true]")
    _check(problems, len(t.seeds) >= 1 and len(set(t.seeds)) == len(t.seeds), "train.seeds",
           list(t.seeds), "a non-empty list of distinct whole numbers")
    _check(problems, t.epochs >= 1, "train.epochs", t.epochs, "a whole number >= 1")
    _check(problems, t.batch_size >= 1, "train.batch_size", t.batch_size, "a whole number >= 1")
    _check(problems, t.lr > 0, "train.lr", t.lr, "a number > 0")
    _check(problems, t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "a number >= 0")
    _check(problems, 0 <= t.warmup_epochs <= t.epochs, "train.warmup_epochs", t.warmup_epochs,
           f"a number in [0, train.epochs={t.epochs}]")
    _check(problems, 0.0 <= t.label_smoothing < 1.0, "train.label_smoothing",
           t.label_smoothing, "a number in [0, 1)")
    _check(problems, t.accelerator in ("auto", "cpu", "gpu", "cuda"), "train.accelerator",
           t.accelerator, "auto, cpu, gpu or cuda")
    _check(problems, t.devices >= 1, "train.devices", t.devices, "a whole number >= 1")
    _check(problems, t.num_nodes >= 1, "train.num_nodes", t.num_nodes, "a whole number >= 1")
    _check(problems, t.precision in ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"),
           "train.precision", t.precision, "auto, 32-true, bf16-mixed, 16-mixed or bf16-true")
    _check(problems, p["eval"].batch_size >= 1, "eval.batch_size", p["eval"].batch_size,
           "a whole number >= 1")
    pl = p["plots"]
    _check(problems, 1 <= pl.preview_images <= 16, "plots.preview_images", pl.preview_images,
           "a whole number in [1, 16]")
    _check(problems, 1 <= pl.preview_draws <= 16, "plots.preview_draws", pl.preview_draws,
           "a whole number in [1, 16]")


SECTIONS = {"data": DataParams, "model": ModelParams, "train": TrainParams, "eval": EvalParams,
            "plots": PlotParams}


def parse_params(raw: Any, path: str | Path = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ParamsError([f"top level: got {type(raw).__name__}; expected a mapping"], path)
    allowed = set(SECTIONS) | {"aug", "versions"}
    for k in raw:
        if k not in allowed:
            problems.append(f"{k}: unknown section; allowed sections: {', '.join(sorted(allowed))}")
    built = {name: _build(cls, name, raw.get(name), problems) for name, cls in SECTIONS.items()}
    aug = _validate_aug(raw.get("aug", {}), problems)
    versions = _validate_versions(raw.get("versions"), problems)
    _check_sections(built, problems)
    if problems:
        raise ParamsError(problems, path)
    return Params(aug=aug, versions=versions, **built)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError([f"file not found (cwd: {Path.cwd()})"], path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError([f"not valid YAML: {e}"], path) from None
    return parse_params(raw, path)

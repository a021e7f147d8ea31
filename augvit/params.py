"""params.yaml, typed and validated: the one source of every number.

Each section is a pydantic model with no defaults: a key missing from params.yaml is an error
that names it. Validation walks the whole file and reports every problem at once, each as
`key: got VALUE; allowed: WHAT`, before any stage works. Field checks are pydantic's (types,
ranges); what relates two fields (a patch size that divides the image size, a baseline that is
one of the versions) is checked here once the fields themselves are valid.

Sections: data, aug (each op's settings, or false), versions (which ops each version uses),
study (the axes: seeds, backbone settings, train sizes; and the baseline version), model, train,
eval, plots.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from augvit.io import StageError, user_errors
from augvit.text import printable

# Version and contrast names become DVC stage names, folder names and words of the command
# lines a shell runs: identifiers only, so none of them can hold a path or shell syntax.
VERSION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class ParamsError(StageError):
    """params.yaml is invalid; the message lists every problem found."""

    def __init__(self, problems: list[str], path: str | Path = "params.yaml"):
        self.problems = [printable(p) for p in problems]   # keys and values from outside
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{path} has {len(problems)} problem(s):\n{lines}\n"
                         f"Fix them in {path} (or in your `dvc exp run -S` overrides) and rerun.")


class Section(BaseModel):
    """Unknown keys refused, no coercion (3 is not "3", 1 is not true), immutable."""
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def allowed(text: str, **constraints: Any) -> Any:
    """A field whose error message says `text` (pydantic enforces `constraints`)."""
    return Field(description=text, **constraints)


Prob = Annotated[float, allowed("a probability in [0, 1]", ge=0, le=1)]
Pair = tuple[float, float]


# ------------------------------------------------------------------ augmentation ops

class HFlip(Section):
    p: Prob


class Crop(Section):                     # RandomResizedCrop
    scale: Pair = allowed("[min, max] with 0 < min <= max <= 1")
    ratio: Pair = allowed("[min, max] with 0 < min <= max")


class ColorJitter(Section):
    brightness: float = allowed("a number >= 0 (factor drawn from [max(0, 1-x), 1+x])", ge=0)
    contrast: float = allowed("a number >= 0 (factor drawn from [max(0, 1-x), 1+x])", ge=0)
    saturation: float = allowed("a number >= 0 (factor drawn from [max(0, 1-x), 1+x])", ge=0)
    hue: float = allowed("a number in [0, 0.5]", ge=0, le=0.5)


class Blur(Section):                     # GaussianBlur at the model's input size
    kernel_size: int = allowed("an odd whole number >= 1", ge=1)
    sigma: Pair = allowed("[min, max] with 0 < min <= max")


class Grayscale(Section):
    p: Prob


class PadCrop(Section):                  # RandomCrop(stored size, padding): the CIFAR crop
    padding: int = allowed("a whole number of pixels >= 1 (at the stored size)", ge=1)
    fill: Literal["zero", "reflect"] = allowed("zero (black) or reflect")


class RandAugment(Section):              # torchvision RandAugment, 31 magnitude bins
    num_ops: int = allowed("a whole number >= 1 (ops per image)", ge=1)
    magnitude: int = allowed("a whole number in [0, 30] (a bin of 31)", ge=0, le=30)


class TrivialAugment(Section):           # torchvision TrivialAugmentWide: no settings
    pass


class Erasing(Section):                  # RandomErasing, on the normalized input
    p: Prob
    scale: Pair = allowed("[min, max] with 0 < min <= max <= 1 (area fraction)")
    ratio: Pair = allowed("[min, max] with 0 < min <= max (aspect ratio)")
    value: Literal["random", "zero"] = allowed("random (normal noise) or zero (mean colour)")


class Mixup(Section):
    alpha: float = allowed("a number > 0 (lambda ~ Beta(alpha, alpha))", gt=0)


class CutMix(Section):
    alpha: float = allowed("a number > 0 (lambda ~ Beta(alpha, alpha))", gt=0)


# The ops in the order they run, whatever order a version lists them in: geometric (crop or
# pad_crop, flip) -> policy (rand_augment or trivial_augment) -> photometric (jitter, blur,
# grayscale) -> normalize -> erasing -> batch mixing (mixup, cutmix). (timm's transforms_factory
# order; DeiT's recipe.)
AUG_TYPES: dict[str, type[Section]] = {
    "hflip": HFlip, "crop": Crop, "pad_crop": PadCrop, "rand_augment": RandAugment,
    "trivial_augment": TrivialAugment, "color_jitter": ColorJitter, "blur": Blur,
    "grayscale": Grayscale, "erasing": Erasing, "mixup": Mixup, "cutmix": CutMix}
AUG_OPS = tuple(AUG_TYPES)
# A version may use one op of each of these pairs, not both.
EXCLUSIVE = (("crop", "pad_crop"), ("rand_augment", "trivial_augment"))


# ------------------------------------------------------------------ settings sections

class DataParams(Section):
    source: Annotated[str, Field(min_length=1)] | list[Annotated[str, Field(min_length=1)]] = \
        allowed("a Hugging Face dataset id or a local folder/archive, or a non-empty list of "
                "them tried in turn")
    sha256: str | None = allowed("null or 64 lowercase hex digits (sha256sum's output)",
                                 pattern=r"^[0-9a-f]{64}$")
    image_size: int = allowed("a whole number >= 8", ge=8)
    val_fraction: float = allowed("a number in (0, 1)", gt=0, lt=1)
    seed: int = allowed("a whole number in [0, 4294967295]", ge=0, le=2**32 - 1)
    # Limits on what a data source may hold: an archive or folder that claims more is refused
    # by name before its bytes are read (a small archive can claim gigabytes).
    max_image_mb: float = allowed("a number > 0 (megabytes one image file may have)", gt=0)
    max_total_mb: float = allowed("a number > 0 (megabytes all kept image files may have)",
                                  gt=0)
    max_image_pixels: int = allowed("a whole number >= 1 (width x height one image may have)",
                                    ge=1)


class StudyParams(Section):
    """The study's axes (one run per version x backbone x train size x seed) and its baseline."""
    versions: list[str] = allowed(
        "a non-empty list of distinct names defined under `versions`: the ones the study runs",
        min_length=1)
    baseline: str = allowed("one of study.versions")
    seeds: list[int] = allowed("a non-empty list of distinct whole numbers", min_length=1)
    train_sizes: list[Annotated[int, Field(ge=1)]] = allowed(
        "a non-empty list of distinct whole numbers >= 1 (images of the train split; a smaller "
        "size is a subset of a larger one)", min_length=1)
    backbones: list[Literal["finetuned", "frozen"]] = allowed(
        "a non-empty list of distinct settings: [finetuned], [frozen] or [finetuned, frozen]",
        min_length=1)
    contrasts: dict[str, tuple[str, str]] = allowed(
        "a mapping name -> [version, other version] (the first minus the second, paired by "
        "seed); {} for none")
    looks: list[Annotated[int, Field(ge=2)]] = allowed(
        "a non-empty, increasing list of seed counts >= 2 at which the study is read (its "
        "error rate is spent over them); the last is the most seeds the design allows",
        min_length=1)
    spending: Literal["obrien_fleming", "pocock"] = allowed(
        "obrien_fleming or pocock: how the error rate is spent over study.looks")
    target_difference: float = allowed(
        "a number in (0, 1): the smallest difference in test accuracy worth finding (0.01 = 1 "
        "point); the report's power figures and verdicts use it", gt=0, lt=1)
    max_runs: int = allowed(
        "a whole number >= 1: the most runs (versions x backbones x train sizes x seeds) the "
        "study may define; DVC plans one stage per run", ge=1)


class ModelParams(Section):
    pretrained: str | None = allowed("null (build from the numbers below), a hub id or a "
                                     "local folder", min_length=1)
    image_size: int = allowed("a whole number >= 8", ge=8)
    patch_size: int = allowed("a whole number >= 1 dividing model.image_size", ge=1)
    hidden_size: int = allowed("a whole number >= 1", ge=1)
    num_layers: int = allowed("a whole number >= 1", ge=1)
    num_heads: int = allowed("a whole number >= 1 dividing model.hidden_size", ge=1)
    mlp_ratio: int = allowed("a whole number >= 1", ge=1)
    dropout: float = allowed("a number in [0, 1)", ge=0, lt=1)
    mean: tuple[float, float, float] = allowed("3 numbers")
    std: tuple[float, float, float] = allowed("3 numbers > 0")


class TrainParams(Section):
    epochs: int = allowed("a whole number >= 1", ge=1)
    batch_size: int = allowed("a whole number >= 1", ge=1)
    val_batch_size: int = allowed("a whole number >= 1 (validation after each epoch; it "
                                  "changes no trained weight)", ge=1)
    lr: float = allowed("a number > 0", gt=0)
    weight_decay: float = allowed("a number >= 0", ge=0)
    warmup_epochs: float = allowed("a number in [0, train.epochs]", ge=0)
    label_smoothing: float = allowed("a number in [0, 1)", ge=0, lt=1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = allowed(
        "auto, cpu, gpu, cuda or mps (Apple silicon)")
    devices: int = allowed("a whole number >= 1", ge=1)
    num_nodes: int = allowed("a whole number >= 1", ge=1)
    strategy: str = allowed("a Lightning strategy name: auto, ddp, ...", min_length=1)
    precision: Literal["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true"] = allowed(
        "auto, 32-true, bf16-mixed, 16-mixed or bf16-true")
    compile: bool = allowed("true or false")
    ema_decay: float = allowed("a number in [0, 1): the decay of the exponential moving "
                               "average of the weights that validation and the model file "
                               "use; 0 keeps the last weights", ge=0, lt=1)
    val_every: int = allowed("a whole number >= 1: validate after every this many epochs, "
                             "at most train.epochs (the curves' points; no trained weight "
                             "depends on it)", ge=1)


class EvalParams(Section):
    batch_size: int = allowed("a whole number >= 1", ge=1)


class PlotParams(Section):
    preview_images: int = allowed("a whole number in [1, 16]", ge=1, le=16)
    preview_draws: int = allowed("a whole number in [1, 16]", ge=1, le=16)
    preview_seed: int = allowed("a whole number")


SECTIONS: dict[str, type[Section]] = {
    "data": DataParams, "study": StudyParams, "model": ModelParams, "train": TrainParams,
    "eval": EvalParams, "plots": PlotParams}
ALL_SECTIONS = ("data", "aug", "versions", "study", "model", "train", "eval", "plots")


@dataclass(frozen=True)
class Params:
    data: DataParams
    aug: dict[str, Section | bool]          # op name -> its settings, or False (off everywhere)
    versions: dict[str, tuple[str, ...]]
    study: StudyParams
    model: ModelParams
    train: TrainParams
    eval: EvalParams
    plots: PlotParams

    def recipe(self, version: str) -> dict[str, dict[str, Any]]:
        """One version's effective recipe: its ops in canonical order, minus those set false."""
        names = self.versions[version]
        return {op: plain(self.aug[op]) for op in AUG_OPS
                if op in names and self.aug[op] is not False}


def plain(obj: Any) -> Any:
    """A section (or value) as plain JSON data: tuples become lists."""
    if isinstance(obj, BaseModel):
        return json.loads(obj.model_dump_json())
    return obj


# ------------------------------------------------------------------ validation

def _at(raw: Any, loc: tuple) -> Any:
    for k in loc:
        try:
            raw = raw[k]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _section(name: str, cls: type[Section], raw: Any, problems: list[str]) -> Section | None:
    """Validate one section; every problem goes to `problems` in the house format."""
    if not isinstance(raw, dict):
        problems.append(f"{name}: got {raw!r}; expected a mapping of "
                        f"{', '.join(cls.model_fields)}")
        return None
    try:
        return cls.model_validate_json(json.dumps(raw))
    except ValidationError as e:
        seen = set()
        for err in e.errors():
            field = err["loc"][0] if err["loc"] else None
            key = f"{name}.{field}"
            if key in seen:                 # one message per key (a pair's two halves, say)
                continue
            seen.add(key)
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key; allowed keys: "
                                f"{', '.join(cls.model_fields)}")
            elif err["type"] == "missing" and len(err["loc"]) == 1:
                problems.append(f"{key}: missing; allowed: "
                                f"{cls.model_fields[field].description}")
            else:
                problems.append(f"{key}: got {_at(raw, (field,))!r}; allowed: "
                                f"{cls.model_fields[field].description}")
        return None


def _check(problems: list[str], ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        problems.append(f"{key}: got {value!r}; allowed: {what}")


def _check_range(problems: list[str], key: str, pair: Pair, hi: float | None = None) -> None:
    lo_, hi_ = pair
    _check(problems, 0 < lo_ <= hi_ and (hi is None or hi_ <= hi), key, list(pair),
           "[min, max] with 0 < min <= max" + (f" <= {hi:g}" if hi is not None else ""))


def _aug(raw: Any, problems: list[str]) -> dict[str, Section | bool]:
    if not isinstance(raw, dict):
        problems.append(f"aug: got {raw!r}; expected a mapping of every op "
                        f"({', '.join(AUG_OPS)}) to its settings or false")
        return {}
    out: dict[str, Section | bool] = {}
    for name, value in raw.items():
        if name not in AUG_TYPES:
            problems.append(f"aug.{name}: unknown augmentation op; allowed ops: "
                            f"{', '.join(AUG_OPS)}")
        elif value is False:
            out[name] = False
        elif not isinstance(value, dict):
            problems.append(f"aug.{name}: got {value!r}; expected false (op off for the whole "
                            f"study) or a mapping of its settings "
                            f"({', '.join(AUG_TYPES[name].model_fields)})")
        elif (op := _section(f"aug.{name}", AUG_TYPES[name], value, problems)) is not None:
            out[name] = op
    for name in AUG_OPS:
        if name not in raw:
            problems.append(f"aug.{name}: missing; allowed: false or a mapping of its settings "
                            f"({', '.join(AUG_TYPES[name].model_fields)})")
    if isinstance(out.get("crop"), Crop):
        _check_range(problems, "aug.crop.scale", out["crop"].scale, hi=1.0)
        _check_range(problems, "aug.crop.ratio", out["crop"].ratio)
    if isinstance(out.get("erasing"), Erasing):
        _check_range(problems, "aug.erasing.scale", out["erasing"].scale, hi=1.0)
        _check_range(problems, "aug.erasing.ratio", out["erasing"].ratio)
    if isinstance(out.get("blur"), Blur):
        _check(problems, out["blur"].kernel_size % 2 == 1, "aug.blur.kernel_size",
               out["blur"].kernel_size, "an odd whole number >= 1")
        _check_range(problems, "aug.blur.sigma", out["blur"].sigma)
    return out


def _versions(raw: Any, problems: list[str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict) or not raw:
        problems.append(f"versions: got {raw!r}; expected a non-empty mapping "
                        f"version name -> list of ops ({', '.join(AUG_OPS)})")
        return {}
    out = {}
    for name, ops in raw.items():
        if not isinstance(name, str) or not VERSION_NAME.match(name):
            problems.append(f"versions: invalid version name {name!r}; allowed: a letter then "
                            "letters, digits or _, at most 64 (it names DVC stages, folders and "
                            "words of command lines)")
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
        for a, b in EXCLUSIVE:
            if a in ops and b in ops:
                problems.append(f"versions.{name}: got {ops!r}; {a} and {b} do the same job: "
                                "list one of them")
        out[name] = tuple(ops)
    return out


def _relations(s: dict[str, Any], versions: dict, problems: list[str]) -> None:
    """What relates two fields, checked once each field is valid on its own."""
    if m := s.get("model"):
        _check(problems, m.image_size % m.patch_size == 0, "model.patch_size", m.patch_size,
               f"a whole number >= 1 dividing model.image_size ({m.image_size})")
        _check(problems, m.hidden_size % m.num_heads == 0, "model.num_heads", m.num_heads,
               f"a whole number >= 1 dividing model.hidden_size ({m.hidden_size})")
        _check(problems, all(math.isfinite(x) for x in m.mean), "model.mean", list(m.mean),
               "3 finite numbers (not nan or inf)")
        _check(problems, all(math.isfinite(x) and x > 0 for x in m.std), "model.std",
               list(m.std), "3 finite numbers > 0")
    if t := s.get("train"):
        _check(problems, t.warmup_epochs <= t.epochs, "train.warmup_epochs", t.warmup_epochs,
               f"a number in [0, train.epochs={t.epochs}]")
    if st := s.get("study"):
        _check(problems, len(set(st.seeds)) == len(st.seeds), "study.seeds", st.seeds,
               "a non-empty list of distinct whole numbers")
        _check(problems, all(a < b for a, b in zip(st.looks, st.looks[1:])), "study.looks",
               st.looks, "an increasing list of seed counts >= 2")
        _check(problems, len(st.seeds) <= max(st.looks), "study.seeds",
               f"{len(st.seeds)} seeds", f"at most the design's last look, {max(st.looks)} "
               "seeds (study.looks): extend study.looks to plan more")
        _check(problems, len(set(st.train_sizes)) == len(st.train_sizes), "study.train_sizes",
               st.train_sizes, "a non-empty list of distinct whole numbers >= 1")
        _check(problems, len(set(st.backbones)) == len(st.backbones), "study.backbones",
               st.backbones, "a non-empty list of distinct settings: [finetuned], [frozen] or "
               "[finetuned, frozen]")
        if versions:
            _check(problems, len(set(st.versions)) == len(st.versions) and
                   all(v in versions for v in st.versions), "study.versions", st.versions,
                   f"distinct names defined under versions ({', '.join(versions)})")
        n_runs = len(st.versions) * len(st.backbones) * len(st.train_sizes) * len(st.seeds)
        _check(problems, n_runs <= st.max_runs, "study", f"{n_runs} runs", f"at most "
               f"study.max_runs={st.max_runs} runs (versions x backbones x train_sizes x seeds); "
               "raise study.max_runs in params.yaml to run a larger study")
        _check(problems, st.baseline in st.versions, "study.baseline", st.baseline,
               f"one of study.versions ({', '.join(st.versions)})")
        for name, pair in st.contrasts.items():
            _check(problems, bool(VERSION_NAME.match(name)), "study.contrasts", name,
                   "a contrast name of a letter then letters, digits or _ (at most 64)")
            _check(problems, pair[0] != pair[1] and all(v in st.versions for v in pair),
                   f"study.contrasts.{name}", list(pair),
                   f"two different versions of study.versions ({', '.join(st.versions)})")


def parse_params(raw: Any, path: str | Path = "params.yaml") -> Params:
    """Validate a params mapping; raise ParamsError listing every problem."""
    if not isinstance(raw, dict):
        raise ParamsError([f"top level: got {type(raw).__name__}; expected a mapping"], path)
    problems: list[str] = []
    for k in raw:
        if k not in ALL_SECTIONS:
            problems.append(f"{k}: unknown section; allowed sections: {', '.join(ALL_SECTIONS)}")
    for k in ALL_SECTIONS:
        if k not in raw:
            problems.append(f"{k}: missing section; params.yaml needs every section: "
                            f"{', '.join(ALL_SECTIONS)}")
    built = {name: _section(name, cls, raw[name], problems)
             for name, cls in SECTIONS.items() if name in raw}
    aug = _aug(raw.get("aug"), problems) if "aug" in raw else {}
    versions = _versions(raw.get("versions"), problems) if "versions" in raw else {}
    _relations(built, versions, problems)
    if problems:
        raise ParamsError(problems, path)
    return Params(aug=aug, versions=versions, **built)


MAX_FILE_BYTES = 1 << 20       # params.yaml is a page of settings, not data
MAX_NODES = 100_000            # values once YAML aliases are expanded (today's file: ~150)


def expanded_size(obj: Any, limit: int) -> int:
    """How many values `obj` holds with every YAML alias expanded, counting up to `limit`.

    Aliases make a YAML tree share nodes, so a 2 KB file can stand for billions of values
    (the "billion laughs"); anything that copies or serializes it would build them all. The
    walk stops as soon as the count passes `limit`, so it is cheap for any input."""
    count, todo = 0, [obj]
    while todo and count <= limit:
        node = todo.pop()
        count += 1
        if isinstance(node, dict):
            todo.extend(node.keys())
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return count


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ParamsError([f"file not found (cwd: {Path.cwd()})"], path)
    if (size := path.stat().st_size) > MAX_FILE_BYTES:
        raise ParamsError([f"the file is {size} bytes; allowed: at most {MAX_FILE_BYTES}"], path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ParamsError([f"not valid YAML: {e}"], path) from None
    except RecursionError:
        raise ParamsError([DEEP], path) from None
    if expanded_size(raw, MAX_NODES) > MAX_NODES:
        raise ParamsError([f"with its YAML aliases (&name / *name) expanded, it holds more "
                           f"than {MAX_NODES} values; write the values out, without nested "
                           "aliases"], path)
    try:
        return parse_params(raw, path)
    except RecursionError:
        raise ParamsError([DEEP], path) from None


DEEP = ("its lists or mappings nest deeper than Python parses (params.yaml needs four levels); "
        "write the values out flat")


class CheckParams(argparse.Action):
    """`python -m stages.X --check-params`: validate params.yaml (--params, if given before it)
    and exit, 0 when valid, 2 with every problem named.

    dvc.yaml runs it first on each command line that holds params values,
    `python -m stages.X --check-params || exit 2; python -m stages.X --version ...`, so the
    shell exits before it reaches any value that is not what its key allows, whichever DVC
    command runs the stage (`repro`, `--single-item`, `--downstream`, `exp run`, a queue)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs=0, help="validate params.yaml and exit: "
                         "0 when valid, 2 with every problem named")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        with user_errors(parser.prog.removesuffix(".py")):
            load_params(namespace.params)
        parser.exit(0)

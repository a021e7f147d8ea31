"""The ViT classifier, and the model file that carries everything needed to rebuild it.

`ViTClassifier` is a plain `nn.Module` (Hugging Face's ViT plus the study's input path), so
evaluation rebuilds and runs it without Lightning; training wraps it (augvit/training.py).
The model file holds its config: the ViT config, the input size, mean and std, the class names,
the recipe it was trained with and the run it came from. Evaluation never re-derives any of it
from params.yaml.

A model file may arrive from a DVC remote or cache, so it is data that cannot run code:
safetensors (tensors only) with the config as JSON in its header. Loading validates the config
against a strict schema and the tensors' names and shapes against the model that config builds
(on the meta device, so a config that claims a huge model allocates nothing) before any weight
is read. A pickle, the earlier format, is refused unread.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from augvit.augment import build_inputs
from augvit.data.classnames import CLASS_RULE, class_name_ok
from augvit.io import StageError, atomic_path
from augvit.params import AUG_TYPES, VERSION_NAME, ModelParams

FORMAT = "augvit-classifier/3"
# The header's one metadata entry: format, config and record as one JSON object. safetensors
# writes a metadata map in an order that varies between processes, so with several entries the
# same model would get different bytes, and a different md5 in dvc.lock, on every run.
HEADER_KEY = "augvit"
# A model file's JSON header (tensor names, shapes, offsets and this project's config) is a few
# KB to a few MB (100,000 class names of 100 characters: 10 MB); parsing one costs about 25x
# its size in memory, so a longer one is refused by its 8-byte length before it is parsed.
MAX_HEADER_BYTES = 16 << 20
SUFFIX = ".safetensors"


def vit_config(m: ModelParams, num_labels: int) -> dict[str, Any]:
    """A from-scratch ViT config from params (ViT-B/16 would be 224/16/768/12/12/4)."""
    return ViTConfig(
        image_size=m.image_size, patch_size=m.patch_size, hidden_size=m.hidden_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
        intermediate_size=m.mlp_ratio * m.hidden_size, hidden_dropout_prob=m.dropout,
        attention_probs_dropout_prob=m.dropout, num_labels=num_labels,
    ).to_dict()


def build_vit(config: dict[str, Any] | None, pretrained: str | None,
              num_labels: int) -> ViTForImageClassification:
    """From a pretrained hub id / local folder (new classifier head), or from a config dict."""
    if pretrained:
        return ViTForImageClassification.from_pretrained(
            pretrained, num_labels=num_labels, ignore_mismatched_sizes=True,
            attn_implementation="sdpa")
    cfg = ViTConfig.from_dict(config)
    cfg._attn_implementation = "sdpa"   # PyTorch's fused scaled-dot-product attention
    return ViTForImageClassification(cfg)


def pick_device(accelerator: str) -> torch.device:
    """train.accelerator -> the device. auto: CUDA when it works, else the CPU, and if an NVIDIA
    GPU is there but CUDA cannot use it, a loud message first (a silent CPU run takes hours);
    gpu/cuda and mps: that device, or an error saying why it cannot be used."""
    if accelerator == "cpu":
        return torch.device("cpu")
    if accelerator == "mps":
        if not torch.backends.mps.is_available():
            raise StageError(
                "train.accelerator: mps, but this torch offers no MPS device (Apple silicon "
                f"with macOS 12.3 or newer; built with MPS: {torch.backends.mps.is_built()}). "
                "Use auto or cpu.")
        return torch.device("mps")
    problem = cuda_problem()
    if problem is None:
        return torch.device("cuda")
    if accelerator in ("gpu", "cuda"):
        raise StageError(f"train.accelerator: {accelerator}, but {problem} Fix that, or use "
                         "auto (which falls back to the CPU) or cpu.")
    if nvidia_gpu_present() and not cuda_hidden():
        print(f"\n*** WARNING: an NVIDIA GPU is here but {problem} This run trains on the CPU "
              "instead, many times slower. Install the PyTorch build for this driver (README, "
              "Set up), or set train.accelerator: cpu to run on the CPU on purpose. ***\n",
              file=sys.stderr, flush=True)
    return torch.device("cpu")


@functools.cache
def cuda_problem() -> str | None:
    """None if CUDA runs a kernel on device 0; else why not, as a sentence."""
    if torch.version.cuda is None:
        return "this torch is a CPU-only build (no CUDA)."
    try:
        torch.cuda.init()                                  # a driver too old fails here
        (torch.ones(1, device="cuda") + 1).item()          # a card with no kernel, here
    except Exception as e:  # noqa: BLE001 - any failure means "not usable", with its reason
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        return f"CUDA {torch.version.cuda} cannot use it: {first}."
    return None


def nvidia_gpu_present() -> bool:
    """An NVIDIA driver is loaded (Linux) or its tool is installed (any system)."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def cuda_hidden() -> bool:
    """CUDA_VISIBLE_DEVICES empty (or -1): the GPUs are hidden on purpose (a CPU slot)."""
    return os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")


class ViTClassifier(nn.Module):
    """uint8 images at the stored size -> class logits, through the one input path."""

    def __init__(self, *, vit_config: dict | None, classes: list[str], recipe: dict,
                 image_size: int, mean: list[float], std: list[float], freeze_backbone: bool,
                 version: str = "", seed: int = 0, pretrained: str | None = None):
        super().__init__()
        self.vit = build_vit(vit_config, pretrained, len(classes))
        # The resolved config (a pretrained model's own included): the model file rebuilds the
        # model from it without the hub or the pretrained folder.
        self.config = {"vit_config": self.vit.config.to_dict(), "classes": list(classes),
                       "recipe": recipe, "image_size": image_size, "mean": list(mean),
                       "std": list(std), "freeze_backbone": freeze_backbone,
                       "version": version, "seed": seed}
        if freeze_backbone:
            self.vit.vit.requires_grad_(False)

    @property
    def frozen(self) -> bool:
        return self.config["freeze_backbone"]

    def train(self, mode: bool = True) -> ViTClassifier:
        super().train(mode)
        if self.frozen:
            self.vit.vit.eval()     # a frozen backbone is a fixed feature extractor: no dropout
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():   # no autograd graph through the frozen backbone
                feats = self.vit.vit(pixel_values).last_hidden_state[:, 0]
            return self.vit.classifier(feats)
        return self.vit(pixel_values=pixel_values).logits

    def inputs(self, images: torch.Tensor, train: bool,
               gen: torch.Generator | None = None) -> torch.Tensor:
        """The one input path: uint8 batch -> normalized inputs; augmentation only if train."""
        c = self.config
        return build_inputs(images, c["recipe"] if train else {}, c["image_size"], c["mean"],
                            c["std"], gen)


class ModelFileError(StageError):
    """A model file that is not one this project wrote, or was altered; nothing of it ran."""


Size = Annotated[int, Field(ge=1, le=1 << 16)]
VIT_BOUNDS = {"image_size": 1 << 16, "patch_size": 1 << 16, "num_channels": 16,
              "hidden_size": 1 << 16, "num_hidden_layers": 1024, "num_attention_heads": 1024,
              "intermediate_size": 1 << 20}


class ClassifierConfig(BaseModel):
    """What a model file may say about its model: plain values, each bounded."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    vit_config: dict[str, Any]
    classes: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        min_length=2, max_length=100_000)
    recipe: dict[str, dict[str, Any]]
    image_size: Size
    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=3, max_length=3)
    freeze_backbone: bool
    version: str = Field(pattern=VERSION_NAME.pattern)
    seed: int = Field(ge=0, le=2**63 - 1)

    @field_validator("vit_config")
    @classmethod
    def _bounded_vit(cls, vit: dict[str, Any]) -> dict[str, Any]:
        # Whatever else it says, the numbers that size the model are bounded, so that even its
        # skeleton (built before the tensors are checked) stays small.
        for key, hi in VIT_BOUNDS.items():
            v = vit.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi:
                raise ValueError(f"vit_config.{key}: got {v!r}; allowed: a whole number in "
                                 f"[1, {hi}]")
        return vit

    @field_validator("classes")
    @classmethod
    def _plain_classes(cls, classes: list[str]) -> list[str]:
        bad = [c for c in classes if not class_name_ok(c)]
        if bad:
            raise ValueError(f"class name {bad[0]!r:.120} is not allowed; class names may hold "
                             f"{CLASS_RULE}")
        return classes

    @field_validator("recipe")
    @classmethod
    def _known_ops(cls, recipe: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for op, settings in recipe.items():
            if op not in AUG_TYPES:
                raise ValueError(f"unknown augmentation op {op!r}")
            try:
                AUG_TYPES[op].model_validate_json(json.dumps(settings))
            except ValidationError as e:
                raise ValueError(f"recipe.{op}: {e.errors()[0]['msg']}") from None
        return recipe


def save_classifier(model: ViTClassifier, path: Path, **record: Any) -> None:
    """The model file: weights as safetensors; format tag, config and `record` (epoch, step,
    ...) as one JSON entry in its header, keys sorted, so the same model is the same bytes."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    entry = json.dumps({"format": FORMAT, "config": model.config, "record": record},
                       sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={HEADER_KEY: entry})


def _rebuild_hint(path: Path) -> str:
    """How to write this file anew: its train stage, when the path is one of the study's."""
    m = re.search(r"models/([^/]+)/([^/]+)/n(\d+)/seed(\d+)\.safetensors$", path.as_posix())
    stage = f"train@{m[1]}-{m[2]}-{m[3]}-{m[4]}" if m else "train@<version>-<backbone>-<size>-<seed>"
    return (f"Nothing in it was loaded. Rebuild it with `dvc repro --force {stage}` "
            "(or delete it and run `dvc repro`)")


def _check_header_size(path: Path) -> None:
    """Refuse a header longer than MAX_HEADER_BYTES from its 8-byte length, unparsed."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot be read ({e.strerror}). " + _rebuild_hint(path)) \
            from None
    # A length past the file's end (a pickle's first bytes read as one, say) is no header:
    # safetensors refuses it unread, and the caller names what the file is.
    n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
    if MAX_HEADER_BYTES < n <= path.stat().st_size - 8:
        raise ModelFileError(f"{path}: its header claims {n:,} bytes, over the {MAX_HEADER_BYTES:,} "
                             "a model file of this project may have (a hostile or broken file; "
                             "it was not parsed). " + _rebuild_hint(path))


# safetensors' dtype names of the torch dtypes a model of this project holds.
_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.bool: "BOOL",
              torch.uint8: "U8", torch.int8: "I8"}


def read_model_file(path: str | Path) -> tuple[ClassifierConfig, dict[str, Any],
                                                dict[str, tuple[int, ...]]]:
    """(config, record, tensor shapes) from the header alone; no tensor is read."""
    path = Path(path)
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        # Not safetensors: say so, naming a pickle (torch.save's zip or legacy format) as such.
        # Only now: a safetensors file starts with its header's length, whose bytes can be any.
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
            raise ModelFileError(f"{path}: a pickle (torch.save), the earlier model-file "
                                 "format, which can run code when loaded; it is refused. "
                                 + _rebuild_hint(path)) from None
        raise ModelFileError(f"{path}: not a safetensors file ({e}). " + _rebuild_hint(path)) \
            from None
    try:
        header = json.loads(meta[HEADER_KEY]) if HEADER_KEY in meta else {}
    except RecursionError:
        raise ModelFileError(f"{path}: its header nests deeper than Python parses (a hostile "
                             "or broken file). " + _rebuild_hint(path)) from None
    except ValueError:
        header = None
    fmt = header.get("format") if isinstance(header, dict) else None
    if fmt != FORMAT:
        found = fmt if fmt is not None else meta.get("format")
        raise ModelFileError(f"{path}: not a model file of this project (format {found!r}, "
                             f"expected {FORMAT!r}). " + _rebuild_hint(path))
    try:
        config = ClassifierConfig.model_validate_json(json.dumps(header.get("config")))
        record = header.get("record", {})
        if not isinstance(record, dict):
            raise ValueError(f"record: got {type(record).__name__}; expected a mapping")
    except (ValidationError, ValueError) as e:
        first = str(e).splitlines()[:3]
        raise ModelFileError(f"{path}: its config is not valid ({' '.join(first)}). "
                             + _rebuild_hint(path)) from None
    return config, record, shapes


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> ViTClassifier:
    """Rebuild the model from its file alone (config, preprocessing, classes), in eval mode.

    The config builds the model on the meta device first: unless its parameters' names and
    shapes are exactly the file's tensors, the file is refused before memory is allocated."""
    path = Path(path)
    config, record, shapes = read_model_file(path)
    kwargs = config.model_dump()
    try:
        with torch.device("meta"):
            skeleton = ViTClassifier(**kwargs)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise ModelFileError(f"{path}: its ViT config cannot build a model ({e}). "
                             + _rebuild_hint(path)) from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    if expected != shapes:
        diff = sorted(set(expected.items()) ^ set(shapes.items()))[:3]
        raise ModelFileError(f"{path}: its tensors do not match its config (first "
                             f"differences: {diff}). " + _rebuild_hint(path))
    want = {k: _ST_DTYPES.get(v.dtype, str(v.dtype)) for k, v in skeleton.state_dict().items()}
    with safe_open(str(path), framework="pt") as f:
        odd = sorted((k, f.get_slice(k).get_dtype(), want[k]) for k in f.keys()
                     if f.get_slice(k).get_dtype() != want[k])
    if odd:        # load_state_dict would cast them silently
        k, got, exp = odd[0]
        raise ModelFileError(f"{path}: tensor {k!r} is {got}, the model's is {exp} ({len(odd)} "
                             "tensor(s) of another dtype; this project writes the model's "
                             "own). " + _rebuild_hint(path))
    model = ViTClassifier(**kwargs)
    with safe_open(str(path), framework="pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    model.record = record          # epoch, step and the training environment: data only
    return model.to(device).eval()

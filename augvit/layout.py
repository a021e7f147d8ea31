"""The study's runs and where their files live: defined once, used by every stage and test.

A run is one version x backbone setting x train size x seed. Its files sit at
`<root>/<version>/<backbone>/n<size>/seed<k><suffix>` under each output root that dvc.yaml names
(models/, dvclive/, metrics/runs/, eval/); dvc.yaml writes the same pattern from its matrix
items, and tests/test_dvc_yaml.py checks that DVC's resolved stages and this module agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from augvit.params import Params

BACKBONE_LABELS = {"finetuned": "fine-tuned", "frozen": "frozen"}


@dataclass(frozen=True)
class Run:
    version: str
    backbone: str          # "finetuned" | "frozen"
    size: int              # train images: a class-balanced subset, its own for each seed
    seed: int

    @property
    def frozen(self) -> bool:
        return self.backbone == "frozen"

    @property
    def group(self) -> str:
        """The runs that differ only by seed: one row of the study's table."""
        return f"{self.version}/{self.backbone}/n{self.size}"

    @property
    def id(self) -> str:
        return f"{self.group}/seed{self.seed}"

    def path(self, root: str | Path, suffix: str = "") -> Path:
        return Path(root) / f"{self.id}{suffix}"

    @property
    def stage_suffix(self) -> str:
        """DVC's name for this run's training: train@<suffix>."""
        return f"{self.version}-{self.backbone}-{self.size}-{self.seed}"

    @property
    def group_suffix(self) -> str:
        """DVC's name for its group's evaluation (every seed in one process): evaluate@<suffix>."""
        return f"{self.version}-{self.backbone}-{self.size}"


def runs(p: Params) -> list[Run]:
    """Every run of the study, in the order of params.yaml's versions and axes."""
    return [Run(v, b, n, s) for v, b, n in groups(p) for s in p.study.seeds]


def groups(p: Params) -> list[tuple[str, str, int]]:
    """(version, backbone, train size) of every group, in params order."""
    return [(v, b, n) for v in p.study.versions for b in p.study.backbones
            for n in p.study.train_sizes]


def group_label(p: Params, version: str, backbone: str, size: int) -> str:
    """'version_1', with ' (frozen)' and ', 5000 images' where the study varies those."""
    label = version
    if len(p.study.backbones) > 1:
        label += f" ({BACKBONE_LABELS[backbone]})"
    if len(p.study.train_sizes) > 1:
        label += f", {size} images"
    return label

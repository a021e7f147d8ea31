"""The study's runs and where their files live: defined once, used by every stage and test.

A run is one version x backbone setting x seed. Its files sit at `<root>/<version>/<backbone>/
seed<k><suffix>` under each output root that dvc.yaml names (models/, dvclive/, metrics/runs/,
eval/); dvc.yaml writes the same pattern from its matrix items, and tests/test_layout.py checks
that DVC's resolved stages and this module agree.
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
    seed: int

    @property
    def frozen(self) -> bool:
        return self.backbone == "frozen"

    @property
    def group(self) -> str:
        """The runs that differ only by seed: one row of the study's table."""
        return f"{self.version}/{self.backbone}"

    @property
    def id(self) -> str:
        return f"{self.group}/seed{self.seed}"

    def path(self, root: str | Path, suffix: str = "") -> Path:
        return Path(root) / f"{self.id}{suffix}"

    @property
    def stage_suffix(self) -> str:
        """DVC's name for this run's matrix stages: train@<suffix>, evaluate@<suffix>."""
        return f"{self.version}-{self.backbone}-{self.seed}"


def runs(p: Params) -> list[Run]:
    """Every run of the study, in the order of params.yaml's versions and axes."""
    return [Run(v, b, s) for v in p.versions for b in p.study.backbones for s in p.study.seeds]


def groups(p: Params) -> list[tuple[str, str]]:
    """(version, backbone) of every group, in params order."""
    return [(v, b) for v in p.versions for b in p.study.backbones]


def group_label(version: str, backbone: str, backbones: list[str] | tuple[str, ...]) -> str:
    """'version_1', or 'version_1 (frozen)' when the study has more than one backbone setting."""
    return version if len(backbones) == 1 else f"{version} ({BACKBONE_LABELS[backbone]})"

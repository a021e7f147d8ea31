"""The study's pictures (the `plots` stage): what `dvc plots show` puts in one report.

  plots/curves.png               val accuracy and loss per epoch, every version overlaid
                                 (mean over seeds; the band spans the seeds' min..max)
  plots/comparison.png           test accuracy per version with its 95% CI
  plots/previews/<version>.png   the same test images: original beside augmented draws
  plots/confusion/<run>.png      confusion matrix per version and backbone setting (seeds summed)
"""
from __future__ import annotations

import csv
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from augvit.augment import build_inputs  # noqa: E402
from augvit.data.batches import load_split  # noqa: E402
from augvit.io import atomic_path, load_json  # noqa: E402
from augvit.layout import BACKBONE_LABELS, Run, group_label, groups  # noqa: E402
from augvit.params import Params  # noqa: E402


def read_tsv(path: Path) -> dict[int, float]:
    """DVCLive plot file (step, value) -> {step: value}."""
    with open(path) as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return {int(r[0]): float(r[1]) for r in rows[1:] if r}


def run_curves(run_dir: Path, metric: str) -> np.ndarray:
    """Per-epoch values of val/<metric> of one run (one value per validation)."""
    values = read_tsv(run_dir / "plots" / "metrics" / "val" / f"{metric}.tsv")
    return np.array([values[s] for s in sorted(values)])


def plot_curves(p: Params, live: Path, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for vi, version in enumerate(p.versions):
        for backbone in p.study.backbones:
            for ax, metric in zip(axes, ("acc", "loss")):
                runs = [run_curves(Run(version, backbone, s).path(live), metric)
                        for s in p.study.seeds]
                n = min(len(r) for r in runs)
                stack = np.stack([r[:n] for r in runs])
                epochs = np.arange(1, n + 1)
                style = "--" if backbone == "frozen" else "-"
                c = colors[vi % len(colors)]
                ax.plot(epochs, stack.mean(0), style, color=c, marker="o",
                        label=group_label(version, backbone, p.study.backbones))
                if len(runs) > 1:
                    ax.fill_between(epochs, stack.min(0), stack.max(0), color=c, alpha=0.15)
    for ax, name in zip(axes, ("validation accuracy", "validation loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{name} (mean of {len(p.study.seeds)} seed(s); band: min..max)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    _save(fig, out)


def plot_comparison(summary: dict, out: Path) -> None:
    groups = list(summary.values())
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(groups)), 4))
    for k, g in enumerate(groups):
        a = g["test_acc"]
        mean = 100 * a["mean"]
        err = None if a["ci95"] is None else [[mean - 100 * a["ci95"][0]],
                                              [100 * a["ci95"][1] - mean]]
        ax.errorbar(k, mean, yerr=err, fmt="o", capsize=6,
                    color="tab:orange" if g["backbone"] == "frozen" else "tab:blue")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g['version']}\n{BACKBONE_LABELS[g['backbone']]}" for g in groups])
    ax.set_ylabel("test accuracy (%)")
    n = groups[0]["test_acc"]["n"] if groups else 0
    ax.set_title(f"Test accuracy, mean and 95% CI over {n} seed(s)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _save(fig, out)


def _to_image(x: torch.Tensor, mean: tuple, std: tuple) -> np.ndarray:
    """Normalized (3,H,W) -> displayable (H,W,3) in [0,1]."""
    m = torch.tensor(mean).view(3, 1, 1)
    s = torch.tensor(std).view(3, 1, 1)
    return (x * s + m).clamp(0, 1).permute(1, 2, 0).numpy()


def plot_preview(p: Params, version: str, recipe: dict, images: torch.Tensor,
                 out: Path) -> None:
    """Rows: test images; columns: the eval input, then `preview_draws` augmented draws."""
    m, k = p.model, p.plots.preview_draws
    original = build_inputs(images, {}, m.image_size, m.mean, m.std)
    gen = torch.Generator().manual_seed(p.plots.preview_seed)
    draws = [build_inputs(images, recipe, m.image_size, m.mean, m.std, gen) if recipe
             else original for _ in range(k)]
    rows = len(images)
    fig, axes = plt.subplots(rows, k + 1, figsize=(1.6 * (k + 1), 1.6 * rows + 0.6),
                             squeeze=False)
    for r in range(rows):
        for c in range(k + 1):
            x = original[r] if c == 0 else draws[c - 1][r]
            axes[r, c].imshow(_to_image(x, m.mean, m.std))
            axes[r, c].axis("off")
            if r == 0:
                axes[r, c].set_title("original" if c == 0 else f"draw {c}", fontsize=9)
    fig.suptitle(f"{version}: {', '.join(recipe) or 'no augmentation'}", fontsize=10)
    fig.tight_layout()
    _save(fig, out)


def plot_confusion(matrix: np.ndarray, classes: list[str], title: str, out: Path) -> None:
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    _save(fig, out)


def _save(fig: plt.Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def preview_images(prepared: Path, n: int, seed: int) -> torch.Tensor:
    images, labels = load_split(prepared, "test")
    g = torch.Generator().manual_seed(seed)
    return images[torch.randperm(len(labels), generator=g)[:n]]


def render_all(p: Params, live: Path, confusion: Path, summary: Path, recipes: Path,
               prepared: Path, out_dir: Path) -> None:
    """Every picture of the study into out_dir (atomically, as one folder)."""
    with atomic_path(out_dir) as tmp:
        plot_curves(p, live, tmp / "curves.png")
        plot_comparison(load_json(summary), tmp / "comparison.png")
        images = preview_images(prepared, p.plots.preview_images, p.plots.preview_seed)
        for version in p.versions:
            recipe = load_json(recipes / f"{version}.json")["ops"]
            plot_preview(p, version, recipe, images, tmp / "previews" / f"{version}.png")
        for version, backbone in groups(p):
            confs = [load_json(Run(version, backbone, s).path(confusion, ".json"))
                     for s in p.study.seeds]
            total = np.sum([c["matrix"] for c in confs], axis=0)
            acc = np.trace(total) / total.sum()
            plot_confusion(total, confs[0]["classes"],
                           f"{version} ({BACKBONE_LABELS[backbone]}): test set, {len(confs)} "
                           f"seed(s) summed, acc {100 * acc:.1f}%",
                           tmp / "confusion" / f"{version}-{backbone}.png")
    print(f"plots: written to {out_dir}/")

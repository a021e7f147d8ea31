"""Stage `train@<version>-<seed>`: train one ViT on one augmentation recipe with one seed.

Writes the final model (weights + everything evaluation needs to rebuild it) and the DVCLive
per-epoch curves. Epoch checkpoints go to a resume folder outside DVC's outputs, so a run
killed mid-way continues from its last epoch when `dvc repro` is run again.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import lightning as L
import torch
from dvclive.lightning import DVCLiveLogger
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from stages.batches import ArrayDataModule, load_classes
from stages.io import StageError, atomic_path, load_json, raise_on_sigterm, user_errors
from stages.model import AugViT, pick_device, vit_config
from stages.params import Params, as_plain, load_params


def usable_checkpoint(path: Path) -> bool:
    """True if `path` is a complete Lightning checkpoint (a kill can leave a truncated one)."""
    if not path.is_file():
        return False
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        return "state_dict" in ckpt and "loops" in ckpt
    except Exception as e:  # noqa: BLE001 - any unreadable file means "start over"
        print(f"train: resume checkpoint {path} is unreadable ({type(e).__name__}); "
              "starting this run over")
        return False


def completed_epochs(path: Path) -> int:
    """How many epochs an epoch checkpoint holds (Lightning stores the 0-based epoch index)."""
    return int(torch.load(path, map_location="cpu", weights_only=False)["epoch"]) + 1


def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's "can't allocate memory"."""
    msg = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg or \
        "can't allocate memory" in msg


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but via a temporary file and a rename: a run killed while
    saving keeps its previous complete `last.ckpt`."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class EpochLog(Callback):
    """One line per epoch in the stage's log (DVC's log is no terminal: the progress bar shows
    only its last state there), naming the epoch and its validation result."""

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            m = {k: float(v) for k, v in trainer.callback_metrics.items()}
            print(f"train: epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
                  f"train loss {m.get('train/loss', float('nan')):.4f}, "
                  f"val acc {m.get('val/acc', float('nan')):.4f}, "
                  f"val loss {m.get('val/loss', float('nan')):.4f} "
                  f"({time.perf_counter() - self.t0:.1f}s)", flush=True)


def resolve_precision(precision: str, accelerator: str) -> str:
    if precision != "auto":
        return precision
    return "bf16-mixed" if pick_device(accelerator).type == "cuda" else "32-true"


def build_module(params: Params, version: str, seed: int, freeze: bool, recipe: dict,
                 classes: list[str], steps_per_epoch: int) -> AugViT:
    m, t = params.model, params.train
    return AugViT(
        vit_config=None if m.pretrained else vit_config(m, len(classes)),
        pretrained=m.pretrained, classes=classes, recipe=recipe, image_size=m.image_size,
        mean=list(m.mean), std=list(m.std), freeze_backbone=freeze, seed=seed,
        version=version, lr=t.lr, weight_decay=t.weight_decay,
        warmup_steps=int(t.warmup_epochs * steps_per_epoch),
        total_steps=t.epochs * steps_per_epoch, label_smoothing=t.label_smoothing)


def run_fingerprint(params: Params, version: str, seed: int, freeze: bool, recipe: dict,
                    prepared: Path) -> str:
    """Everything that makes one run what it is; a resume state must match it exactly."""
    axes = {"freeze_backbone", "seeds"}      # the matrix axes: given per run instead
    return json.dumps({"model": {k: v for k, v in as_plain(params.model).items() if k not in axes},
                       "train": {k: v for k, v in as_plain(params.train).items() if k not in axes},
                       "eval": as_plain(params.eval), "recipe": recipe, "version": version,
                       "seed": seed, "freeze": freeze,
                       "data": load_json(prepared / "meta.json")["counts"]}, sort_keys=True)


def open_resume_dir(resume_dir: Path, fingerprint: str, fresh: bool) -> bool:
    """True if a complete checkpoint of this very run is there to resume from; else empty it.

    Only the launching process manages the folder (DDP re-launches this script per rank).
    """
    stamp, last = resume_dir / "config.json", resume_dir / "last.ckpt"
    resuming = (not fresh and stamp.is_file() and stamp.read_text() == fingerprint
                and usable_checkpoint(last))
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not resuming:
        shutil.rmtree(resume_dir, ignore_errors=True)
        resume_dir.mkdir(parents=True)
        stamp.write_text(fingerprint)
    return resuming


def export_model(last: Path, model_out: Path) -> None:
    """The final model: the last epoch checkpoint without optimizer and loop state."""
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    keep = ("state_dict", "hyper_parameters", "pytorch-lightning_version", "epoch",
            "global_step")
    with atomic_path(model_out) as tmp:
        torch.save({k: ckpt[k] for k in keep if k in ckpt}, tmp)


def run(params: Params, version: str, seed: int, freeze: bool, recipe_path: Path, prepared: Path,
        model_out: Path, live_out: Path, resume_dir: Path, fresh: bool = False) -> None:
    t0 = time.perf_counter()
    t = params.train
    recipe = load_json(recipe_path)["ops"]
    classes = load_classes(prepared)
    L.seed_everything(seed, workers=True, verbose=False)
    data = ArrayDataModule(prepared, t.batch_size, params.eval.batch_size, seed)
    world = t.devices * t.num_nodes
    # train.batch_size is the global batch, whatever the number of processes.
    steps_per_epoch = len(data.train[1]) // t.batch_size
    if steps_per_epoch < 1:
        raise StageError(f"train.batch_size={t.batch_size} is larger than the train split "
                         f"({len(data.train[1])} images); lower it.")
    if t.batch_size % world:
        raise StageError(f"train.batch_size={t.batch_size} must divide evenly over "
                         f"train.devices x train.num_nodes = {world} processes.")
    model = build_module(params, version, seed, freeze, recipe, classes, steps_per_epoch)
    if t.compile:
        model.vit.compile()

    fingerprint = run_fingerprint(params, version, seed, freeze, recipe, prepared)
    resuming = open_resume_dir(resume_dir, fingerprint, fresh)
    last = resume_dir / "last.ckpt"
    if resuming:
        done = completed_epochs(last)
        print(f"train: resuming {version} seed {seed} freeze {freeze} after epoch {done} of "
              f"{t.epochs} from {last}; training epochs {done + 1}..{t.epochs} "
              "(delete it or pass --fresh to start over)")
    logger = DVCLiveLogger(dir=str(resume_dir / "dvclive"), dvcyaml=False, save_dvc_exp=False,
                           resume=resuming, report=None)
    # One checkpoint, `last.ckpt`, rewritten (atomically) at the end of every epoch. Not
    # `save_last=True, save_top_k=0`: Lightning writes `last` only in a step where a top-k
    # checkpoint was saved, so with top-k 0 it never wrote one until training had finished.
    ckpt = ModelCheckpoint(dirpath=resume_dir, filename="last", monitor=None, save_top_k=1,
                           save_last=False, every_n_epochs=1, save_on_train_epoch_end=True,
                           enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator),
        logger=logger, callbacks=[ckpt, EpochLog()], plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0, log_every_n_steps=10,
        use_distributed_sampler=False, enable_model_summary=False, deterministic=False)
    try:
        trainer.fit(model, datamodule=data, ckpt_path=str(last) if resuming else None)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        device = trainer.strategy.root_device
        raise StageError(
            f"out of memory training {version} (seed {seed}, freeze_backbone {freeze}) on "
            f"{device} with train.batch_size={t.batch_size} ({t.batch_size // world} per "
            f"device): lower train.batch_size (or eval.batch_size), or model.image_size, or "
            f"use more devices (train.devices). Training resumes from its last epoch. "
            f"[{str(e).splitlines()[0][:200]}]") from None

    if trainer.is_global_zero:
        export_model(last, model_out)
        with atomic_path(live_out) as tmp:
            shutil.copytree(resume_dir / "dvclive", tmp)
        shutil.rmtree(resume_dir, ignore_errors=True)
        print(f"train: {version} seed {seed} done in {time.perf_counter() - t0:.0f}s "
              f"-> {model_out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--version", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--freeze", choices=["true", "false"], required=True,
                    help="freeze the backbone (one value of model.freeze_backbone)")
    ap.add_argument("--recipe", type=Path, required=True)
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--model-out", type=Path, required=True)
    ap.add_argument("--live-out", type=Path, required=True)
    ap.add_argument("--resume-dir", type=Path, required=True)
    ap.add_argument("--fresh", action="store_true", help="ignore any resume checkpoint")
    args = ap.parse_args(argv)
    raise_on_sigterm()
    with user_errors(f"train@{args.version}"):
        params = load_params(args.params)
        run(params, args.version, args.seed, args.freeze == "true", args.recipe, args.prepared,
            args.model_out, args.live_out, args.resume_dir, fresh=args.fresh)


if __name__ == "__main__":
    main()

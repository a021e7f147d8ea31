"""Training one run with Lightning: the module, the batches, epoch checkpoints and resuming.

`train_run` trains one version x backbone x seed and writes the model file and the DVCLive
curves. DVCLive writes into the run's folder that dvc.yaml declares while it trains, epoch by
epoch, so `dvc exp run` shows the curve live (VS Code, Studio). An epoch checkpoint is rewritten
(atomically) after every epoch in a resume folder outside DVC's outputs, so a run killed mid-way
continues after its last completed epoch when `dvc repro` runs again; every epoch's randomness
derives from (seed, epoch), so the resumed run ends bit-identical to an uninterrupted one on the
same machine. The checkpoint also carries the curve up to its epoch: DVC removes a stage's
outputs before it reruns it, and the resumed run rebuilds its curve from the checkpoint, then
continues it (no step twice, none missing).
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from augvit.augment.mixing import MIXING_OPS, mix_batch
from augvit.data.batches import ArrayBatches, load_classes, load_split
from augvit.data.subsets import train_subset
from augvit.environment import describe
from augvit.io import StageError, atomic_path, load_json, save_json
from augvit.layout import Run
from augvit.model import ViTClassifier, pick_device, save_classifier, vit_config
from augvit.params import Params, plain
from augvit.seeding import seed_for


class NonFiniteLossError(StageError):
    pass


class TrainModule(L.LightningModule):
    """The classifier under training: one shared step shape, AdamW, warmup then cosine."""

    def __init__(self, *, net: dict, lr: float, weight_decay: float, warmup_steps: int,
                 total_steps: int, label_smoothing: float):
        super().__init__()
        self.save_hyperparameters()
        self.net = ViTClassifier(**net)
        n = len(net["classes"])
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(n, average="micro")
        self.aug_gen = torch.Generator()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)

    def on_train_epoch_start(self) -> None:
        # Every epoch's randomness derives from (seed, epoch): a run resumed from an epoch
        # checkpoint draws exactly what an uninterrupted run would have drawn.
        seed = self.net.config["seed"]
        self.aug_gen.manual_seed(seed_for(seed, self.current_epoch, 1))
        torch.manual_seed(seed_for(seed, self.current_epoch, 2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        images, labels = batch
        x = self.net.inputs(images, train=True, gen=self.aug_gen)
        targets = labels
        if any(op in self.net.config["recipe"] for op in MIXING_OPS):
            # soft targets; train accuracy counts the label with the larger weight
            x, targets, _ = mix_batch(x, labels, len(self.net.config["classes"]),
                                      self.net.config["recipe"], self.aug_gen)
            labels = targets.argmax(1)
        logits = self(x)
        loss = F.cross_entropy(logits.float(), targets,
                               label_smoothing=self.hparams.label_smoothing)
        if not torch.isfinite(loss):
            c = self.net.config
            raise NonFiniteLossError(
                f"version {c['version']!r} seed {c['seed']}: loss is {loss.item()} at epoch "
                f"{self.current_epoch}, step {self.global_step}. Lower train.lr (or set "
                "train.precision: 32-true) and rerun.")
        self.train_acc(logits, labels)
        # logger=False: EpochLog logs them, before the epoch's checkpoint is written
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(labels),
                 sync_dist=True, logger=False)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, logger=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        images, labels = batch
        logits = self(self.net.inputs(images, train=False))
        loss = F.cross_entropy(logits.float(), labels)
        self.val_acc(logits, labels)
        self.log("val/loss", loss, on_epoch=True, batch_size=len(labels), sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True)

    def configure_optimizers(self) -> dict:
        h = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]         # no decay on biases and norms
        no_decay = [p for p in params if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": h.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=h.lr)

        def schedule(step: int) -> float:      # linear warmup, then cosine to zero
            if step < h.warmup_steps:
                return (step + 1) / h.warmup_steps
            t = (step - h.warmup_steps) / max(1, h.total_steps - h.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ArrayDataModule(L.LightningDataModule):
    """Train and val batches of the prepared arrays; moved to the GPU once when there is one."""

    def __init__(self, prepared: Path, batch_size: int, eval_batch_size: int, seed: int,
                 train_size: int):
        super().__init__()
        self.batch_size, self.eval_batch_size, self.seed = batch_size, eval_batch_size, seed
        images, labels = load_split(prepared, "train")
        if train_size > len(labels):
            raise StageError(f"study.train_sizes: {train_size} is more than the {len(labels)} "
                             f"images of the train split in {prepared}; use at most "
                             f"{len(labels)}.")
        # each seed trains on its own class-balanced subset (augvit/data/subsets.py)
        keep = torch.from_numpy(train_subset(labels.numpy(), train_size, seed))
        self.train = images[keep], labels[keep]
        self.val = load_split(prepared, "val")

    def setup(self, stage: str) -> None:
        device = self.trainer.strategy.root_device
        if device.type == "cuda":
            self.train = tuple(t.to(device) for t in self.train)
            self.val = tuple(t.to(device) for t in self.val)

    def _world(self) -> tuple[int, int]:
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> ArrayBatches:
        rank, world = self._world()
        # train.batch_size is the global batch: each of `world` processes takes its share.
        return ArrayBatches(*self.train, self.batch_size // world, shuffle=True, drop_last=True,
                            seed=self.seed, epoch_fn=lambda: self.trainer.current_epoch,
                            rank=rank, world=world)

    def val_dataloader(self) -> ArrayBatches:
        rank, world = self._world()
        return ArrayBatches(*self.val, self.eval_batch_size, rank=rank, world=world)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but via a temporary file and a rename: a run killed while
    saving keeps its previous complete checkpoint. Its reader loads weights only: a resume
    checkpoint may come from another job's folder, and a pickle must not run code."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def load_checkpoint(self, path: str | Path, map_location=None, weights_only=None) -> dict:
        return load_resume_checkpoint(Path(path))


class EpochLog(Callback):
    """Each epoch's end, before its checkpoint is written: the epoch's train metrics go to the
    loggers (Lightning would log them only after the checkpoint), one line goes to the stage's
    log (DVC's log is no terminal: the progress bar shows only its last state there), and the
    checkpoint gets the live curve's files as they then stand, so a resume rebuilds the curve
    exactly up to the epoch it continues after (`restore_live`)."""

    TRAIN_METRICS = ("train/loss", "train/acc")

    def __init__(self, live_dir: Path):
        self.live_dir = live_dir

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {k: m[k] for k in self.TRAIN_METRICS if k in m}
        # the step and `epoch` Lightning itself gives epoch-end train metrics
        for logger in trainer.loggers:
            logger.log_metrics({**row, "epoch": trainer.current_epoch},
                               step=trainer.global_step - 1)
        if trainer.is_global_zero:
            epoch = trainer.current_epoch + 1
            validated = epoch % (trainer.check_val_every_n_epoch or 1) == 0
            val = (f", val acc {m['val/acc']:.4f}, val loss {m['val/loss']:.4f}"
                   if validated and "val/acc" in m and "val/loss" in m else "")
            print(f"train: epoch {epoch}/{trainer.max_epochs} "
                  f"train loss {m.get('train/loss', float('nan')):.4f}{val} "
                  f"({time.perf_counter() - self.t0:.1f}s)", flush=True)

    def state_dict(self) -> dict:
        return {LIVE_FILES: live_files(self.live_dir)}


LIVE_FILES = "live_files"


def live_files(live_dir: Path) -> dict[str, str]:
    """Every file of a DVCLive folder (a few small text files): relative path -> text."""
    if not live_dir.is_dir():
        return {}
    return {f.relative_to(live_dir).as_posix(): f.read_text(encoding="utf-8")
            for f in sorted(live_dir.rglob("*")) if f.is_file()}


def restore_live(live_dir: Path, checkpoint: dict, source: Path) -> None:
    """Rewrite `live_dir` to the curve files that `checkpoint` carries (EpochLog.state_dict):
    whatever the folder held (removed by DVC, or rows past the checkpoint's epoch) goes."""
    files = checkpoint["callbacks"][EpochLog.__qualname__][LIVE_FILES]
    for rel in files:
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts or ":" in rel or "\\" in rel:
            raise UnsafeCheckpointError(
                f"resume checkpoint {source} names a curve file {rel!r} outside its run's "
                "curve folder; nothing was written. Delete it (or pass --fresh) to start this "
                "run over.")
    shutil.rmtree(live_dir, ignore_errors=True)
    for rel, text in files.items():
        (live_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (live_dir / rel).write_text(text, encoding="utf-8")
    live_dir.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------ quiet logs

class _NoTips(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: ... try installing litlogger")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip:")


def quiet_libraries() -> None:
    """Keep a training's log to what concerns its user: each filter names one message and the
    module that issues it, so every other warning still shows.

    - Lightning's tips advertise its cloud services on every run;
    - "Checkpoint directory ... exists and is not empty": the run's resume folder, which this
      module owns and empties on a fresh start (it holds the run's stamp, and on a resume the
      checkpoint it resumes from);
    - torch's deprecation of `LeafSpec`, which Lightning's own `_pytree` still uses;
    - "The `srun` command is available ... but is not used": a SLURM login node running
      `dvc repro` trains in one process on purpose (slurm/ starts the multi-node runs).
    """
    rules = (
        (r"Checkpoint directory .* exists and is not empty", Warning,
         r"lightning\.pytorch\.callbacks\.model_checkpoint"),
        (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning,
         r"lightning\.pytorch\.utilities\._pytree"),
        (r"The `srun` command is available on your system but is not used", Warning,
         r"lightning\.fabric\.plugins\.environments\.slurm"),
    )
    for message, category, module in rules:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in log.filters):
            log.addFilter(_NoTips())


# ------------------------------------------------------------------ resuming

class UnsafeCheckpointError(StageError):
    pass


def load_resume_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint, loaded weights-only (tensors and plain data, nothing else).

    A file that holds anything else is refused by name and kept, so it can be looked at."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise
        raise UnsafeCheckpointError(
            f"resume checkpoint {path} holds objects other than tensors and plain data, which "
            "a load could run as code; it was not loaded. Delete it (or pass --fresh, or "
            "`rm -r` its folder) to start this run over.") from None


def usable_checkpoint(path: Path) -> bool:
    """True if `path` is a complete Lightning checkpoint (a kill can leave a truncated one)."""
    if not path.is_file():
        return False
    try:
        ckpt = load_resume_checkpoint(path)
        if not (isinstance(ckpt, dict) and "state_dict" in ckpt and "loops" in ckpt):
            return False
        # without the curve's files (EpochLog), the curve could not continue: start over
        curve = ckpt.get("callbacks", {}).get(EpochLog.__qualname__, {})
        return isinstance(curve.get(LIVE_FILES), dict)
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file means "start over"
        print(f"train: resume checkpoint {path} is unreadable ({type(e).__name__}); "
              "starting this run over")
        return False


def run_fingerprint(params: Params, run: Run, recipe: dict, prepared: Path) -> str:
    """Everything that makes one run what it is; a resume state must match it exactly."""
    return json.dumps({"model": plain(params.model), "train": plain(params.train),
                       "recipe": recipe, "run": run.id,
                       "data": load_json(prepared / "meta.json")["counts"]}, sort_keys=True)


def is_launch_rank_zero() -> bool:
    """True in the process that will be the run's global rank 0, read before Lightning starts,
    from the environment Lightning will pick: torchrun's RANK, else SLURM_PROCID under `srun`,
    else NODE_RANK (or GROUP_RANK) and LOCAL_RANK, each 0 when unset (one process, or the
    process that Lightning's own launcher starts its other ranks from)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
    env = os.environ
    if TorchElasticEnvironment.detect():
        return int(env["RANK"]) == 0
    if "SLURM_PROCID" in env and SLURMEnvironment.detect():
        return int(env["SLURM_PROCID"]) == 0
    node = env.get("NODE_RANK", env.get("GROUP_RANK", "0"))
    return int(node) == 0 and int(env.get("LOCAL_RANK", "0")) == 0


def cluster_plugins() -> list:
    """Under SLURM: Lightning's SLURM environment (ranks, nodes, address) without its requeue
    handler, so a run has one resume mechanism, the epoch checkpoint in its resume folder.

    Lightning's auto-requeue would save an `hpc_ckpt_<n>.ckpt` into the working directory on
    SIGUSR1 and load it into whatever run starts there next; a requeued or resubmitted job
    instead reruns `dvc repro`, and the run resumes from its own last completed epoch."""
    from lightning.fabric.plugins.environments import SLURMEnvironment
    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def open_resume_dir(resume_dir: Path, fingerprint: str, fresh: bool) -> bool:
    """True if a complete checkpoint of this very run is there to resume from; else empty it.

    Every process of a run decides alike (they read the same folder: on several nodes it must
    be on a filesystem they share), but only global rank 0 changes it: under `srun` every
    task, and on several nodes each node's first process, would otherwise empty it at once.
    """
    stamp, last = resume_dir / "config.json", resume_dir / "last.ckpt"
    resuming = (not fresh and stamp.is_file() and stamp.read_text() == fingerprint
                and usable_checkpoint(last))
    if is_launch_rank_zero() and not resuming:
        shutil.rmtree(resume_dir, ignore_errors=True)
        try:
            resume_dir.mkdir(parents=True)
            stamp.write_text(fingerprint)
        except OSError as e:     # a file, or a link, where the folder or a parent goes
            raise StageError(f"the run's resume folder {str(resume_dir)!r} cannot be made "
                             f"({e.strerror}: {e.filename!r}). Something that is not a folder "
                             "sits on its path: move it away (nothing of it is read) and "
                             "rerun.") from None
    return resuming


# ------------------------------------------------------------------ one run

def is_out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's "can't allocate memory"."""
    msg = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg or \
        "can't allocate memory" in msg


def resolve_precision(precision: str, accelerator: str) -> str:
    """train.precision auto: bf16 mixed precision on CUDA, fp32 elsewhere (on a CPU without AMX
    bf16 autocast is several times slower; README, Performance)."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if pick_device(accelerator).type == "cuda" else "32-true"


def build_module(params: Params, run: Run, recipe: dict, classes: list[str],
                 steps_per_epoch: int) -> TrainModule:
    m, t = params.model, params.train
    net = {"vit_config": None if m.pretrained else vit_config(m, len(classes)),
           "pretrained": m.pretrained, "classes": classes, "recipe": recipe,
           "image_size": m.image_size, "mean": list(m.mean), "std": list(m.std),
           "freeze_backbone": run.frozen, "seed": run.seed, "version": run.version}
    return TrainModule(net=net, lr=t.lr, weight_decay=t.weight_decay,
                       warmup_steps=int(t.warmup_epochs * steps_per_epoch),
                       total_steps=t.epochs * steps_per_epoch, label_smoothing=t.label_smoothing)


def train_run(params: Params, run: Run, recipe_path: Path, prepared: Path, model_out: Path,
              live_out: Path, resume_dir: Path, fresh: bool = False,
              timing_out: Path | None = None) -> None:
    from dvclive.lightning import DVCLiveLogger     # here: the one import only training needs
    t0 = time.perf_counter()
    quiet_libraries()
    t = params.train
    recipe = load_json(recipe_path)["ops"]
    classes = load_classes(prepared)
    L.seed_everything(run.seed, workers=True, verbose=False)
    data = ArrayDataModule(prepared, t.batch_size, t.val_batch_size, run.seed, run.size)
    world = t.devices * t.num_nodes
    steps_per_epoch = len(data.train[1]) // t.batch_size     # batch_size is the global batch
    if steps_per_epoch < 1:
        raise StageError(f"train.batch_size={t.batch_size} is larger than the train split "
                         f"({len(data.train[1])} images); lower it.")
    if t.batch_size % world:
        raise StageError(f"train.batch_size={t.batch_size} must divide evenly over "
                         f"train.devices x train.num_nodes = {world} processes.")
    module = build_module(params, run, recipe, classes, steps_per_epoch)
    if t.compile:
        module.net.vit.compile()

    resuming = open_resume_dir(resume_dir, run_fingerprint(params, run, recipe, prepared), fresh)
    last = resume_dir / "last.ckpt"
    if resuming:
        state = load_resume_checkpoint(last)
        done = int(state["epoch"]) + 1
        print(f"train: resuming {run.id} after epoch {done} of {t.epochs} from {last}; "
              f"training epochs {done + 1}..{t.epochs} (delete it or pass --fresh to start over)")
        if is_launch_rank_zero():
            restore_live(live_out, state, last)
    elif is_launch_rank_zero():
        shutil.rmtree(live_out, ignore_errors=True)
    # Where dvc.yaml declares the run's curve, written as it trains (live in VS Code and Studio)
    logger = DVCLiveLogger(dir=str(live_out), dvcyaml=False, save_dvc_exp=False,
                           resume=resuming, report=None)
    # One checkpoint, `last.ckpt`, rewritten (atomically) at the end of every epoch. Not
    # `save_last=True, save_top_k=0`: Lightning writes `last` only in a step where a top-k
    # checkpoint was saved, so with top-k 0 it never wrote one until training had finished.
    ckpt = ModelCheckpoint(dirpath=resume_dir, filename="last", monitor=None, save_top_k=1,
                           save_last=False, every_n_epochs=1, save_on_train_epoch_end=True,
                           enable_version_counter=False)
    # the device chosen once, loudly if CUDA is there but unusable, and Lightning told which
    accelerator = {"cuda": "gpu", "mps": "mps"}.get(pick_device(t.accelerator).type, "cpu")
    precision = resolve_precision(t.precision, accelerator)
    # An exponential moving average of the weights (Lightning's callback; its state is in the
    # epoch checkpoint, so a resumed run averages on): validation and the model file use it.
    averaging = [EMAWeightAveraging(decay=t.ema_decay)] if t.ema_decay > 0 else []
    trainer = L.Trainer(
        max_epochs=t.epochs, accelerator=accelerator, devices=t.devices,
        num_nodes=t.num_nodes, strategy=t.strategy,
        precision=precision,
        logger=logger, callbacks=[ckpt, *averaging, EpochLog(live_out)],
        check_val_every_n_epoch=min(t.val_every, t.epochs),     # a curve has a point or more
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        default_root_dir=resume_dir,    # where Lightning would look for its own SLURM checkpoint
        num_sanity_val_steps=0, log_every_n_steps=10,
        use_distributed_sampler=False, enable_model_summary=False, deterministic=False)
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resuming else None)
    except (torch.OutOfMemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise StageError(
            f"out of memory training {run.id} on {trainer.strategy.root_device} with "
            f"train.batch_size={t.batch_size} ({t.batch_size // world} per device): lower "
            f"train.batch_size (or train.val_batch_size), or model.image_size, or use more "
            f"devices (train.devices). Training resumes from its last epoch. "
            f"[{str(e).splitlines()[0][:200]}]") from None

    if trainer.is_global_zero:
        env = describe(trainer.strategy.root_device, precision)
        save_classifier(module.net, model_out, epoch=trainer.current_epoch - 1,
                        global_step=trainer.global_step, environment=env)
        shutil.rmtree(resume_dir, ignore_errors=True)
        seconds = time.perf_counter() - t0
        if timing_out is not None:      # machine data beside the study, not one of its outputs
            save_json(timing_out, {"run": run.id, "seconds": round(seconds, 1),
                                   "cpu": env.get("cpu"), "gpu": env.get("gpu"),
                                   "threads": env.get("threads"), "resumed": resuming})
        print(f"train: {run.id} done in {seconds:.0f}s -> {model_out}")

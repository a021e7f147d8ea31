"""The ViT classifier: from-scratch and pretrained (local folder) builds, freezing, model files."""
from __future__ import annotations

import json
import os

import lightning as L
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import ViTConfig, ViTForImageClassification

from augvit.data.batches import ArrayBatches
from augvit.model import ModelFileError, ViTClassifier, load_classifier, save_classifier
from augvit import model as model_module
from augvit.training import (AtomicCheckpointIO, EpochLog, NonFiniteLossError, TrainModule,
                             UnsafeCheckpointError, resolve_precision, usable_checkpoint)
from conftest import record_peak

TINY = {"image_size": 16, "patch_size": 8, "hidden_size": 16, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 32, "num_labels": 3}
CLASSES = ["a", "b", "c"]


def net(**kw) -> dict:
    args = dict(vit_config=TINY, classes=CLASSES, recipe={"hflip": {"p": 0.5}}, image_size=16,
                mean=[0.5] * 3, std=[0.5] * 3, freeze_backbone=False, seed=0, version="v")
    args.update(kw)
    return args


def test_one_layer_vit_forward_and_sdpa():
    m = ViTClassifier(**net())
    assert m.vit.config._attn_implementation == "sdpa"
    logits = m(m.inputs(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), train=False))
    assert logits.shape == (2, 3)


def test_frozen_backbone_runs_without_a_graph_and_trains_only_the_classifier():
    m = ViTClassifier(**net(freeze_backbone=True)).train()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"vit.classifier.weight", "vit.classifier.bias"}
    assert not m.vit.vit.training and m.vit.classifier.training   # no dropout in the backbone
    seen = []
    m.vit.vit.register_forward_hook(lambda mod, args, out: seen.append(out.last_hidden_state))
    x = m.inputs(torch.zeros(2, 3, 16, 16, dtype=torch.uint8), train=True,
                 gen=torch.Generator().manual_seed(0))
    assert torch.is_grad_enabled()
    # an input that requires grad would make autograd record the backbone unless it runs
    # under no_grad: so the graph's absence below is the no_grad's doing, not an accident
    logits = m(x.requires_grad_())
    feats = seen[0]
    assert feats.grad_fn is None and not feats.requires_grad     # no graph was recorded
    assert logits.requires_grad                                   # the head's graph is there
    logits.sum().backward()
    assert all(p.grad is None for p in m.vit.vit.parameters())
    assert m.vit.classifier.weight.grad is not None
    # fine-tuned: the same forward records the backbone's graph
    seen.clear()
    ft = ViTClassifier(**net())
    ft.vit.vit.register_forward_hook(lambda mod, args, out: seen.append(out.last_hidden_state))
    ft(x.detach())
    assert seen[0].grad_fn is not None


def test_pretrained_from_a_local_folder_gets_a_new_head(tmp_path):
    cfg = ViTConfig(**{**TINY, "num_labels": 7})
    ViTForImageClassification(cfg).save_pretrained(tmp_path / "tiny-vit")
    m = ViTClassifier(**net(vit_config=None, pretrained=str(tmp_path / "tiny-vit")))
    assert m.vit.classifier.out_features == 3
    ref = ViTForImageClassification.from_pretrained(tmp_path / "tiny-vit")
    torch.testing.assert_close(m.vit.vit.embeddings.patch_embeddings.projection.weight,
                               ref.vit.embeddings.patch_embeddings.projection.weight)


def test_model_file_rebuilds_model_and_preprocessing_without_params(tmp_path):
    src = tmp_path / "tiny-vit"
    ViTForImageClassification(ViTConfig(**TINY)).save_pretrained(src)
    m = ViTClassifier(**net(vit_config=None, pretrained=str(src), mean=[0.3] * 3,
                            std=[0.2] * 3)).eval()
    save_classifier(m, tmp_path / "m.safetensors", epoch=0)
    for p in src.iterdir():      # the pretrained folder is gone: the model file must suffice
        p.unlink()
    back = load_classifier(tmp_path / "m.safetensors")
    assert back.config["classes"] == CLASSES and back.config["mean"] == [0.3] * 3
    x = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    torch.testing.assert_close(back(back.inputs(x, False)), m(m.inputs(x, False)))


# ------------------------------------------------------------------ hostile model files
# A model file may come from a DVC remote or cache: loading it must run no code and allocate
# nothing that its tensors do not account for.

class Payload:
    """Unpickling this runs `touch <marker>`: what a tampered pickle can do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def saved(tmp_path, name="m.safetensors", **kw):
    path = tmp_path / name
    save_classifier(ViTClassifier(**net(**kw)), path, epoch=0)
    return path


def header(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["augvit"])


def rewrite(path, config=None, tensors=None):
    """The model file with its header's config or its tensors replaced."""
    with safe_open(str(path), framework="pt") as f:
        entry, state = json.loads(f.metadata()["augvit"]), {k: f.get_tensor(k) for k in f.keys()}
    if config is not None:
        entry["config"] = config
    save_file(tensors if tensors is not None else state, str(path),
              metadata={"augvit": json.dumps(entry)})


def test_the_same_model_saved_twice_is_the_same_bytes(tmp_path):
    """One header entry: safetensors orders a metadata map differently from one save to the
    next, so a file of several entries got a new md5 in dvc.lock for the same model."""
    model = ViTClassifier(**net())
    for k in range(6):
        save_classifier(model, tmp_path / f"{k}.safetensors", epoch=3, global_step=7,
                        environment={"python": "3.11", "torch": "2"})
    assert len({(tmp_path / f"{k}.safetensors").read_bytes() for k in range(6)}) == 1


def test_a_model_file_of_the_earlier_header_layout_is_named_with_its_rebuild(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "seed0.safetensors"),
              metadata={"format": "augvit-classifier/2", "config": "{}", "record": "{}"})
    with pytest.raises(ModelFileError, match=r"format 'augvit-classifier/2', expected "
                                             r"'augvit-classifier/3'.*dvc repro"):
        load_classifier(tmp_path / "seed0.safetensors")


def test_a_pickled_model_file_is_refused_unread_and_runs_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    for name in ("seed0.safetensors", "seed0.ckpt"):
        torch.save({"format": "augvit-classifier/1", "config": {}, "state_dict": {},
                    "x": Payload(marker)}, tmp_path / name)
        with pytest.raises(ModelFileError, match=rf"{name}: a pickle .*refused.*dvc repro"):
            load_classifier(tmp_path / name)
        assert not marker.exists()


def test_the_refusal_names_the_train_stage_that_rebuilds_the_file(tmp_path):
    path = tmp_path / "models/version_1/frozen/n500/seed3.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match=r"dvc repro --force train@version_1-frozen-500-3"):
        load_classifier(path)


def test_a_file_that_is_no_model_file_is_named(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="other.safetensors: not a model file of this "
                                             "project"):
        load_classifier(tmp_path / "other.safetensors")


@pytest.mark.parametrize("change,match", [
    # a pretrained path would make loading read (and maybe unpickle) another folder
    (lambda c: c.update(pretrained="/somewhere/else"), "pretrained"),
    (lambda c: c.update(version="v; rm -rf ~"), "version"),
    (lambda c: c["recipe"].update(evil={"p": 1}), "unknown augmentation op 'evil'"),
    (lambda c: c["recipe"]["hflip"].update(p=7), "hflip"),
    (lambda c: c["vit_config"].update(num_hidden_layers=10**9), "num_hidden_layers"),
    (lambda c: c.update(classes="abc"), "classes"),
])
def test_a_config_outside_the_schema_is_refused(tmp_path, change, match):
    path = saved(tmp_path)
    config = header(path)["config"]
    change(config)
    rewrite(path, config=config)
    with pytest.raises(ModelFileError, match=rf"(?s)its config is not valid.*{match}"):
        load_classifier(path)


def test_a_config_claiming_a_huge_model_allocates_nothing_before_its_tensors_are_checked(
        tmp_path):
    """hidden_size 65536 with 1,024 layers would be terabytes of weights: refused from the
    skeleton on the meta device, whose tensors do not match the file's."""
    path = saved(tmp_path)
    config = header(path)["config"]
    config["vit_config"].update(hidden_size=65536, num_hidden_layers=1024,
                                num_attention_heads=1, intermediate_size=65536)
    rewrite(path, config=config)
    with pytest.raises(ModelFileError, match="its tensors do not match its config"):
        load_classifier(path)


def test_tensors_that_do_not_match_the_config_are_refused(tmp_path):
    path = saved(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    state["vit.classifier.weight"] = torch.zeros(5, 16)
    rewrite(path, tensors=state)
    with pytest.raises(ModelFileError, match=r"its tensors do not match.*vit.classifier.weight"):
        load_classifier(path)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int32])
def test_tensors_of_another_dtype_are_refused_not_cast(tmp_path, dtype):
    """load_state_dict would copy a float64 or int tensor into the float32 model silently."""
    path = saved(tmp_path)
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    state["vit.classifier.weight"] = state["vit.classifier.weight"].to(dtype)
    rewrite(path, tensors=state)
    name = {torch.float64: "F64", torch.float16: "F16", torch.int32: "I32"}[dtype]
    with pytest.raises(ModelFileError, match=rf"tensor 'vit.classifier.weight' is {name}, the "
                                             r"model's is F32 \(1 tensor.*dvc repro --force"):
        load_classifier(path)


def test_a_resume_checkpoint_with_a_payload_is_refused_and_kept(tmp_path):
    """Our reader and Lightning's (the checkpoint IO plugin) load weights only."""
    marker, ckpt = tmp_path / "PWNED", tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "epoch": 1, "x": Payload(marker)}, ckpt)
    with pytest.raises(UnsafeCheckpointError, match=r"last.ckpt holds objects other than"):
        usable_checkpoint(ckpt)
    with pytest.raises(UnsafeCheckpointError):
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists() and ckpt.exists()


def test_a_lightning_checkpoint_loads_weights_only(tmp_path):
    m = TrainModule(net=net(), lr=1e-3, weight_decay=0.05, warmup_steps=1, total_steps=4,
                    label_smoothing=0.0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        limit_train_batches=2, limit_val_batches=0,
                        callbacks=[EpochLog(tmp_path / "live")])
    batches = ArrayBatches(torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
                           torch.tensor([0, 1, 2, 0]), 2)
    trainer.fit(m, train_dataloaders=batches)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert usable_checkpoint(tmp_path / "last.ckpt")
    # one without the live curve's files (EpochLog's state) cannot continue its curve
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    del ckpt["callbacks"]["EpochLog"]
    torch.save(ckpt, tmp_path / "no-curve.ckpt")
    assert not usable_checkpoint(tmp_path / "no-curve.ckpt")
    assert AtomicCheckpointIO().load_checkpoint(tmp_path / "last.ckpt")["epoch"] == \
        trainer.current_epoch


def test_non_finite_loss_names_version_and_step():
    m = TrainModule(net=net(version="version_9"), lr=1e-3, weight_decay=0.05, warmup_steps=0,
                    total_steps=1, label_smoothing=0.0)
    with torch.no_grad():
        m.net.vit.classifier.weight.fill_(float("nan"))
    m.on_train_epoch_start()
    batch = (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(NonFiniteLossError, match=r"version 'version_9'.*step 0.*Lower train.lr"):
        m.training_step(batch, 0)


def test_bf16_autocast_is_chosen_only_on_cuda(monkeypatch):
    assert resolve_precision("auto", "cpu") == "32-true"
    monkeypatch.setattr(model_module, "cuda_problem", lambda: None)   # as on a GPU machine
    assert resolve_precision("auto", "auto") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"             # asked for the CPU
    assert resolve_precision("32-true", "auto") == "32-true"         # an explicit choice stays
    monkeypatch.setattr(model_module, "cuda_problem", lambda: "no NVIDIA driver.")
    assert resolve_precision("auto", "auto") == "32-true"


def test_a_mixing_recipe_trains_on_soft_targets():
    recipe = {"hflip": {"p": 0.5}, "mixup": {"alpha": 0.8}, "cutmix": {"alpha": 1.0}}
    m = TrainModule(net=net(recipe=recipe), lr=1e-3, weight_decay=0.05, warmup_steps=0,
                    total_steps=1, label_smoothing=0.1)
    m.on_train_epoch_start()
    images = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8)
    loss = m.training_step((images, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])), 0)
    assert torch.isfinite(loss) and loss.requires_grad
    assert 0.0 <= m.train_acc.compute().item() <= 1.0


@pytest.mark.parametrize("first", [b"\x80"])
def test_a_model_file_whose_header_length_looks_like_a_pickle_still_loads(tmp_path, first):
    """A safetensors file starts with its header's length: any bytes. Files whose length
    begins like a pickle's signature are model files all the same."""
    path = tmp_path / "m.safetensors"
    for k in range(600):
        save_classifier(ViTClassifier(**net()), path, epoch=0, pad="x" * k)
        if path.read_bytes()[:len(first)] == first:
            break
    else:
        pytest.skip("no padding gave that header length")
    assert load_classifier(path).config["classes"] == CLASSES


# ------------------------------------------------------------------ hostile headers
PEAK_MB = 700        # what any hostile input may cost, at most


def peak_of_reading(path) -> tuple[str, float]:
    """read_model_file(path) in a fresh process: ('refused: <message>' or 'read', the memory
    the read itself took in MB: the kernel's high-water mark of resident memory, reset once
    the imports are done (torch alone holds about 700 MB resident), minus what was resident
    then)."""
    import re
    import subprocess
    import sys

    from conftest import ROOT
    code = ("import re, sys\nfrom augvit.model import ModelFileError, read_model_file\n"
            "kb = lambda key: int(re.search(key + r':\\s+(\\d+) kB', "
            "open('/proc/self/status').read())[1])\n"
            "open('/proc/self/clear_refs', 'w').write('5')\nbase = kb('VmRSS')\n"
            "try:\n    read_model_file(sys.argv[1]); print('read')\n"
            "except ModelFileError as e:\n    print('refused:', e)\n"
            "print((kb('VmHWM') - base) / 1024)\n")
    run = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    text, peak = run.stdout.rsplit("\n", 2)[-3:-1]
    assert re.fullmatch(r"[\d.]+", peak), run.stdout[-2000:]
    return text, float(peak)


def test_a_30_mb_header_is_refused_by_its_length_unparsed(tmp_path):
    """Parsing a 30 MB JSON header took 776 MB; its 8-byte length is read first."""
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"augvit": json.dumps(
        {"format": "augvit-classifier/3", "pad": ["x" * 8] * 3_000_000})})
    assert path.stat().st_size > 30_000_000
    text, peak = peak_of_reading(path)
    assert text.startswith("refused:") and "its header claims 42,000,136 bytes, over the " \
        "16,777,216 a model file of this project may have" in text, text
    assert peak < PEAK_MB, peak
    record_peak("model_header_long", peak, path.stat().st_size)


def test_a_deeply_nested_header_is_named_not_a_recursion_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(2)}, str(path),
              metadata={"augvit": "[" * 200_000 + "]" * 200_000})
    text, peak = peak_of_reading(path)
    assert text.startswith("refused:") and "its header nests deeper than Python parses" in \
        text, text
    assert peak < PEAK_MB, peak
    record_peak("model_header_nested", peak, path.stat().st_size)


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>", "a\x1b[2Jb", "../../etc",
                                  "## Reading"])
def test_class_names_in_a_model_file_pass_the_class_name_rule(tmp_path, name):
    path = saved(tmp_path)
    config = header(path)["config"]
    config["classes"] = ["a", name, "c"]
    rewrite(path, config=config)
    with pytest.raises(ModelFileError, match=r"(?s)its config is not valid.*class name .* is "
                                             r"not allowed; class names may hold letters"):
        load_classifier(path)

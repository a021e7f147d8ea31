"""The ViT classifier: from-scratch and pretrained (local folder) builds, freezing, model files."""
from __future__ import annotations

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from augvit.io import StageError
from augvit.model import ViTClassifier, load_classifier, save_classifier
from augvit.training import NonFiniteLossError, TrainModule, resolve_precision

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
    save_classifier(m, tmp_path / "m.ckpt", epoch=0)
    for p in src.iterdir():      # the pretrained folder is gone: the model file must suffice
        p.unlink()
    back = load_classifier(tmp_path / "m.ckpt")
    assert back.config["classes"] == CLASSES and back.config["mean"] == [0.3] * 3
    x = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    torch.testing.assert_close(back(back.inputs(x, False)), m(m.inputs(x, False)))


def test_a_file_that_is_no_model_file_is_named(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(StageError, match="other.ckpt: not a model file of this project"):
        load_classifier(tmp_path / "other.ckpt")


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
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # as on a GPU machine
    assert resolve_precision("auto", "auto") == "bf16-mixed"
    assert resolve_precision("auto", "cpu") == "32-true"             # asked for the CPU
    assert resolve_precision("32-true", "auto") == "32-true"         # an explicit choice stays
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
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

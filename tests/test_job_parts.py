"""The pieces a job is made of: heads, losses, mixing, weights, devices, schedules, labels."""
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.data.batches import mix_batch, sample_weights
from tasks.data.preparation import prepare
from tasks.job import make_scheduler, split_fold, train_job
from tasks.job_io import Job
from tasks.logits import read_logits
from tasks.spec.augment import MixSpec
from tasks.spec.experiment import LossTerm, ModelSpec, TrainSpec
from tasks.train.device import DeviceError, check_cuda_arch, select_device
from tasks.train.losses import Targets, class_weights, head_targets, total_loss
from tasks.train.model import PretrainedError, build_model, logits18
from tests.helpers.specs import shrunk_spec


def small_spec(root: Path, results: Path, *overrides: str):
    return shrunk_spec(root, results, "folds.n_splits=3", "train.tta_flip=true", *overrides, name="parts")


def test_multi_head_logits_are_joint_log_probabilities():
    torch.manual_seed(0)
    net = build_model(ModelSpec(backbone="test_convnext"), TrainSpec(head="multi", age_mse=0.1))
    out = net(torch.randn(4, 3, 64, 48))
    assert {k: v.shape[1] for k, v in out.items()} == {"mask": 3, "gender": 2, "age": 3, "age_value": 1}
    joint = logits18(out)
    assert joint.shape == (4, 18)
    assert torch.allclose(torch.logsumexp(joint, 1), torch.zeros(4), atol=1e-5)
    # class 13 = mask 2, gender 0, age 1
    expected = sum(torch.log_softmax(out[k], 1)[:, i] for k, i in (("mask", 2), ("gender", 0), ("age", 1)))
    assert torch.allclose(joint[:, 13], expected, atol=1e-5)


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "focal", "label_smoothing", "f1"])
@pytest.mark.parametrize("head", ["single", "multi"])
def test_every_loss_trains_every_head(name, head):
    torch.manual_seed(0)
    train = TrainSpec(head=head, loss=[LossTerm(name=name)], age_mse=0.1 if head == "multi" else 0)
    net = build_model(ModelSpec(backbone="test_convnext"), train)
    labels = torch.arange(8) % 18
    targets = Targets(torch.nn.functional.one_hot(labels, 18).float(), torch.full((8,), 40.0))
    loss = total_loss(train, net(torch.randn(8, 3, 64, 48)), targets, class_weights(labels))
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.heads.parameters())


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "label_smoothing"])
def test_cross_entropy_terms_equal_their_definitions_on_mixed_targets(name):
    """The torch cross-entropy these terms use equals the textbook soft-target formula, each row
    counted by its loss weight (pseudo rows weigh `pseudo.weight`)."""
    from tasks.train.losses import term_loss

    torch.manual_seed(0)
    logits = torch.randn(16, 18) * 3
    labels, other = torch.randint(0, 18, (16,)), torch.randint(0, 18, (16,))
    lam = torch.rand(16, 1)
    target = lam * torch.nn.functional.one_hot(labels, 18) + (1 - lam) * torch.nn.functional.one_hot(other, 18)
    weight = torch.rand(18) + 0.5
    term = LossTerm(name=name, smoothing=0.1)
    smoothed = target * 0.9 + 0.1 / 18 if name == "label_smoothing" else target
    per_class = -smoothed * torch.log_softmax(logits, dim=1) * (weight if name == "weighted_ce" else 1)
    rows = torch.rand(16) + 0.1
    expected = (per_class.sum(1) * rows).sum() / rows.sum()
    assert abs(term_loss(term, logits, target, weight, rows).item() - expected.item()) < 1e-5
    plain = per_class.sum(1).mean()
    assert abs(term_loss(term, logits, target, weight, torch.ones(16)).item() - plain.item()) < 1e-5


def test_perfect_predictions_score_zero_soft_f1():
    from tasks.train.losses import soft_f1

    target, ones = torch.eye(18), torch.ones(18)
    assert soft_f1(target * 50, target, ones) < 1e-3
    assert soft_f1(torch.zeros(18, 18), target, ones) > 0.9
    # a row of weight w counts as w copies of it
    logits = torch.randn(18, 18)
    twice = torch.cat([logits, logits[:1]]), torch.cat([target, target[:1]])
    weighted = ones.clone()
    weighted[0] = 2
    assert abs(soft_f1(logits, target, weighted) - soft_f1(*twice, torch.ones(19))) < 1e-6


def test_head_targets_marginalise_and_weights_favour_rare():
    soft = torch.zeros(2, 18)
    soft[0, 17] = 1  # mask 2, female, old
    soft[1, 0], soft[1, 4] = 0.5, 0.5  # a mix of class 0 and class 4 (mask 0, female, 30-59)
    heads = head_targets(soft)
    assert heads["mask"].tolist() == [[0, 0, 1], [1, 0, 0]]
    assert heads["gender"].tolist() == [[0, 1], [0.5, 0.5]]
    assert heads["age"].tolist() == [[0, 0, 1], [0.5, 0.5, 0]]
    weights = class_weights(torch.tensor([0] * 9 + [17]))
    assert weights["class"][17] > weights["class"][0]


def test_vertical_strip_mix():
    x = torch.stack([torch.full((3, 8, 10), float(i)) for i in range(4)])
    labels, ages = torch.tensor([0, 5, 9, 17]), torch.tensor([20.0, 30, 40, 60])
    strip = MixSpec(name="vstrip", prob=1.0, strip_ratio=(0.5, 0.5))
    mixed, targets = mix_batch(x.clone(), Targets.of_labels(labels, ages), strip, torch.Generator().manual_seed(0))
    assert (mixed[0, :, :, :5] == 0).all() and (mixed[0, :, :, 5:] == 3).all()
    assert torch.allclose(targets.soft.sum(1), torch.ones(4))
    assert targets.soft[0, 0] == 0.5 and targets.soft[0, 17] == 0.5 and targets.age[0] == 40


@pytest.mark.parametrize("name", ["cutmix", "mixup"])
def test_mixing_follows_only_its_generator(name):
    """Exact resume needs every draw from the epoch's generator, none from global state."""
    x = torch.rand(6, 3, 16, 12)

    def mixed(seed: int, global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        out, _ = mix_batch(x.clone(), Targets.of_labels(torch.arange(6), torch.arange(6.0)), MixSpec(name=name, prob=1.0),
                           torch.Generator().manual_seed(seed))
        return out

    assert torch.equal(mixed(1, 10), mixed(1, 20))
    assert not torch.equal(mixed(1, 10), mixed(2, 10))


@pytest.mark.parametrize("name", ["cutmix", "mixup"])
def test_cutmix_and_mixup_keep_targets_consistent(name):
    x = torch.rand(6, 3, 16, 12)
    mixed, targets = mix_batch(x.clone(), Targets.of_labels(torch.arange(6), torch.arange(6.0)), MixSpec(name=name, prob=1.0),
                               torch.Generator().manual_seed(1))
    lam = targets.soft[0, 0].item()
    assert torch.allclose(targets.soft.sum(1), torch.ones(6)) and 0 <= lam <= 1
    if name == "mixup":
        assert torch.allclose(mixed[0], lam * x[0] + (1 - lam) * x[5], atol=1e-6)
    else:  # the share of untouched pixels is the target weight
        assert abs((mixed[0] == x[0]).float().mean().item() - lam) < 0.05


def test_sampler_weights():
    labels = np.array([0] * 8 + [2] * 2)
    w = sample_weights(labels, labels % 3, "weighted")
    assert np.isclose(w[labels == 0].sum(), w[labels == 2].sum())
    bands = np.array([0] * 6 + [1] * 2 + [2] * 2)
    old = sample_weights(bands, bands, "oversample_old")
    assert old[-1] == 2.0 and old[0] == 1.0 and sample_weights(labels, labels, "none") is None


def test_pretrained_offline_fails_clearly_and_local_file_works(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedError, match="pretrained_path"):
        build_model(ModelSpec(backbone="test_convnext", pretrained=True), TrainSpec())
    import timm

    source = timm.create_model("test_convnext", num_classes=7)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    net = build_model(ModelSpec(backbone="test_convnext", pretrained_path=tmp_path / "weights.pth"), TrainSpec())
    body = net.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in source.state_dict().items() if k in body)
    assert "head.fc.weight" not in body  # the source's classifier was dropped, ours is new
    with pytest.raises(PretrainedError, match="is not a file"):
        build_model(ModelSpec(backbone="test_convnext", pretrained_path=tmp_path / "nope.pth"), TrainSpec())


def test_cpu_precisions_and_channels_last():
    dev = select_device(TrainSpec(amp="bf16", channels_last=True))
    assert dev.device.type == "cpu" and dev.amp_dtype == torch.bfloat16 and not dev.scaler().is_enabled()
    net = build_model(ModelSpec(backbone="test_convnext"), TrainSpec()).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 48).contiguous(memory_format=torch.channels_last)
    with dev.autocast():
        out = logits18(net(x))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert select_device(TrainSpec()).amp_dtype is None  # auto: full precision on CPU
    with pytest.raises(DeviceError, match="fp16 needs a GPU"):
        select_device(TrainSpec(amp="fp16"))


def test_cuda13_build_on_a_v100_is_refused_with_the_fix():
    with pytest.raises(DeviceError) as info:
        check_cuda_arch((7, 0), ["sm_75", "sm_80", "sm_90", "sm_100"], "2.14.1+cu130")
    assert "sm_70" in str(info.value) and "--index-url" in str(info.value)
    check_cuda_arch((7, 0), ["sm_70", "sm_80"], "2.14.1+cu126")  # a CUDA 12 build is fine


@pytest.mark.parametrize("name", ["none", "step", "cosine", "cyclic", "onecycle", "plateau"])
def test_schedulers_from_timm(name):
    train = TrainSpec(epochs=6, scheduler={"name": name, "warmup_epochs": 1})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.optimizer.lr)
    scheduler = make_scheduler(optimizer, train, updates=4)
    if name == "none":
        assert scheduler is None
        return
    lrs = []
    for epoch in range(6):
        for step in range(4):
            scheduler.step_update(num_updates=epoch * 4 + step + 1)
        scheduler.step(epoch + 1, 0.5)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert max(lrs) <= train.optimizer.lr * 1.0001 and len(set(np.round(lrs, 12))) > 1


def test_age_border_shift_is_for_training_only(synth_root, tmp_path):
    spec = small_spec(synth_root, tmp_path, "train.age_borders=[30, 58]", "train.drop_age_margin=3")
    dataset = prepare(spec, verbose=False)
    fit, val = split_fold(dataset, spec, 0, spec.train_for(spec.models[0]))
    assert not fit["age"].isin([27, 28, 29, 57, 58, 59]).any()
    assert not ((fit["age"] == 58) & (fit["train_label"] % 3 != 2)).any()
    truth = dataset.train.set_index("image_key").loc[val["image_key"]]
    assert np.array_equal(val["label"].to_numpy(), truth["label"].to_numpy())  # true bands


def test_multi_head_job_writes_valid_logits(synth_root, tmp_path):
    spec = small_spec(synth_root, tmp_path, "train.head=multi", "train.age_mse=0.1", "train.epochs=2",
                      "train.mix={name: cutmix, prob: 1.0}", "train.sampler=oversample_old",
                      "train.tta_flip=false")
    prepare(spec, verbose=False)
    result = train_job(spec, Job("test_convnext", 1, tmp_path / "job"), log=lambda s: None)
    frame, logits, _ = read_logits(result.oof_path)
    assert logits.shape == (len(frame), 18) and (frame["fold"] == 1).all()
    probs = np.exp(logits.astype(np.float64)).sum(1)
    assert np.allclose(probs, 1, atol=1e-4)  # multi-head logits are joint log-probabilities

"""train.tta, train.ema, train.grad_accum, train.clip_grad: their validation, their place in the
hashes, and what they do to one epoch and to the logits (fast: tiny hand-made models and batches)."""
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tasks.job_io import planned_jobs
from tasks.spec.experiment import SpecError, TrainSpec
from tasks.spec.load import load_spec
from tasks.spec.techniques import FLIP, NO_TTA, parse_tta, resolve_tta
from tasks.train.device import Device
from tasks.train.inference import ModelContext
from tasks.train.loop import Fitting, optimizer_steps, train_epoch
from tasks.train.losses import class_weights
from tasks.train.tta import TtaError, check_view_sizes, mean_over_views, view_sizes

DEMO = Path("experiments/demo.yaml")


def spec_error(*overrides: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(DEMO, list(overrides), check_data=False)
    return str(info.value)


@pytest.mark.parametrize("override, expected", [
    ("train.tta=[vflip]", "train.tta.0: 'vflip' is not a TTA step; use hflip, scale, five_crop"),
    ("train.tta=[{scale: [0.9, 1]}]", "train.tta.0: scale: [0.9, 1.0]: give each factor once and leave out 1"),
    ("train.tta=[hflip, {five_crop: 1.5}]", "train.tta.1.five_crop: Input should be less than 1"),
    ("train.tta=[{vflip: 1}]", "train.tta.0.vflip: unknown field (typo?)"),
    ("train.tta=[hflip, hflip]", "train.tta: hflip listed more than once"),
    ("train.tta=[five_crop]", "train.tta: [five_crop 0.875] has no hflip, but tta_flip is true (its default); "
                              "add hflip to tta, or set tta_flip: false"),
    ("models.1.train={tta_flip: false, tta: [hflip]}",
     "models.1.train.tta: has hflip, but tta_flip is false; remove hflip from tta, or set tta_flip: true"),
    ("train.ema={}", "train.ema.decay: Field required"),
    ("train.ema.decay=1", "train.ema.decay: Input should be less than 1"),
    ("train.ema.decy=0.9", "train.ema.decy: unknown field (typo?)"),
    ("train.grad_accum=0", "train.grad_accum: Input should be greater than or equal to 1"),
    ("models.0.train.clip_grad=-1", "models.0.train.clip_grad: Input should be greater than 0"),
])
def test_bad_values_name_the_field_path(override, expected):
    message = spec_error(override)
    assert message.startswith(f"{DEMO}: ") and expected in message, message


def test_dotted_overrides_set_each_option():
    spec = load_spec(DEMO, ["train.ema.decay=0.999", "train.grad_accum=4", "train.clip_grad=2",
                            "train.tta=[scale, hflip]", "models.2.train.tta_flip=false",
                            "models.2.train.tta=five_crop"], check_data=False)
    train = spec.train
    assert (train.ema.decay, train.ema.warmup, train.grad_accum, train.clip_grad) == (0.999, False, 4, 2.0)
    assert spec.model_dump(mode="json")["train"]["tta"] == ["hflip", {"scale": [0.875, 1.125]}]  # canonical order
    assert resolve_tta(train).text() == "hflip x scale 0.875/1.125 (6 views)"
    assert resolve_tta(spec.train_for(spec.models[2])).count == 5
    assert load_spec(DEMO, ["train.tta_flip=false"], check_data=False).train.tta is None


# Computed on main (5dfb058), before train.tta, ema, grad_accum and clip_grad existed: the spec
# hash and each model's fold-0 job hash on rows "rows0".
BEFORE = {
    ("demo", ()): ("b2805f841004347f", ["7ded062d7ca49599", "7cd92ebce39e0edd", "b9196fef507cf463"]),
    ("five_fold", ()): ("eb104001291283c8", ["9c09dad72a78cd20", "7191ad0a27feaa8a", "2d5b837bc526e963",
                                             "0dd8dd3d3d4200ac", "baf03c2ab593c7ac", "2a9b8323fec898f6",
                                             "9117ff66d4675750"]),
    ("demo", ("train.tta_flip=false", "models.1.train={tta_flip: true, epochs: 3}")):
        ("fd4ed2b4dd5211df", ["c1289f972c18159b", "7563b6ec4c045bf0", "ec0fe46103b576ff"]),
}


def hashes(name: str, overrides) -> tuple[str, list[str]]:
    spec = load_spec(Path("experiments") / f"{name}.yaml", list(overrides), check_data=False)
    return spec.spec_hash(), [j.job_hash for j in planned_jobs(spec, "rows0")][::spec.folds.n_splits]


@pytest.mark.parametrize("name, overrides", list(BEFORE))
def test_specs_without_the_new_fields_keep_their_hashes(name, overrides):
    assert hashes(name, overrides) == BEFORE[name, overrides]
    # Set to what they do when left out: the same jobs, the same ids.
    flip = load_spec(Path("experiments") / f"{name}.yaml", list(overrides), check_data=False).train.tta_flip
    same = ("train.grad_accum=1", "train.ema=null", "train.clip_grad=null",
            f"models.0.train.tta={'[hflip]' if flip else '[]'}")
    assert hashes(name, (*overrides, *same))[1][0] == BEFORE[name, overrides][1][0]


@pytest.mark.parametrize("option", ["train.ema.decay=0.99", "train.grad_accum=2", "train.clip_grad=1",
                                    "train.tta=[hflip, five_crop]"])
def test_each_option_set_changes_the_job_and_spec_hash(option):
    spec_hash, jobs = hashes("demo", (option,))
    before_spec, before_jobs = BEFORE["demo", ()]
    assert spec_hash != before_spec and not set(jobs) & set(before_jobs)


class Tiny(nn.Module):
    """No batch-norm, no dropout: a batch's gradient is the mean of its rows'."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3 * 4 * 4, 18)

    def forward(self, x):
        return {"class": self.lin(x.flatten(1))}


def batches(count: int, size: int) -> list[tuple]:
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(count):
        labels = torch.randint(0, 18, (size,), generator=gen)
        images = torch.randint(0, 256, (size, 4, 4, 3), generator=gen, dtype=torch.uint8)
        out.append((images, nn.functional.one_hot(labels, 18).float(), torch.full((size,), 40.0), torch.ones(size)))
    return out


def joined(parts: list[tuple]) -> tuple:
    return tuple(torch.cat(column) for column in zip(*parts))


class Steps:
    """A scheduler that records the optimiser step numbers it is given."""

    def __init__(self):
        self.numbers = []

    def step_update(self, num_updates):
        self.numbers.append(num_updates)


class NormRecording(torch.optim.SGD):
    """SGD that records the gradients' total norm at every step."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.norms = []

    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return super().step(closure)


def run_epoch(model, data, epoch=0, amp=None, scaler=None, lr=0.5, **train):
    spec = TrainSpec(**train)
    device = Device(torch.device("cpu"), amp, False)
    ctx = ModelContext(model, device, (torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)), spec)
    optimizer, steps = NormRecording(model.parameters(), lr), Steps()
    fit = Fitting(ctx, model, optimizer, steps, scaler or device.scaler(), class_weights(torch.arange(18)))
    train_epoch(fit, data, epoch, torch.Generator().manual_seed(0))
    return optimizer.norms, steps.numbers


def assert_same_weights(a: nn.Module, b: nn.Module):
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=2e-6, msg=name)


def test_grad_accum_of_n_batches_is_one_step_on_their_union():
    start, data = Tiny(), batches(3, 4)
    accumulated, whole, stepwise = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    assert run_epoch(accumulated, data, grad_accum=3)[1] == [1]
    assert run_epoch(whole, [joined(data)])[1] == [1]
    assert_same_weights(accumulated, whole)
    run_epoch(stepwise, data)
    assert not torch.allclose(stepwise.lin.weight, whole.lin.weight, atol=1e-4)  # three steps are not one
    assert not torch.allclose(whole.lin.weight, start.lin.weight, atol=1e-4)


def test_a_trailing_partial_group_is_its_own_mean_and_the_schedule_counts_steps():
    start, data = Tiny(), batches(5, 4)
    accumulated, grouped = copy.deepcopy(start), copy.deepcopy(start)
    _, numbers = run_epoch(accumulated, data, epoch=1, grad_accum=2)
    assert numbers == [4, 5, 6] and optimizer_steps(5, 2) == 3  # epoch 1 of 3 steps each
    run_epoch(grouped, [joined(data[0:2]), joined(data[2:4]), data[4]])
    assert_same_weights(accumulated, grouped)


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_clip_grad_bounds_the_gradient_norm(amp):
    data = batches(4, 8)
    unclipped, _ = run_epoch(Tiny(), data, amp=amp)
    clipped, _ = run_epoch(Tiny(), data, amp=amp, clip_grad=0.05)
    assert min(unclipped) > 0.5  # so the bound below is the clipping's doing
    assert all(0.05 * 0.999 < n <= 0.05 * 1.001 for n in clipped)


def test_clipping_sees_the_unscaled_gradients_of_a_loss_scaler():
    """fp16 AMP's path: the loss is scaled by 2^16; clipping after unscale_ bounds the true norm."""
    clipped, _ = run_epoch(Tiny(), batches(2, 8), scaler=torch.amp.GradScaler("cpu"), clip_grad=0.05)
    assert all(0.05 * 0.999 < n <= 0.05 * 1.001 for n in clipped)


def left_half(x: torch.Tensor) -> torch.Tensor:
    """Not symmetric under a flip, and it sees the input size."""
    return torch.stack([x[:, 0, :, : x.shape[3] // 2].mean((1, 2)), torch.full((len(x),), float(x.shape[2]))], 1)


def test_tta_views_are_ttach_means():
    x = torch.randn(3, 3, 64, 48)
    assert torch.equal(mean_over_views(left_half, x, NO_TTA), left_half(x))
    assert torch.equal(mean_over_views(left_half, x, FLIP), (left_half(x) + left_half(x.flip(3))) / 2)  # as before
    crops = [x[:, :, :56, :42], x[:, :, -56:, :42], x[:, :, -56:, -42:], x[:, :, :56, -42:], x[:, :, 4:60, 3:45]]
    resized = [nn.functional.interpolate(c, size=(64, 48), mode="bilinear", align_corners=False) for c in crops]
    expected = sum(left_half(c) for c in resized) / 5
    torch.testing.assert_close(mean_over_views(left_half, x, parse_tta("five_crop")), expected)
    scaled = mean_over_views(left_half, x, parse_tta("scale"))
    assert scaled[0, 1] == pytest.approx((64 + 56 + 72) / 3)  # the model saw the rescaled sizes
    assert view_sizes(parse_tta("hflip,scale,five_crop"), (64, 48)) == [(56, 42), (72, 54)]
    assert parse_tta("[hflip, five_crop]").count == 10 and parse_tta("none") == NO_TTA


class FixedSize(nn.Module):
    def forward(self, x):
        if tuple(x.shape[-2:]) != (64, 48):
            raise RuntimeError(f"input size {tuple(x.shape[-2:])} does not match the model (64, 48)")
        return x


def test_a_backbone_that_takes_one_size_is_refused_multi_scale_before_training():
    check_view_sizes(FixedSize(), parse_tta("hflip,five_crop"), (64, 48), torch.device("cpu"))  # resized back
    with pytest.raises(TtaError, match=r"train.tta: the backbone does not take the 56x42 images that hflip x scale "
                                       r"0.875/1.125 \(6 views\) feeds it \(RuntimeError: input size"):
        check_view_sizes(FixedSize(), parse_tta("hflip,scale"), (64, 48), torch.device("cpu"))

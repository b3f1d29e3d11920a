"""Progressive-shrinking trainer: config, schedule, losses and a tiny run of every phase on CPU."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_sdk.arch import FMNIST
from ofa_sdk.training.checkpoint import load_checkpoint, load_tensors
from ofa_sdk.training.data import DatasetNotFound
from ofa_sdk.training.schedule import (
    PHASE_NAMES,
    ConfigError,
    Phase,
    extreme_choice,
    lr_at,
    phase_choices,
)
from ofa_sdk.training.losses import subnet_loss
from ofa_sdk.training.loop import SupernetMode
from ofa_sdk.training.supernet import OFAMobileNetV3
from ofa_sdk.training.train import TrainConfig, kd_loss, main, state_hash, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def tiny() -> TrainConfig:
    return TrainConfig.from_file(CONFIGS / "tiny.toml")


# ---- config ------------------------------------------------------------------------------------

def test_bundled_configs_parse():
    """The three stages of scripts/train_fmnist.sh, and the experiments that led to them, differ
    from each other only where their headers say."""
    replace = dataclasses.replace
    full = TrainConfig.from_file(CONFIGS / "fmnist.toml")
    stage1 = TrainConfig.from_file(CONFIGS / "fmnist_stage1.toml")
    restart = TrainConfig.from_file(CONFIGS / "fmnist_restart.toml")
    elastic = TrainConfig.from_file(CONFIGS / "fmnist_elastic.toml")
    assert full.space == FMNIST and full.dataset == "fmnist"
    assert [(p.name, p.epochs, p.lr) for p in full.phases] == [("full", 12, 0.1)]
    assert [(p.name, p.epochs, p.lr) for p in restart.phases] == [("full", 4, 0.03)]
    (phase3,) = elastic.phases
    assert (phase3.name, phase3.epochs, phase3.fixed_subnets) == ("width2", 22, ("smallest",))
    assert phase3.largest_probability == 0.25 and phase3.kd_weight > 0
    # every stage runs as 2 DDP processes: the same 128 images per step as configs/fmnist.toml
    # in one process (the from-scratch baselines' recipe)
    for cfg in (stage1, restart, elastic):
        assert cfg.batch_size * 2 == full.batch_size
    assert replace(stage1, batch_size=full.batch_size, run_dir=full.run_dir) == full
    assert replace(restart, batch_size=full.batch_size, phases=full.phases,
                   run_dir=full.run_dir) == full
    # the recipe before experiment L (D): stages 2 and 3 of the supernet bundled until then
    exp = CONFIGS / "experiments"
    restart_d = TrainConfig.from_file(exp / "fmnist_restart_d.toml")
    elastic_d = TrainConfig.from_file(exp / "fmnist_elastic_d.toml")
    assert [(p.name, p.epochs, p.lr) for p in restart_d.phases] == [("full", 10, 0.03)]
    assert [p.name for p in elastic_d.phases] == list(PHASE_NAMES[1:])
    assert all(p.include_largest and p.kd_weight > 0 for p in elastic_d.phases)
    for cfg in (restart_d, elastic_d):
        assert replace(cfg, batch_size=full.batch_size, phases=full.phases,
                       run_dir=full.run_dir) == full
    # the first warm-restart experiment: stage 2 with 6 epochs at 128 images in one process
    plus6 = TrainConfig.from_file(exp / "fmnist_full_plus6.toml")
    assert replace(plus6, run_dir=restart_d.run_dir, batch_size=restart_d.batch_size,
                   phases=(replace(plus6.phases[0], epochs=10),)) == restart_d
    # D's stage 2 in one process, for the from-scratch baselines (bench_ps_vs_scratch.py --then)
    one = TrainConfig.from_file(exp / "fmnist_restart_1proc.toml")
    assert replace(one, run_dir=restart_d.run_dir, batch_size=restart_d.batch_size) == restart_d
    assert one.batch_size == full.batch_size
    # the sandwich experiment (one process of 128) is D's elastic phases
    sandwich = TrainConfig.from_file(exp / "fmnist_sandwich.toml")
    assert replace(sandwich, run_dir=elastic_d.run_dir, batch_size=elastic_d.batch_size) == elastic_d
    # experiment E (issue 20): stage 3 as one all-elastic sandwich phase, otherwise D's stage 3
    onephase = TrainConfig.from_file(exp / "fmnist_elastic_onephase.toml")
    (only,) = onephase.phases
    assert (only.name, only.include_smallest, only.include_largest) == ("width2", True, True)
    assert replace(onephase, run_dir=elastic_d.run_dir, phases=elastic_d.phases) == elastic_d
    # experiment F: E with stage 2 cut to 4 epochs and stage 3 grown to 14
    restart4 = TrainConfig.from_file(exp / "fmnist_restart4.toml")
    assert replace(restart4, run_dir=restart_d.run_dir,
                   phases=(replace(restart4.phases[0], epochs=10),)) == restart_d
    onephase_f = TrainConfig.from_file(exp / "fmnist_elastic_onephase_f.toml")
    assert replace(onephase_f, run_dir=onephase.run_dir,
                   phases=(replace(onephase_f.phases[0], epochs=11),)) == onephase
    # experiment G: F with in-place distillation
    inplace_g = TrainConfig.from_file(exp / "fmnist_elastic_inplace_g.toml")
    assert replace(inplace_g, run_dir=onephase_f.run_dir,
                   phases=(replace(inplace_g.phases[0], teacher="frozen"),)) == onephase_f
    # experiment H: F with the KD temperature at 2
    kd2_h = TrainConfig.from_file(exp / "fmnist_elastic_kd2_h.toml")
    assert kd2_h.kd_temperature == 2.0
    assert replace(kd2_h, run_dir=onephase_f.run_dir, kd_temperature=1.0) == onephase_f
    # experiment I: F with the step's largest subnet swapped for a second random one, 19 epochs
    two_random_i = TrainConfig.from_file(exp / "fmnist_elastic_two_random_i.toml")
    (phase_i,) = two_random_i.phases
    assert phase_i.fixed_subnets == ("smallest",) and phase_i.subnets_per_step == 3
    assert replace(two_random_i, run_dir=onephase_f.run_dir,
                   phases=(replace(phase_i, epochs=14, include_largest=True),)) == onephase_f
    # experiment J: I's stage 3 with 16 epochs, from D's 10-epoch stage 2
    two_random_j = TrainConfig.from_file(exp / "fmnist_elastic_two_random_j.toml")
    assert replace(two_random_j, run_dir=two_random_i.run_dir,
                   phases=(replace(two_random_j.phases[0], epochs=19),)) == two_random_i
    # experiment K: I with the largest as the first random subnet on half of the steps, 16 epochs
    half_largest_k = TrainConfig.from_file(exp / "fmnist_elastic_half_largest_k.toml")
    assert replace(half_largest_k, run_dir=two_random_i.run_dir,
                   phases=(replace(half_largest_k.phases[0], epochs=19,
                                   largest_probability=0.0),)) == two_random_i
    # experiment L: stage 1 as 2 DDP processes of 64 (the same 128 images per step), F's stage 2,
    # and K's stage 3 with the largest on a quarter of the steps, 22 epochs
    ddp_stage1_l = TrainConfig.from_file(exp / "fmnist_ddp_stage1_l.toml")
    quarter_largest_l = TrainConfig.from_file(exp / "fmnist_elastic_quarter_largest_l.toml")
    assert replace(quarter_largest_l, run_dir=half_largest_k.run_dir,
                   phases=(replace(quarter_largest_l.phases[0], epochs=16,
                                   largest_probability=0.5),)) == half_largest_k
    # ... which is the bundled recipe: L's three configs but for run_dir
    for bundled, experiment in ((stage1, ddp_stage1_l), (restart, restart4),
                                (elastic, quarter_largest_l)):
        assert replace(experiment, run_dir=bundled.run_dir) == bundled
    assert (stage1.run_dir, restart.run_dir, elastic.run_dir) == (
        "runs/fmnist-stage1", "runs/fmnist-stage2", "runs/fmnist")


@pytest.mark.parametrize("text, match", [
    ("[data]\nbatchsize = 3\n[phases.full]\nepochs = 1\nlr = 0.1\n", "batchsize"),
    ("[phases.shrink]\nepochs = 1\nlr = 0.1\n", "unknown phases"),
    ("[phases.full]\nepochs = 1\nlr = 0.1\nsubnets_per_step = 0\n", "subnets_per_step"),
    ("[phases.full]\nepochs = 1\nrate = 0.1\n", "rate"),
    ("[data]\ndataset = 'cifar'\n[phases.full]\nepochs = 1\nlr = 0.1\n", "dataset"),
    ("[model]\nspace = 'nope'\n[phases.full]\nepochs = 1\nlr = 0.1\n", "unknown search space"),
    ("seed = 0\n", "no \\[phases"),
    ("[phases.width1]\nepochs = 1\nlr = 0.1\nsubnets_per_step = 1\ninclude_smallest = true\n",
     "leave random subnets"),
    ("seed = = 0\n", "not valid TOML"),
    ("[phases.width2]\nepochs = 1\nlr = 0.1\nsubnets_per_step = 2\nteacher = 'live'\n",
     "teacher = 'live'"),
    ("[phases.width2]\nepochs = 1\nlr = 0.1\nsubnets_per_step = 2\nteacher = 'inplace'\n",
     "needs include_largest"),
    ("[phases.width2]\nepochs = 1\nlr = 0.1\nsubnets_per_step = 2\nlargest_probability = 1.5\n",
     "in \\[0, 1\\]"),
    ("[phases.width2]\nepochs = 1\nlr = 0.1\nsubnets_per_step = 2\ninclude_largest = true\n"
     "largest_probability = 0.5\n", "without include_largest"),
])
def test_bad_configs(text, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_toml(text)


def test_phase_choices_follow_the_paper():
    ks, es, ds = (3, 5, 7), (3, 4, 6), (2, 3, 4)
    expected = {
        "full": ((7,), (6,), (4,)), "kernel": (ks, (6,), (4,)), "depth1": (ks, (6,), (3, 4)),
        "depth2": (ks, (6,), ds), "width1": (ks, (4, 6), ds), "width2": (ks, es, ds),
    }
    for name, (k, e, d) in expected.items():
        c = phase_choices(name, FMNIST)
        assert (c["kernel_choices"], c["expand_choices"], c["depth_choices"]) == (k, e, d)
    assert Phase("width1", 1, 0.1).sorts_channels and not Phase("depth2", 1, 0.1).sorts_channels
    assert not Phase("full", 1, 0.1).uses_teacher and Phase("kernel", 1, 0.1).uses_teacher


def test_sandwich_subnets():
    c = phase_choices("width1", FMNIST)
    assert str(extreme_choice(FMNIST, c, 26, which="smallest")) == "k" + "3" * 16 + "-e" + \
        "4" * 16 + "-d2222-r26"
    assert extreme_choice(FMNIST, c, 32, which="largest") == FMNIST.largest()
    p = Phase("width2", 1, 0.1, subnets_per_step=3, include_smallest=True, include_largest=True)
    assert p.fixed_subnets == ("smallest", "largest")


def test_inplace_distillation_puts_the_largest_first_and_uses_no_frozen_teacher():
    p = Phase("width2", 1, 0.1, subnets_per_step=3, include_smallest=True, include_largest=True,
              teacher="inplace")
    assert p.fixed_subnets == ("largest", "smallest")
    assert p.inplace_kd and not p.uses_teacher
    assert not Phase("width2", 1, 0.1, subnets_per_step=3, include_largest=True,
                     kd_weight=0.0, teacher="inplace").inplace_kd
    mode = SupernetMode(FMNIST)
    net = OFAMobileNetV3(FMNIST)
    actives = []
    for which in mode.activate(net, p, phase_choices("width2", FMNIST), 24,
                               np.random.default_rng(0)):
        actives.append((which, net.active))
    assert [w for w, _ in actives] == ["largest", "smallest", "random"]
    assert actives[0][1] == FMNIST.largest(24) and actives[1][1] == FMNIST.smallest(24)


def test_largest_probability_swaps_the_first_random_subnet_for_the_largest():
    mode, net = SupernetMode(FMNIST), OFAMobileNetV3(FMNIST)
    choices = phase_choices("width2", FMNIST)

    def steps(p, n):
        phase = Phase("width2", 1, 0.1, subnets_per_step=3, include_smallest=True,
                      largest_probability=p)
        rng = np.random.default_rng(0)
        return [[(w, net.active) for w in mode.activate(net, phase, choices, 28, rng)]
                for _ in range(n)]

    always = steps(1.0, 3)
    assert all([w for w, _ in s] == ["smallest", "largest", "random"] for s in always)
    assert all(s[1][1] == FMNIST.largest(28) and s[0][1] == FMNIST.smallest(28) for s in always)
    # off, the phase is experiment I's and draws from the stream exactly as before the option
    off = steps(0.0, 3)
    assert all([w for w, _ in s] == ["smallest", "random", "random"] for s in off)
    before = Phase("width2", 1, 0.1, subnets_per_step=3, include_smallest=True)
    rng = np.random.default_rng(0)
    ref = [[net.active for _ in mode.activate(net, before, choices, 28, rng)] for _ in range(3)]
    assert [[a for _, a in s] for s in off] == ref
    half = steps(0.5, 400)
    share = sum(s[1][0] == "largest" for s in half) / len(half)
    assert 0.4 < share < 0.6
    assert all([w for w, _ in s][0] == "smallest" and len(s) == 3 for s in half)


def test_subnet_loss_frozen_and_inplace():
    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2, 3])
    big, small, frozen = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    ce = lambda out: torch.nn.functional.cross_entropy(out, y, label_smoothing=0.1)  # noqa: E731
    kw = dict(label_smoothing=0.1, temperature=1.0)
    inplace = Phase("width2", 1, 0.1, subnets_per_step=2, include_largest=True,
                    kd_weight=0.5, teacher="inplace")
    # the in-place teacher learns from the labels alone and hands its logits on
    loss, soft = subnet_loss(big, y, None, which="largest", phase=inplace, **kw)
    assert torch.equal(loss, ce(big)) and torch.equal(soft, big)
    loss, soft2 = subnet_loss(small, y, soft, which="random", phase=inplace, **kw)
    assert torch.allclose(loss, ce(small) + 0.5 * kd_loss(small, big)) and soft2 is soft
    # a frozen teacher's targets reach every subnet, the largest too
    frozen_phase = dataclasses.replace(inplace, teacher="frozen")
    loss, soft = subnet_loss(big, y, frozen, which="largest", phase=frozen_phase, **kw)
    assert torch.allclose(loss, ce(big) + 0.5 * kd_loss(big, frozen)) and soft is frozen


def test_lr_warmup_then_cosine():
    lrs = [lr_at(s, total_steps=100, warmup_steps=10, lr=0.1, min_lr=0.001) for s in range(101)]
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1) and lrs[100] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.001 + 0.5 * 0.099)


def test_kd_loss_is_soft_cross_entropy():
    torch.manual_seed(0)
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    p = t.softmax(1)
    expected = -(p * s.log_softmax(1)).sum(1).mean()
    assert torch.allclose(kd_loss(s, t), expected)
    same = s.detach().clone().requires_grad_(True)
    kd_loss(same, s.detach(), temperature=2.0).backward()
    assert same.grad.abs().max() < 1e-6  # minimum when the student matches the teacher


# ---- tiny runs ---------------------------------------------------------------------------------

def test_every_phase_runs(tiny, tmp_path):
    run = train(tiny, run_dir=tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["full", "full"] + list(PHASE_NAMES[1:])
    for r in records:
        assert math.isfinite(r["loss"]) and 0 <= r["val_acc_min"] <= 100
        assert r["lr"] > 0 and r["epoch_time_s"] >= 0
    final = json.loads((run / "final.json").read_text())
    assert final["global_step"] == sum(p.epochs for p in tiny.phases) * tiny.max_steps_per_epoch
    # The bundled weights load into a fresh supernet of the space, strictly.
    tensors, meta = load_tensors(run / "model.safetensors")
    net = OFAMobileNetV3(tiny.space)
    net.load_state_dict(tensors, strict=True)
    assert json.loads(meta["space"])["name"] == tiny.space.name
    ck = load_checkpoint(run)
    assert ck.state["position"]["phase"] == "done"
    assert ck.teacher is not None and state_hash(ck.model) == state_hash(tensors)
    assert (ck.path / "config.toml").read_text() == tiny.text


def test_training_learns(tiny, tmp_path):
    """The full phase alone fits the synthetic task well above chance (25%)."""
    full = dataclasses.replace(tiny.phases[0], epochs=6, lr=0.1)
    cfg = dataclasses.replace(tiny, phases=(full,), max_steps_per_epoch=8, synthetic_size=600,
                              val_size=128, eval_batches=0)
    run = train(cfg, run_dir=tmp_path / "run", progress=False)
    final = json.loads((run / "final.json").read_text())
    assert final["val_acc_max"] > 60, final


def test_phase_subset_with_init(tiny, tmp_path):
    first = train(tiny, run_dir=tmp_path / "a", phases=["full"], progress=False)
    before = load_tensors(first / "model.safetensors")[0]
    run = train(tiny, run_dir=tmp_path / "b", phases=["kernel", "width1"], init=first,
                progress=False)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in records] == ["kernel", "width1"]
    ck = load_checkpoint(run)
    assert ck.teacher is not None
    # The teacher is the init model (frozen); the student moved on.
    assert state_hash({k: v for k, v in ck.teacher.items() if "running" not in k
                       and "num_batches" not in k}) == state_hash(
        {k: v for k, v in before.items() if "running" not in k and "num_batches" not in k})
    assert state_hash(ck.model) != state_hash(before)
    with pytest.raises(ConfigError, match="not in the config"):
        train(tiny, run_dir=tmp_path / "c", phases=["shrink"], progress=False)


def test_inplace_phase_trains_without_a_frozen_teacher(tiny, tmp_path):
    first = train(tiny, run_dir=tmp_path / "a", phases=["full"], progress=False)
    width2 = dataclasses.replace(tiny.phases[-1], teacher="inplace")
    cfg = dataclasses.replace(tiny, phases=tiny.phases[:-1] + (width2,))
    run = train(cfg, run_dir=tmp_path / "b", phases=["width2"], init=first, progress=False)
    (record,) = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert record["phase"] == "width2" and math.isfinite(record["loss"])
    ck = load_checkpoint(run)
    assert ck.teacher is None
    assert state_hash(ck.model) != state_hash(load_tensors(first / "model.safetensors")[0])


def test_width_phase_sorts_channels(tiny, tmp_path):
    """Sorting at the start of width1 keeps the largest subnet's function unchanged."""
    cfg = dataclasses.replace(tiny, phases=tuple(
        dataclasses.replace(p, lr=0.0) if p.name == "width1" else p for p in tiny.phases
        if p.name in ("full", "width1")))
    a = train(cfg, run_dir=tmp_path / "a", phases=["full"], progress=False)
    b = train(cfg, run_dir=tmp_path / "b", phases=["width1"], init=a, progress=False)
    net_a, net_b = OFAMobileNetV3(cfg.space), OFAMobileNetV3(cfg.space)
    net_a.load_state_dict(load_tensors(a / "model.safetensors")[0])
    sd_b = load_tensors(b / "model.safetensors")[0]
    net_b.load_state_dict(sd_b)
    pl = "blocks.1.conv.point_linear.conv.conv.weight"
    w_b = sd_b[pl].abs().sum(dim=(0, 2, 3))
    assert torch.all(w_b[:-1] >= w_b[1:] - 1e-7), "channels sorted by importance"
    x = torch.randn(4, 1, 20, 20)
    net_a.eval(), net_b.eval()
    net_a.set_max(), net_b.set_max()
    # lr 0 and momentum from zero: only BN running stats moved; compare in train mode (batch stats)
    net_a.train(), net_b.train()
    for m in list(net_a.modules()) + list(net_b.modules()):
        if isinstance(m, torch.nn.Dropout):
            m.eval()
    with torch.no_grad():
        assert torch.allclose(net_a(x), net_b(x), atol=1e-4)


def test_cli_errors(tmp_path, caplog):
    assert main(["--config", str(tmp_path / "missing.toml")]) == ConfigError.exit_code
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\ndata_dir = '{tmp_path / 'nodata'}'\n"
                   "[phases.full]\nepochs = 1\nlr = 0.1\n")
    assert main(["--config", str(cfg), "--run-dir", str(tmp_path / "r")]) == \
        DatasetNotFound.exit_code
    assert "apt-get install dataset-fashion-mnist" in caplog.text
    assert main(["--config", str(CONFIGS / "tiny.toml"), "--device", "tpu"]) == 2


def test_cli_runs_a_phase(tmp_path):
    rc = main(["--config", str(CONFIGS / "tiny.toml"), "--run-dir", str(tmp_path / "r"),
               "--phases", "full", "--threads", "1", "--no-progress"])
    assert rc == 0
    assert json.loads((tmp_path / "r" / "final.json").read_text())["phases"] == ["full"]
    assert torch.get_num_threads() == 1
    np.testing.assert_equal(sorted(p.name for p in (tmp_path / "r").iterdir()),
                            ["checkpoints", "final.json", "log.jsonl", "model.safetensors"])


def test_image_folder_dataset(tiny, tmp_path):
    """``dataset = "imagefolder"`` trains from root/train and reports on root/val."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 4)):
        for c in range(4):
            d = tmp_path / "data" / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 40, (24, 24), dtype=np.uint8) + np.uint8(50 * c)
                Image.fromarray(img).save(d / f"{i}.png")
    full = dataclasses.replace(tiny.phases[0], epochs=1)
    cfg = dataclasses.replace(tiny, dataset="imagefolder", data_dir=str(tmp_path / "data"),
                              phases=(full,), val_size=16)
    run = train(cfg, run_dir=tmp_path / "run", progress=False)
    final = json.loads((run / "final.json").read_text())
    assert "test_acc_max" in final and "val_acc_min" in final
    with pytest.raises(ConfigError, match="data_dir"):
        train(dataclasses.replace(cfg, data_dir=""), run_dir=tmp_path / "r2", progress=False)


def test_init_from_another_space_is_a_clear_error(tiny, tmp_path):
    from ofa_sdk.training.checkpoint import CheckpointError, save_checkpoint

    other = OFAMobileNetV3(FMNIST)
    save_checkpoint(tmp_path, name="x", model=other.state_dict(), teacher=None, optimizer=None,
                    state={}, config_text="")
    with pytest.raises(CheckpointError, match="does not fit"):
        train(tiny, run_dir=tmp_path / "run", init=tmp_path, progress=False)


def test_init_from_a_supernet_file(tiny, tmp_path):
    """``--init`` takes any supernet file, not only a training checkpoint folder."""
    from ofa_sdk.training.checkpoint import load_tensors

    full = dataclasses.replace(tiny.phases[0], epochs=1)
    cfg = dataclasses.replace(tiny, phases=(full,))
    first = train(cfg, run_dir=tmp_path / "a", progress=False)
    weights, _ = load_tensors(first / "model.safetensors")
    second = train(dataclasses.replace(cfg, phases=(dataclasses.replace(full, epochs=0),)),
                   run_dir=tmp_path / "b", init=first / "model.safetensors", progress=False)
    again, _ = load_tensors(second / "model.safetensors")
    assert all(torch.equal(weights[k], again[k]) for k in weights)

"""PS-vs-scratch baseline: `train(fixed_arch=...)` and benchmarks/bench_ps_vs_scratch.py (tiny)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from ofa_sdk.arch import FMNIST, ArchSpec
from ofa_sdk.errors import ArchSpecError
from ofa_sdk.training.checkpoint import CheckpointError, load_tensors
from ofa_sdk.training.schedule import ConfigError
from ofa_sdk.training.train import TrainConfig, scratch_subnet, state_hash, train
from ofa_sdk.zoo import BUNDLED_ZOO, open_zoo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny() -> TrainConfig:
    return TrainConfig.from_file(ROOT / "configs" / "tiny.toml")


def _benchmark(name: str):
    """The script ``benchmarks/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    return _benchmark("bench_ps_vs_scratch")


# ---- the fixed_arch trainer --------------------------------------------------------------------

def test_scratch_subnet_is_initialised_at_its_own_size():
    torch.manual_seed(0)
    net = scratch_subnet(FMNIST, FMNIST.smallest())
    dw = net.blocks[1].conv.depth_conv.conv.weight  # a 3x3 depthwise conv: fan-in 9
    assert dw.shape[-1] == 3
    # PyTorch's default init is uniform(+-1/sqrt(fan_in)); a slice of the supernet's 7x7 init
    # would stay within 1/7.
    assert 1 / 7 < float(dw.detach().abs().max()) <= 1 / 3 + 1e-6
    assert all(not torch.equal(bn.running_var, torch.zeros_like(bn.running_var))
               for bn in net.modules() if isinstance(bn, torch.nn.BatchNorm2d))


def test_fixed_arch_trains_one_static_net(tiny, tmp_path):
    spec = tiny.space.smallest()
    torch.manual_seed(tiny.seed)
    init = state_hash(scratch_subnet(tiny.space, spec).state_dict())
    run = train(tiny, run_dir=tmp_path, fixed_arch=spec, progress=False)
    state, meta = load_tensors(run / "model.safetensors")
    assert meta["format"] == "ofa_mbv3_subnet"
    assert ArchSpec.from_json(json.loads(meta["arch"]), space=tiny.space) == spec
    net = scratch_subnet(tiny.space, spec)
    net.load_state_dict(state)  # strict: exactly the static net's keys and shapes
    assert state_hash(state) != init  # it trained
    assert not any("matrix" in k for k in state)  # no kernel transforms: not a supernet
    final = json.loads((run / "final.json").read_text())
    assert final["fixed_arch"] == str(spec) and final["phases"] == ["full"]
    assert 0 <= final["val_acc"] <= 100
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert len(records) == tiny.phases[0].epochs
    assert all(math.isfinite(r["loss"]) and "val_acc" in r for r in records)


def test_fixed_arch_resume_matches_uninterrupted(tiny, tmp_path):
    spec = tiny.space.largest()
    a = train(tiny, run_dir=tmp_path / "a", fixed_arch=spec, progress=False)
    b = tmp_path / "b"
    train(tiny, run_dir=b, fixed_arch=spec, progress=False, stop_after_steps=4)
    assert not (b / "model.safetensors").exists()
    train(tiny, run_dir=b, fixed_arch=spec, progress=False, resume=True)
    sa, _ = load_tensors(a / "model.safetensors")
    sb, _ = load_tensors(b / "model.safetensors")
    assert state_hash(sa) == state_hash(sb)
    with pytest.raises(CheckpointError, match="fixed_arch"):
        train(tiny, run_dir=b, fixed_arch=tiny.space.smallest(), progress=False, resume=True)


def test_fixed_arch_rejects_bad_options(tiny, tmp_path):
    with pytest.raises(ConfigError, match="full"):
        train(tiny, run_dir=tmp_path, fixed_arch=tiny.space.smallest(), phases=["kernel"],
              progress=False)
    with pytest.raises(ArchSpecError):
        train(tiny, run_dir=tmp_path, fixed_arch=FMNIST.smallest(), progress=False)
    assert not (tmp_path / "model.safetensors").exists()


# ---- the benchmark script ----------------------------------------------------------------------

def test_middle_spec_is_the_median_choice(bench):
    spec = bench.middle_spec(FMNIST)
    assert str(spec) == "k" + "5" * 16 + "-e" + "4" * 16 + "-d3333-r28"
    assert FMNIST.smallest().macs() < spec.macs() < FMNIST.largest().macs()
    with pytest.raises(ConfigError, match="huge"):
        bench.named_specs(FMNIST, ["smallest", "huge"])


def test_bench_end_to_end_and_resumable(bench, tiny, tmp_path, capsys):
    supernet = train(tiny, run_dir=tmp_path / "super", phases=["full", "kernel"], progress=False)
    out, js = tmp_path / "scratch", tmp_path / "r.json"
    argv = ["--config", str(ROOT / "configs" / "tiny.toml"), "--supernet", str(supernet),
            "--out", str(out), "--json", str(js)]
    assert bench.main(argv) == 0
    first = json.loads(js.read_text())
    assert "| smallest |" in capsys.readouterr().out
    rows = {r["name"]: r for r in first["rows"]}
    assert list(rows) == ["smallest", "middle", "largest"]
    assert first["eval_split"] == "val"  # synthetic data has no test split
    # Same recal batches and split as the trainer's final report, so the numbers agree exactly.
    final = json.loads((supernet / "final.json").read_text())
    assert rows["largest"]["ofa_acc"] == pytest.approx(final["val_acc_max"], abs=1e-3)
    assert rows["smallest"]["ofa_acc"] == pytest.approx(final["val_acc_min"], abs=1e-3)
    for r in rows.values():
        scratch_final = json.loads((Path(r["run_dir"]) / "final.json").read_text())
        assert r["scratch_acc"] == pytest.approx(scratch_final["val_acc"], abs=1e-3)
        assert r["gap_pp"] == pytest.approx(r["ofa_acc"] - r["scratch_acc"], abs=1e-3)
        assert r["skipped"] is False
    # A rerun skips the finished scratch runs and reports the same numbers.
    mtime = (Path(rows["middle"]["run_dir"]) / "model.safetensors").stat().st_mtime_ns
    assert bench.main(argv) == 0
    second = json.loads(js.read_text())
    assert all(r["skipped"] for r in second["rows"])
    assert [r["scratch_acc"] for r in second["rows"]] == [r["scratch_acc"] for r in first["rows"]]
    assert (Path(rows["middle"]["run_dir"]) / "model.safetensors").stat().st_mtime_ns == mtime


def test_bench_estimate_and_errors(bench, tmp_path):
    js = tmp_path / "e.json"
    cfg = str(ROOT / "configs" / "tiny.toml")
    assert bench.main(["--config", cfg, "--estimate-steps", "3", "--specs", "smallest,largest",
                       "--json", str(js)]) == 0
    est = json.loads(js.read_text())
    assert set(est["specs"]) == {"smallest", "largest"}
    assert all(s["s_per_step"] > 0 and s["estimated_train_min"] >= 0
               for s in est["specs"].values())
    assert est["supernet_full_s_per_step"] > 0
    assert bench.main(["--config", cfg, "--specs", "nope", "--supernet", str(tmp_path)]) \
        == ConfigError.exit_code
    # An empty folder is not a supernet run: a clear CheckpointError, not a traceback.
    assert bench.main(["--config", cfg, "--supernet", str(tmp_path), "--no-scratch"]) \
        == CheckpointError.exit_code


def test_largest_scratch_can_come_from_the_end_of_the_full_phase(bench, tiny, tmp_path):
    """The full phase trains the largest subnet alone from scratch: its end checkpoint is the
    largest subnet's scratch run (and a later checkpoint is refused)."""
    full = train(tiny, run_dir=tmp_path / "full", phases=["full"], progress=False)
    ck = sorted((full / "checkpoints").glob("step-*"))[-1]
    later = train(tiny, run_dir=tmp_path / "later", phases=["full", "kernel"], progress=False)
    res = bench.compare(tiny, supernet=later, names=["largest"], out=tmp_path / "s",
                        data_dir=None, progress=False, largest_scratch=ck)
    row = res["rows"][0]
    ev = bench._Eval(tiny, None)
    want = ev.accuracy(bench.load_supernet(tiny, full).extract(tiny.space.largest()),
                       tiny.space.largest())
    assert row["scratch_acc"] == pytest.approx(want, abs=1e-3)
    assert row["gap_pp"] == pytest.approx(row["ofa_acc"] - row["scratch_acc"], abs=1e-3)
    assert not (tmp_path / "s").exists()  # nothing trained
    with pytest.raises(CheckpointError, match="not the end of the full phase"):
        bench.compare(tiny, supernet=later, names=["largest"], out=tmp_path / "s",
                      data_dir=None, progress=False, largest_scratch=later)


def test_scratch_runs_can_continue_with_warm_restart_stages(bench, tiny, tmp_path):
    """`--then CONFIG`: a second stage trains on from the first stage's weights (here at lr 0,
    so its parameters must equal stage 1's), in its own folder; epochs and minutes add up."""
    text = (ROOT / "configs" / "tiny.toml").read_text()
    head, rest = text.split("[phases.full]", 1)
    stage2 = TrainConfig.from_toml(head + "[phases.full]\nepochs = 1\nlr = 0.0\n"
                                   "subnets_per_step = 1\n")
    supernet = train(tiny, run_dir=tmp_path / "super", phases=["full"], progress=False)
    res = bench.compare(tiny, supernet=supernet, names=["smallest"], out=tmp_path / "s",
                        data_dir=None, progress=False, then=(stage2,))
    row = res["rows"][0]
    first = tmp_path / "s" / f"smallest-{tiny.space.smallest()}"
    assert row["run_dir"] == str(first.with_name(first.name + "-stage2"))
    assert res["scratch_epochs"] == 2 + 1 and len(res["scratch_stages"]) == 2
    a, _ = load_tensors(first / "model.safetensors")
    b, _ = load_tensors(Path(row["run_dir"]) / "model.safetensors")
    params = {n for n, _ in scratch_subnet(tiny.space, tiny.space.smallest()).named_parameters()}
    assert params and all(torch.equal(a[n], b[n]) for n in params)
    final = json.loads((Path(row["run_dir"]) / "final.json").read_text())
    assert row["scratch_acc"] == pytest.approx(final["val_acc"], abs=1e-3)
    # A config of another space cannot be a stage.
    other = TrainConfig.from_toml(text.replace('name = "tiny_d12_e346_k357"',
                                               'name = "tiny_other"').replace(
                                                   "num_classes = 4", "num_classes = 5"))
    with pytest.raises(ConfigError, match="same space|space"):
        bench.compare(tiny, supernet=supernet, names=["smallest"], out=tmp_path / "s",
                      data_dir=None, progress=False, then=(other,))


def test_data_options_reach_the_warm_restart_stages(bench, tiny, tmp_path):
    """`--val-size` on the command line holds for the `--then` stages too: every stage of a
    scratch run trains on the split the supernet trained on."""
    text = (ROOT / "configs" / "tiny.toml").read_text()
    head, _ = text.split("[phases.full]", 1)
    stage2 = tmp_path / "stage2.toml"
    stage2.write_text(head + "[phases.full]\nepochs = 1\nlr = 0.01\nsubnets_per_step = 1\n")
    supernet = train(dataclasses.replace(tiny, val_size=32), run_dir=tmp_path / "super",
                     phases=["full"], progress=False)
    out = tmp_path / "s"
    assert bench.main(["--config", str(ROOT / "configs" / "tiny.toml"), "--supernet",
                       str(supernet), "--specs", "smallest", "--then", str(stage2),
                       "--val-size", "32", "--out", str(out)]) == 0
    finals = sorted(out.glob("smallest-*/final.json"))
    assert len(finals) == 2
    assert [json.loads(f.read_text())["data"]["sizes"]["val"] for f in finals] == [32, 32]


def test_scratch_seed_trains_another_run_scored_on_the_same_images(bench, tiny, tmp_path):
    """`--scratch-seed N`: a second scratch run of the same spec with another seed, in its own
    folder, on the same train/val split; both seeds are scored on the same batches."""
    supernet = train(tiny, run_dir=tmp_path / "super", phases=["full"], progress=False)
    kw = dict(supernet=supernet, names=["smallest"], out=tmp_path / "s", data_dir=None,
              progress=False)
    zero, one = bench.compare(tiny, **kw), bench.compare(tiny, scratch_seed=1, **kw)
    (r0,), (r1,) = zero["rows"], one["rows"]
    assert (zero["scratch_seed"], one["scratch_seed"]) == (tiny.seed, 1)
    assert Path(r1["run_dir"]).name == Path(r0["run_dir"]).name + "-seed1"
    assert r1["ofa_acc"] == r0["ofa_acc"]  # the same supernet scored on the same images
    a, _ = load_tensors(Path(r0["run_dir"]) / "model.safetensors")
    b, _ = load_tensors(Path(r1["run_dir"]) / "model.safetensors")
    assert state_hash(a) != state_hash(b)
    # Its checkpoint records the seed it trained with, and the config's split
    (ck,) = sorted((Path(r1["run_dir"]) / "checkpoints").glob("step-*"))[-1:]
    state = json.loads((ck / "state.json").read_text())
    assert state["config"]["seed"] == 1 and state["config"]["data"]["split_seed"] == tiny.seed
    assert "--scratch-seed 1: trained with seed = 1" in (ck / "config.toml").read_text()
    # the config's seed again is the first run, found finished
    assert bench.compare(tiny, scratch_seed=tiny.seed, **kw)["rows"][0]["skipped"] is True


def test_subnet_table_spans_the_space_and_matches_final_json(tiny, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_subnet_table", ROOT / "benchmarks" / "bench_subnet_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    named = mod.spanning_specs(FMNIST, 4, 0)
    assert len(named) >= 8 and len({str(s.canonical()) for _, s in named}) == len(named)
    assert dict(named)["smallest"] == FMNIST.smallest()
    assert dict(named)["largest"] == FMNIST.largest()

    run = train(tiny, run_dir=tmp_path / "super", phases=["full", "kernel"], progress=False)
    js = tmp_path / "t.json"
    assert mod.main(["--config", str(ROOT / "configs" / "tiny.toml"), "--supernet", str(run),
                     "--random", "1", "--json", str(js)]) == 0
    rows = {r["name"]: r for r in json.loads(js.read_text())["rows"]}
    final = json.loads((run / "final.json").read_text())
    assert rows["largest"]["acc"] == pytest.approx(final["val_acc_max"], abs=1e-3)
    assert rows["smallest"]["acc"] == pytest.approx(final["val_acc_min"], abs=1e-3)
    assert "| largest |" in capsys.readouterr().out


# ---- benchmarks/bench_hand_scaled.py: the family it trains and how it compares fronts ---------

@pytest.fixture(scope="module")
def hand_scaled():
    return _benchmark("bench_hand_scaled")


def test_hand_scaled_members_scale_every_dimension_uniformly(hand_scaled):
    s, m, l = (hand_scaled.member_spec(FMNIST, c) for c in ("s24", "m28", "l32"))
    assert s == FMNIST.smallest()
    assert l == FMNIST.largest()
    assert set(m.kernel_sizes) == {5} and set(m.expand_ratios) == {4} and set(m.depths) == {3}
    assert m.resolution == 28
    assert hand_scaled.member_spec(FMNIST, "s32").resolution == 32
    for bad in ("x24", "s", "s25", "m 28"):
        with pytest.raises(ConfigError):
            hand_scaled.member_spec(FMNIST, bad)


def test_hand_scaled_fronts_are_compared_where_the_family_reaches(hand_scaled):
    zoo = [(1.0, 90.0), (2.0, 92.0), (3.0, 91.0), (5.0, 93.0), (9.0, 94.0)]
    family = [(1.5, 91.0), (4.0, 92.5), (6.0, 92.0)]
    rows = hand_scaled.compare_fronts(zoo, family)
    # Only latencies from the family's fastest to its slowest member (1.5-6 ms) are compared.
    assert [r["latency_ms"] for r in rows] == [1.5, 2.0, 3.0, 4.0, 5.0, 6.0]
    by = {r["latency_ms"]: r for r in rows}
    assert by[1.5]["zoo_acc"] == 90.0 and by[1.5]["margin_pp"] == -1.0  # the family leads here
    assert by[4.0]["margin_pp"] == -0.5
    assert by[5.0]["margin_pp"] == 0.5 and by[6.0]["margin_pp"] == 0.5
    # A family member faster than every zoo file: the zoo has nothing there, which is a miss.
    rows = hand_scaled.compare_fronts(zoo, [(0.5, 80.0), (1.0, 85.0)])
    assert rows[0]["zoo_acc"] is None and rows[0]["margin_pp"] is None


def test_hand_scaled_times_one_graph_once(hand_scaled):
    """A member and the zoo entry of its architecture are one graph: they take one latency, so
    timing noise cannot put the family's copy ahead of the zoo's on the latency axis."""
    timed = {"family:s24": 0.0761, "zoo:a": 0.0776, "zoo:b": 0.1066, "family:l32": 0.88}
    archs = {"family:s24": "A", "zoo:a": "A", "zoo:b": "B", "family:l32": "L"}
    times = hand_scaled.same_graph_times(timed, archs)
    assert times["family:s24"] == times["zoo:a"] == pytest.approx((0.0761 + 0.0776) / 2)
    assert times["zoo:b"] == 0.1066 and times["family:l32"] == 0.88
    zoo = [(times["zoo:a"], 93.08), (times["zoo:b"], 93.69)]
    family = [(times["family:s24"], 92.97), (times["family:l32"], 93.67)]
    assert all(r["margin_pp"] is not None and r["margin_pp"] > 0
               for r in hand_scaled.compare_fronts(zoo, family))
    # timed apart, the same graph's faster copy decides the first point
    raw = hand_scaled.compare_fronts([(0.0776, 93.08), (0.1066, 93.69)],
                                     [(0.0761, 92.97), (0.88, 93.67)])
    assert raw[0]["zoo_acc"] is None


def test_hand_scaled_refuses_bad_input_with_exit_2(hand_scaled, capsys):
    assert hand_scaled.main(["--family", "q24", "--train-only"]) == 2
    assert "expected a level s, m or l" in capsys.readouterr().err


def _earlier_run(path: Path, **scores: tuple[ArchSpec, float]) -> Path:
    """An earlier run's JSON as bench_hand_scaled writes it, with these family members."""
    path.write_text(json.dumps({"models": [
        {"name": f"family:{code}", "arch": str(spec), "test_acc": acc, "latency_ms": 0.1}
        for code, (spec, acc) in scores.items()]}))
    return path


def test_hand_scaled_reuses_a_score_only_for_the_same_architecture(hand_scaled, tmp_path,
                                                                     capsys):
    s24, l32 = (hand_scaled.member_spec(FMNIST, c) for c in ("s24", "l32"))
    earlier = _earlier_run(tmp_path / "earlier.json", s24=(s24, 92.94), l32=(s24, 93.79))
    assert hand_scaled.reused_scores(earlier, ["s24"], FMNIST) == {"s24": 92.94}
    # every member reused: nothing to train, nothing written
    out = tmp_path / "runs"
    assert hand_scaled.main(["--family", "s24", "--reuse", "s24", "--reuse-from", str(earlier),
                             "--out", str(out), "--train-only"]) == 0
    assert not out.exists()
    for argv, why in [
            (["--family", "s24", "--reuse", "s24"], "--reuse needs --reuse-from"),
            (["--family", "s24", "--reuse", "m24", "--reuse-from", str(earlier)],
             "--reuse m24: not in --family s24"),
            (["--family", "s24,m24", "--reuse", "m24", "--reuse-from", str(earlier)],
             "has no family member 'm24'; it has ['l32', 's24']"),
            (["--family", "l32", "--reuse", "l32", "--reuse-from", str(earlier)],
             f"scored {s24}, not this space's {l32}"),
            (["--family", "s24", "--reuse", "s24", "--reuse-from", str(tmp_path / "no.json")],
             "not a bench_hand_scaled result")]:
        assert hand_scaled.main([*argv, "--out", str(out), "--train-only"]) == 2, why
        assert why in capsys.readouterr().err
    assert not out.exists()


def _few_steps(src: Path, dst: Path) -> Path:
    """The recipe's config with 1 epoch of 3 steps (the same data, space and optimiser)."""
    text = src.read_text().replace("max_steps_per_epoch = 0", "max_steps_per_epoch = 3")
    text = text.replace("\nepochs = 12\n", "\nepochs = 1\n").replace("\nepochs = 10\n",
                                                                      "\nepochs = 1\n")
    assert text.count("\nepochs = 1\n") == 1
    dst.write_text(text)
    return dst


def test_hand_scaled_data_options_hold_for_every_stage(hand_scaled, tmp_path):
    """`--val-size` trains both stages of a member on the same split (the supernet's, when it
    held out more than the configs' 5,000): the warm restart must not see the held-out images."""
    cfg = _few_steps(ROOT / "configs" / "fmnist.toml", tmp_path / "stage1.toml")
    then = _few_steps(ROOT / "configs" / "experiments" / "fmnist_restart_1proc.toml",
                      tmp_path / "stage2.toml")
    out = tmp_path / "runs"
    assert hand_scaled.main(["--config", str(cfg), "--then", str(then), "--family", "s24",
                             "--out", str(out), "--val-size", "10000", "--train-only"]) == 0
    finals = sorted(out.glob("s24-*/final.json"))
    assert [f.parent.name.endswith("-stage2") for f in finals] == [False, True]
    for f in finals:
        assert json.loads(f.read_text())["data"]["sizes"]["train"] == 50000, f


def test_hand_scaled_family_trains_on_the_supernets_split(hand_scaled, tmp_path, capsys):
    """Without `--val-size` the family holds out what `--supernet` records it held out (the
    bundled supernet: 10,000 images), and a finished member trained on another split is refused,
    not reused."""
    cfg = _few_steps(ROOT / "configs" / "fmnist.toml", tmp_path / "stage1.toml")
    then = _few_steps(ROOT / "configs" / "experiments" / "fmnist_restart_1proc.toml",
                      tmp_path / "stage2.toml")
    out = tmp_path / "runs"
    argv = ["--config", str(cfg), "--then", str(then), "--family", "s24", "--out", str(out),
            "--supernet", str(ROOT / "runs" / "fmnist"), "--train-only"]
    assert hand_scaled.main(argv) == 0
    finals = sorted(out.glob("s24-*/final.json"))
    assert len(finals) == 2
    assert all(json.loads(f.read_text())["data"]["sizes"] == {"train": 50000, "val": 10000,
                                                              "test": 10000} for f in finals)
    assert hand_scaled.main([*argv, "--val-size", "5000"]) == 2
    assert "was trained with 10,000 validation images held out, not the 5,000 asked for" \
        in capsys.readouterr().err


CLASS = "x86_64-tflite-fp32-t1"


def test_hand_scaled_end_to_end_against_the_bundled_zoo(hand_scaled, tmp_path, monkeypatch):
    """A member trained for 2 x 3 steps, scored, exported and timed beside the zoo's LiteRT files
    (the class that serves the space's smallest subnet, the member's architecture)."""
    monkeypatch.setenv("OFA_SDK_MEASURE", "min_runs=20,min_time_s=0.02,rounds=1,warmup_s=0.01")
    cfg = _few_steps(ROOT / "configs" / "fmnist.toml", tmp_path / "stage1.toml")
    then = _few_steps(ROOT / "configs" / "experiments" / "fmnist_restart_1proc.toml",
                      tmp_path / "stage2.toml")
    out = tmp_path / "runs"
    args = ["--config", str(cfg), "--then", str(then), "--family", "s24", "--out", str(out),
            "--supernet", str(ROOT / "runs" / "fmnist"), "--device-class",
            CLASS, "--rounds", "1", "--eval-batches", "4",
            "--what-if", str(ROOT / "runs" / "fmnist"),
            "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")]
    # s32 is reused from an earlier run: its score is read, its file exported from a fresh net
    s32 = hand_scaled.member_spec(FMNIST, "s32")
    earlier = _earlier_run(tmp_path / "earlier.json", s32=(s32, 93.16))
    assert hand_scaled.main([*args[:5], "s24,s32", *args[6:], "--reuse", "s32",
                             "--reuse-from", str(earlier)]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    models = {m["name"]: m for m in r["models"]}
    zoo = {k: m for k, m in models.items() if k.startswith("zoo:")}
    bundled = open_zoo(BUNDLED_ZOO)
    served = {e.id for e in bundled.entries if e.file_for(bundled.device_class(CLASS))}
    assert {k[4:] for k in zoo} == served  # every bundled entry of the class, nothing else
    smallest = str(FMNIST.smallest())
    assert smallest in served
    # The zoo's subnets, scored by this protocol on 1,024 test images, are near the index's
    # figure, and the same architecture exported twice runs about equally fast here.
    assert 88 < zoo[f"zoo:{smallest}"]["test_acc"] < 95
    fam = models["family:s24"]
    assert fam["arch"] == smallest
    assert 0.67 < fam["latency_ms"] / zoo[f"zoo:{smallest}"]["latency_ms"] < 1.5
    assert fam["test_acc"] < 85  # 6 steps of training
    assert r["fronts"] and r["members"]["s24"]["run_dir"].endswith("-stage2")
    assert models["family:s32"]["test_acc"] == 93.16
    assert models["family:s32"]["arch"] == str(s32) and models["family:s32"]["latency_ms"] > 0
    assert r["members"]["s32"]["test_acc_from"] == str(earlier)
    assert (out / "export-s32-init" / "model_fp32.tflite").is_file()
    assert not list(out.glob("s32-*"))  # nothing trained for it
    # --what-if with the zoo's own supernet scores every zoo subnet exactly as the zoo column
    assert r["what_if"]["test_acc"] == {k[4:]: m["test_acc"] for k, m in zoo.items()}
    assert r["what_if"]["fronts"] == r["fronts"]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    # A rerun reuses the trained runs and the exported file.
    final = Path(r["members"]["s24"]["run_dir"]) / "final.json"
    exported = out / "export-s24" / "model_fp32.tflite"
    stamps = final.stat().st_mtime_ns, exported.stat().st_mtime_ns
    assert hand_scaled.main(args[:6] + ["--out", str(out), "--supernet",
                                        str(ROOT / "runs" / "fmnist"), "--train-only"]) == 0
    hand_scaled._export(None, FMNIST.smallest(), "tflite", exported.parent, labels=[], mean=[],
                        std=[])
    assert (final.stat().st_mtime_ns, exported.stat().st_mtime_ns) == stamps

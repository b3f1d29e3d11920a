"""Accuracy predictor (ofa_sdk.training.predictors): training, safetensors + JSON, numpy == torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_sdk.arch import FMNIST, IMAGENET_W10
from ofa_sdk.encoding import ArchArrays, encode
from ofa_sdk.errors import ModelLoadError, OfaError
from ofa_sdk.latency import MacsPredictor
from supernet_helpers import import_official_ofa
from ofa_sdk.training.predictors import (
    PREDICTOR_CONFIG,
    PREDICTOR_WEIGHTS,
    AccuracyPredictor,
    TrainConfig,
    _build_mlp,
    kendall_tau,
    load_pairs,
    train_predictor,
)

SMALL = TrainConfig(hidden_size=48, n_layers=3, max_epochs=80, patience=15, batch_size=64,
                    lr=3e-3)


def synthetic_pairs(n: int, seed: int = 0):
    """A smooth, learnable accuracy: rises with log MACs, plus a little noise."""
    rng = np.random.default_rng(seed)
    pop = ArchArrays.random(FMNIST, n, rng)
    macs = MacsPredictor(FMNIST).predict(pop)
    acc = 0.80 + 0.03 * np.log(macs / macs.min()) + rng.normal(0, 0.001, n)
    return pop, acc


def write_pairs(path, pop, acc):
    """A pairs file as `ofa_sdk.training.collect_accuracy` writes it."""
    path.write_text("".join(json.dumps({"arch": s.to_json(), "val_acc": float(a)}) + "\n"
                            for s, a in zip(pop.to_specs(), acc)))
    return path


@pytest.fixture(scope="module")
def trained():
    pop, acc = synthetic_pairs(400)
    return train_predictor(pop, acc, config=SMALL), pop, acc


def test_training_learns_and_reports_metrics(trained):
    pred, _, _ = trained
    m = pred.metrics
    assert m["n_train"] == 320 and m["n_val"] == 80
    assert m["val_kendall_tau"] > 0.7, m
    assert 0 < m["val_rmse_pp"] < 2.0, m
    assert 1 <= m["best_epoch"] <= m["epochs_run"] <= SMALL.max_epochs


def test_numpy_inference_equals_torch(trained):
    import torch

    pred, pop, _ = trained
    net = _build_mlp(pred.num_features, SMALL.hidden_size, SMALL.n_layers)
    tensors = pred.tensors()
    net.load_state_dict({k.removeprefix("layers."): torch.from_numpy(v)
                         for k, v in tensors.items() if k.startswith("layers.")}, strict=True)
    x = encode(pop)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).squeeze(1).numpy() + tensors["base_acc"][0]
    np.testing.assert_allclose(pred.predict(x), ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(pred.predict_arrays(pop), ref, rtol=0, atol=1e-5)


def test_save_load_round_trip(trained, tmp_path):
    pred, pop, _ = trained
    folder = pred.save(tmp_path / "pred")
    assert sorted(p.name for p in folder.iterdir()) == [PREDICTOR_CONFIG, PREDICTOR_WEIGHTS]
    cfg = json.loads((folder / PREDICTOR_CONFIG).read_text())
    assert cfg["space"] == FMNIST.name and cfg["n_layers"] == 3 and cfg["hidden_size"] == 48
    assert cfg["feature_layout"]["num_features"] == pred.num_features
    assert cfg["metrics"]["val_kendall_tau"] == pred.metrics["val_kendall_tau"]
    loaded = AccuracyPredictor.load(folder, space=FMNIST)
    x = encode(pop)
    np.testing.assert_array_equal(loaded.predict(x), pred.predict(x))
    assert loaded.base_acc == pytest.approx(pred.base_acc, abs=1e-7)


def test_load_errors(trained, tmp_path):
    pred, _, _ = trained
    with pytest.raises(ModelLoadError, match="missing"):
        AccuracyPredictor.load(tmp_path / "empty")
    folder = pred.save(tmp_path / "p")
    with pytest.raises(OfaError, match="trained on space"):
        AccuracyPredictor.load(folder, space=IMAGENET_W10)
    (folder / PREDICTOR_WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(ModelLoadError):
        AccuracyPredictor.load(folder)


def test_bad_inputs_raise(trained):
    pred, pop, acc = trained
    with pytest.raises(OfaError, match="features must have shape"):
        pred.predict(np.zeros((2, 7), np.float32))
    with pytest.raises(OfaError, match="fractions"):
        train_predictor(pop, acc * 100, config=SMALL)
    with pytest.raises(OfaError, match="accuracies"):
        train_predictor(pop, acc[:-1], config=SMALL)


def test_kendall_tau_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, 700).astype(float)            # many ties, more than one block
    y = np.round(x + rng.normal(0, 5, 700))               # ties in both
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_load_pairs_skips_a_torn_last_line(tmp_path):
    rng = np.random.default_rng(0)
    specs = [FMNIST.sample(rng) for _ in range(3)]
    lines = [json.dumps({"arch": s.to_json(), "val_acc": [0.8, 0.81, 0.82][i]})
             for i, s in enumerate(specs)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + '\n{"arch": {"spa')
    got, accs = load_pairs(path)
    assert got == specs and accs.tolist() == [0.8, 0.81, 0.82]
    path.write_text('{"bad json\n' + "\n".join(lines) + "\n")
    with pytest.raises(OfaError, match=":1 is not valid JSON"):
        load_pairs(path)


def test_encoding_matches_the_official_arch_encoder():
    import_official_ofa()
    from ofa.nas.accuracy_predictor.arch_encoder import MobileNetArchEncoder

    for space in (FMNIST, IMAGENET_W10):
        enc = MobileNetArchEncoder(image_size_list=list(space.resolutions),
                                   ks_list=list(space.kernel_choices),
                                   expand_list=list(space.expand_choices),
                                   depth_list=list(space.depth_choices),
                                   n_stage=space.num_stages)
        rng = np.random.default_rng(1)
        specs = [space.sample(rng) for _ in range(30)]
        official = np.stack([enc.arch2feature({"ks": list(s.kernel_sizes),
                                               "e": list(s.expand_ratios),
                                               "d": list(s.depths),
                                               "image_size": s.resolution}) for s in specs])
        np.testing.assert_array_equal(encode(specs), official.astype(np.float32))


def test_cli_holds_out_pairs_and_reports_their_test_metrics(tmp_path):
    from ofa_sdk.training.predictors import holdout_split, main

    pop, acc = synthetic_pairs(150, seed=3)
    pairs = write_pairs(tmp_path / "pairs.jsonl", pop, acc)
    assert main(["--pairs", str(pairs), "--out", str(tmp_path / "p"), "--holdout", "50",
                 "--hidden", "32", "--epochs", "40", "--seed", "1"]) == 0
    pred = AccuracyPredictor.load(tmp_path / "p")
    train_idx, hold_idx = holdout_split(150, 50, seed=1)
    assert len(set(train_idx) | set(hold_idx)) == 150 and not set(train_idx) & set(hold_idx)
    assert pred.metrics["n_train"] + pred.metrics["n_val"] == 100
    h = pred.metrics["holdout"]
    p = pred.predict_specs([pop.to_specs()[i] for i in hold_idx]).astype(np.float64)
    assert h["n"] == 50
    assert h["rmse_pp"] == pytest.approx(float(np.sqrt(np.mean((p - acc[hold_idx]) ** 2))) * 100,
                                         rel=1e-4)
    assert h["kendall_tau"] == pytest.approx(kendall_tau(p, acc[hold_idx]))
    assert main(["--pairs", str(pairs), "--out", str(tmp_path / "q"), "--holdout", "145"]) == 2


def test_folded_ensemble_predicts_the_members_mean_and_round_trips(tmp_path):
    from dataclasses import replace

    from ofa_sdk.training.predictors import fold_ensemble, train_ensemble

    pop, acc = synthetic_pairs(200, seed=5)
    cfg = replace(SMALL, n_layers=1, max_epochs=30)
    members = [train_predictor(pop, acc, config=replace(cfg, seed=i)) for i in range(3)]
    assert len({float(m.predict_arrays(pop)[0]) for m in members}) == 3   # really different
    folded = fold_ensemble(members)
    mean = np.mean([m.predict_arrays(pop) for m in members], axis=0)
    np.testing.assert_allclose(folded.predict_arrays(pop), mean, atol=2e-6)
    assert folded.hidden[0][0].shape == (3 * cfg.hidden_size, folded.num_features)

    ens = train_ensemble(pop, acc, members=3, config=cfg)
    np.testing.assert_allclose(ens.predict_arrays(pop), folded.predict_arrays(pop), atol=2e-6)
    assert ens.metrics["members"] == 3 and len(ens.metrics["member_val_rmse_pp"]) == 3
    ens.save(tmp_path / "e")
    back = AccuracyPredictor.load(tmp_path / "e")
    np.testing.assert_array_equal(back.predict_arrays(pop), ens.predict_arrays(pop))

    with pytest.raises(OfaError, match="one-hidden-layer"):
        fold_ensemble([train_predictor(pop, acc, config=replace(SMALL, max_epochs=2))])
    with pytest.raises(OfaError, match="n_layers = 1"):
        train_ensemble(pop, acc, members=2, config=SMALL)


def test_cli_ensemble(tmp_path):
    from ofa_sdk.training.predictors import main

    pop, acc = synthetic_pairs(120, seed=6)
    pairs = write_pairs(tmp_path / "pairs.jsonl", pop, acc)
    assert main(["--pairs", str(pairs), "--out", str(tmp_path / "p"), "--holdout", "20",
                 "--hidden", "16", "--layers", "1", "--ensemble", "4", "--epochs", "20"]) == 0
    pred = AccuracyPredictor.load(tmp_path / "p")
    assert pred.hidden[0][0].shape[0] == 64 and pred.metrics["members"] == 4
    assert pred.metrics["holdout"]["n"] == 20
    assert main(["--pairs", str(pairs), "--out", str(tmp_path / "q"), "--layers", "2",
                 "--ensemble", "3", "--epochs", "5"]) == 2
    assert main(["--pairs", str(pairs), "--out", str(tmp_path / "q"), "--layers", "1",
                 "--ensemble", "0"]) == 2
    assert not (tmp_path / "q").exists()


def test_pair_noise_oracle_ceilings_match_a_simulation():
    """benchmarks/bench_pair_noise.py: what a predictor that knew the true accuracies would
    score against noisy measurements (the figure BENCHMARKS.md compares the predictor with)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pair_noise.py"
    spec = importlib.util.spec_from_file_location("bench_pair_noise", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    true_sd, noise = 0.3, 0.25
    true = rng.normal(0, true_sd, 3000)
    measured = true + rng.normal(0, noise, 3000)
    c = mod.oracle_ceilings(true_sd ** 2 / (true_sd ** 2 + noise ** 2), noise)
    assert c["oracle_rmse_pp"] == noise
    assert c["oracle_kendall_tau"] == pytest.approx(kendall_tau(true, measured), abs=0.03)
    assert mod.oracle_ceilings(1.0, 0.0)["oracle_kendall_tau"] == pytest.approx(1.0)


def test_pair_noise_projects_the_ceiling_to_a_larger_validation_split():
    """Scoring the same subnets on twice the images halves the sampling variance: the projected
    oracle tau for 10,000 images matches a simulation of right/wrong outcomes on 10,000 images,
    given only what the 5,000-image measurement sees."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_pair_noise.py"
    spec = importlib.util.spec_from_file_location("bench_pair_noise", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(1)
    true = 0.93 + rng.normal(0, 0.003, 4000)
    s5, s10 = (rng.binomial(n, true) / n for n in (5000, 10000))
    noise5 = 100 * float(np.sqrt(np.mean(true * (1 - true)) / 5000))
    p = mod.projected(100 * float(np.std(s5, ddof=1)), noise5, 10000)
    assert p["noise_sd_pp"] == pytest.approx(noise5 / np.sqrt(2))
    assert p["oracle_kendall_tau"] == pytest.approx(kendall_tau(true, s10), abs=0.03)
    assert p["oracle_kendall_tau"] > mod.oracle_ceilings(
        1 - noise5 ** 2 / (100 * np.std(s5, ddof=1)) ** 2, noise5)["oracle_kendall_tau"] + 0.05
    assert mod.projected(0.1, 0.3, 10000)["reliability"] == 0.0  # all of it noise
    assert mod.projected(0.5, 0.3, 10000, measured_images=2500)["noise_sd_pp"] == pytest.approx(0.15)
    # a result measured on 10,000 images needs no projection; an old file (noise_sd_pp_5000)
    # is read as measured on 5,000
    new = {"full_score_sd_pp": 0.4, "reliability": 0.7, "noise_sd_pp": 0.2}
    assert "projected_10000" not in mod._derived({**new, "val_images": 10000})
    old = {"full_score_sd_pp": 0.4, "reliability": 0.7, "noise_sd_pp_5000": 0.2}
    assert mod._derived(old) == mod._derived({**new, "val_images": 5000})

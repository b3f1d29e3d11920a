"""Resumable, multi-process collection of [subnet, validation accuracy] pairs."""

from __future__ import annotations

import argparse
import functools
import json

import pytest

from supernet_helpers import TINY
from ofa_sdk.training.collect_accuracy import (
    EvalData,
    collect,
    done_specs,
    evaluate_spec,
    load_supernet,
    sample_specs,
)
from ofa_sdk.training.predictors import load_pairs


def _eval_data() -> EvalData:
    import torch

    from ofa_sdk.training.data import BatchLoader, synthetic_dataset, train_val_split

    train, val = train_val_split(synthetic_dataset(160, num_classes=5, size=24,
                                                   channels=TINY.in_channels, seed=0),
                                 val_size=48, seed=0)
    calib = BatchLoader(train, batch_size=32, seed=0).fixed_batches(2, seed=1)
    val_b = BatchLoader(val, batch_size=48, seed=0, shuffle=False).fixed_batches()
    assert all(x.dtype == torch.uint8 for x, _ in calib)
    return EvalData(calib, val_b, tuple(train.mean), tuple(train.std))


def load_tiny(checkpoint: str):
    """Module level, so spawned workers can unpickle it."""
    return load_supernet(checkpoint, TINY), _eval_data()


@pytest.fixture
def checkpoint(tiny_supernet, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "supernet.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_supernet.state_dict().items()}, str(path))
    return path


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_collect_is_resumable_and_uses_validation_data(checkpoint, tmp_path):
    out = tmp_path / "pairs.jsonl"
    load = functools.partial(load_tiny, str(checkpoint))
    assert collect(load, out, space=TINY, n=3, seed=0) == 3
    first = _lines(out)
    assert len(first) == 3 and all(0.0 <= r["val_acc"] <= 1.0 and r["n_val"] == 48 for r in first)

    # the recorded accuracy is the subnet's BN-recalibrated validation accuracy
    model, data = load()
    spec = sample_specs(TINY, 3, seed=0)[1]
    assert first[1]["val_acc"] == evaluate_spec(model, spec, data)
    assert first[1]["str"] == str(spec)

    # resume: only the new subnets are evaluated; old lines are untouched
    assert collect(load, out, space=TINY, n=5, seed=0) == 2
    assert _lines(out)[:3] == first and len(_lines(out)) == 5
    assert collect(load, out, space=TINY, n=5, seed=0) == 0

    # a torn last line (killed mid-write) is dropped and the run continues cleanly
    with open(out, "a") as f:
        f.write('{"arch": {"spa')
    assert len(done_specs(out, TINY)) == 5
    assert collect(load, out, space=TINY, n=6, seed=0) == 1
    specs, accs = load_pairs(out, space=TINY)
    assert [str(s) for s in specs] == [str(s) for s in sample_specs(TINY, 6, seed=0)]
    assert len(set(map(str, specs))) == 6 and accs.shape == (6,)


def test_pairs_record_their_supernet_and_never_mix_two(checkpoint, tmp_path):
    from ofa_sdk.training.collect_accuracy import CollectError, main
    from ofa_sdk.training.predictors import PredictorError, pairs_supernet

    out = tmp_path / "pairs.jsonl"
    load = functools.partial(load_tiny, str(checkpoint))
    assert collect(load, out, space=TINY, n=2, seed=0, supernet_sha256="a" * 64) == 2
    assert [r["supernet_sha256"] for r in _lines(out)] == ["a" * 64] * 2
    assert pairs_supernet(out, space=TINY) == "a" * 64
    before = out.read_bytes()
    with pytest.raises(CollectError, match="another supernet"):
        collect(load, out, space=TINY, n=3, seed=0, supernet_sha256="b" * 64)
    assert out.read_bytes() == before  # nothing appended
    # The CLI hashes the weights it loads: the same refusal, as a message and exit code 2.
    from ofa_sdk.arch import register_space

    register_space(TINY)
    rc = main(["--checkpoint", str(checkpoint), "--out", str(out), "-n", "3",
               "--space", TINY.name, "--data", "synthetic", "--synthetic-size", "100"])
    assert rc == CollectError.exit_code != 0 and out.read_bytes() == before
    # A file mixing two supernets (e.g. concatenated by hand) cannot train a predictor.
    row = dict(_lines(out)[0], supernet_sha256="c" * 64)
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")
    with pytest.raises(PredictorError, match="mixes pairs of 2 supernets"):
        load_pairs(out, space=TINY)


def test_sample_specs_is_a_stable_prefix():
    a, b = sample_specs(TINY, 4, seed=3), sample_specs(TINY, 9, seed=3)
    assert b[:4] == a and len({str(s) for s in b}) == 9
    assert all(s == s.canonical() for s in b)


def test_missing_checkpoint_raises(tmp_path):
    from ofa_sdk.errors import OfaError

    with pytest.raises(OfaError, match="does not exist"):
        load_supernet(tmp_path / "nope.safetensors", TINY)
    with pytest.raises(OfaError, match="no checkpoint"):
        load_supernet(tmp_path, TINY)


@pytest.mark.slow
def test_workers_give_the_same_results(checkpoint, tmp_path):
    load = functools.partial(load_tiny, str(checkpoint))
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    collect(load, one, space=TINY, n=4, seed=1)
    collect(load, two, space=TINY, n=4, seed=1, workers=2)
    by_spec = lambda p: {r["str"]: r["val_acc"] for r in _lines(p)}  # noqa: E731
    assert by_spec(one) == by_spec(two)


def test_cli_scores_on_the_supernets_own_held_out_split(tiny_supernet, checkpoint, tmp_path,
                                                        caplog):
    """A supernet records the validation split it was trained with. collect_accuracy scores on
    that split by default (not the data's default size), takes a smaller one (a subset of it),
    and refuses a larger one: its extra images are ones the supernet trained on."""
    from safetensors.torch import save_file

    from ofa_sdk.arch import register_space
    from ofa_sdk.training.collect_accuracy import main
    from ofa_sdk.training.datasets import DataSource
    from ofa_sdk.training.weights import read_supernet, supernet_metadata

    register_space(TINY)
    info = DataSource("synthetic", val_size=12, synthetic_size=100).resolve(TINY).info
    path = tmp_path / "recorded.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_supernet.state_dict().items()}, str(path),
              metadata=supernet_metadata(TINY, mean=info.mean, std=info.std, data=info.to_json()))
    assert read_supernet(path).data["sizes"]["val"] == 12
    cli = ["--checkpoint", str(path), "--space", TINY.name, "--data", "synthetic",
           "--synthetic-size", "100", "-n", "1"]
    assert main([*cli, "--out", str(tmp_path / "a.jsonl")]) == 0
    assert _lines(tmp_path / "a.jsonl")[0]["n_val"] == 12  # synthetic's own default is 20
    assert main([*cli, "--out", str(tmp_path / "b.jsonl"), "--val-size", "8"]) == 0
    assert _lines(tmp_path / "b.jsonl")[0]["n_val"] == 8
    caplog.clear()
    assert main([*cli, "--out", str(tmp_path / "c.jsonl"), "--val-size", "20"]) == 2
    assert not (tmp_path / "c.jsonl").exists()
    assert "trained with 12 validation images" in caplog.text
    assert "8 images it trained on" in caplog.text
    # the pairs of a checkpoint that records no data (a bare state dict) keep the data's default
    assert main([*cli[:1], str(checkpoint), *cli[2:], "--out", str(tmp_path / "d.jsonl")]) == 0
    assert _lines(tmp_path / "d.jsonl")[0]["n_val"] == 20


def test_cli_scores_on_the_split_seed_the_supernet_records(tiny_supernet, tmp_path, caplog):
    """A run records the seed that drew its validation images. collect_accuracy takes it by
    default and refuses another: that split's validation images are partly training images."""
    from safetensors.torch import save_file

    from ofa_sdk.arch import register_space
    from ofa_sdk.training.collect_accuracy import main, source_for_checkpoint
    from ofa_sdk.training.datasets import DataSource, add_data_arguments
    from ofa_sdk.training.weights import read_supernet, supernet_metadata

    register_space(TINY)
    info = DataSource("synthetic", val_size=12, synthetic_size=100, split_seed=3
                      ).resolve(TINY).info
    assert info.to_json()["split_seed"] == 3
    path = tmp_path / "seed3.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_supernet.state_dict().items()}, str(path),
              metadata=supernet_metadata(TINY, mean=info.mean, std=info.std, data=info.to_json()))
    recorded = read_supernet(path).data
    parser = add_data_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--data", "synthetic", "--synthetic-size", "100"])
    assert source_for_checkpoint(args, recorded).split_seed == 3
    assert source_for_checkpoint(args, {**recorded, "split_seed": 0}).split_seed == 0
    legacy = {k: v for k, v in recorded.items() if k != "split_seed"}
    assert source_for_checkpoint(args, legacy).split_seed == 0  # runs that record none
    cli = ["--checkpoint", str(path), "--space", TINY.name, "--data", "synthetic",
           "--synthetic-size", "100", "-n", "2"]
    assert main([*cli, "--out", str(tmp_path / "a.jsonl")]) == 0
    assert main([*cli, "--out", str(tmp_path / "b.jsonl"), "--split-seed", "3"]) == 0
    assert [r["val_acc"] for r in _lines(tmp_path / "a.jsonl")] == \
        [r["val_acc"] for r in _lines(tmp_path / "b.jsonl")]
    caplog.clear()
    assert main([*cli, "--out", str(tmp_path / "c.jsonl"), "--split-seed", "0"]) == 2
    assert not (tmp_path / "c.jsonl").exists()
    assert "drawn with --split-seed 3; --split-seed 0 would score" in caplog.text

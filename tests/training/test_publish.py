"""``training/publish.py``: specialize a tiny supernet per device class and write a real zoo.

Everything runs for real: a tiny supernet (random weights), an accuracy predictor trained on
pairs measured from it, a LUT timed by ``device_bench`` on this machine with onnxruntime, real
exports, accuracy through the SDK's loader, and the zoo read back with `open_zoo`. A second device
class reuses that LUT's measured numbers relabelled as an aarch64 TFLite device: it stands for a
LUT sent in by a device owner, and checks that such a class gets latencies marked ``predicted``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ofa_sdk.arch import SearchSpace
from ofa_sdk.errors import InputError
from ofa_sdk.latency import LatencyLUT, LatencyPredictor

ROOT = Path(__file__).resolve().parents[2]

#: Two stages, 1 input channel, 2 kernel and 2 expand choices, 2 resolutions: 40 layers.
SPACE = SearchSpace(
    name="tiny_publish_test",
    stage_widths=(8, 16),
    stage_strides=(2, 1),
    stage_acts=("relu", "h_swish"),
    stage_se=(False, True),
    resolutions=(12, 16),
    kernel_choices=(3, 5),
    expand_choices=(2, 4),
    depth_choices=(1, 2),
    in_channels=1,
    num_classes=4,
    stem_width=8,
    first_block_width=8,
    final_expand_width=16,
    feature_mix_width=24,
)
FORMATS = ("onnx-fp32", "onnx-int8", "tflite-fp32")
HERE = "here-onnx"
OTHER = "aarch64-tflite-fp32-t1"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Supernet file, predictor folder, probes and two LUTs (one measured here)."""
    import torch

    from ofa_sdk.device_bench.lut import BenchSettings, build_lut
    from supernet_helpers import randomize_
    from ofa_sdk.training.checkpoint import save_tensors
    from ofa_sdk.training.collect_accuracy import EvalData, evaluate_spec, sample_specs
    from ofa_sdk.training.data import BatchLoader, synthetic_dataset, train_val_split
    from ofa_sdk.training.predictors import TrainConfig, train_predictor
    from ofa_sdk.training.probes import export_probes
    from ofa_sdk.training.supernet import OFAMobileNetV3

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("publish_inputs")
    torch.manual_seed(0)
    net = OFAMobileNetV3(SPACE)
    randomize_(net, seed=1)
    save_tensors(root / "model.safetensors", net.state_dict(),
                 {"space": json.dumps(SPACE.to_json()), "format": "ofa_mbv3"})

    train, val = train_val_split(synthetic_dataset(160, num_classes=4, size=16, channels=1),
                                 val_size=48)
    data = EvalData(BatchLoader(train, batch_size=32, seed=0).fixed_batches(2, seed=1),
                    BatchLoader(val, batch_size=48, seed=0, shuffle=False).fixed_batches(),
                    tuple(train.mean), tuple(train.std))
    specs = sample_specs(SPACE, 16, seed=0)
    accs = [evaluate_spec(net, s, data) for s in specs]
    train_predictor(specs, accs, config=TrainConfig(hidden_size=32, max_epochs=30,
                                                    patience=10)).save(root / "predictor")

    export_probes(SPACE, root / "probes", formats=("onnx_fp32",), calibration=2)
    fast = BenchSettings(min_runs=5, min_time_s=0.0, warmup_min_time_s=0.0)
    lut = build_lut(root / "probes", root / "here.json", runtime="onnx", settings=fast).lut
    other = lut.to_json()
    other["device"] = {"cpu": "Cortex-A53", "arch": "aarch64", "cores": 4}
    other["runtime"] = {"name": "tflite", "version": "2.3.0"}
    (root / "other.json").write_text(json.dumps(other))
    return root


def _publish(inputs: Path, to: Path, **kw):
    from ofa_sdk.training.publish import PublishSettings, publish

    args = dict(to=to, cache_dir=Path(to).with_name(".zoo.publish-cache"), budgets=3,
                formats=FORMATS, probes=inputs / "probes",
                dataset="synthetic", synthetic_size=200, population=16, generations=5,
                recal_batches=2, num_calib=32, bench_min_runs=5, bench_min_time_s=0.0)
    args.update(kw)
    luts = args.pop("luts", [f"{HERE}={inputs / 'here.json'}", str(inputs / "other.json")])
    progress = args.pop("progress", None)
    settings = PublishSettings(inputs / "model.safetensors", inputs / "predictor", luts, **args)
    return publish(settings, progress=progress)


@pytest.fixture(scope="module")
def zoo_dir(inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("published") / "zoo"
    stages: list[tuple[str, str]] = []
    res = _publish(inputs, folder, progress=lambda s, d: stages.append((s, d)))
    assert res.folder == folder
    return folder, stages


def test_zoo_reads_back_verified_and_every_model_runs(zoo_dir):
    from ofa_sdk.runtime import load_model
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.zoo_tools.index import verify_folder

    folder, _ = zoo_dir
    verify_folder(folder)  # every sha256/size, no unlisted file
    zoo = open_zoo(folder)
    assert set(zoo.device_classes) == {HERE, OTHER}
    assert zoo.device_classes[OTHER].cpu == "aarch64 Cortex-A53"
    assert len(zoo.entries) >= 2
    rng = np.random.default_rng(0)
    for e in zoo.entries:
        assert {(f.format, f.precision) for f in e.files} == {
            ("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32")}
        assert e.macs == e.arch.macs() and e.params == e.arch.params()
        for f in e.files:
            model = load_model(zoo.file_path(f))
            logits = model.predict(model.preprocess(
                rng.integers(0, 255, (3, 16, 16, 1), dtype=np.uint8)))
            assert logits.shape == (3, SPACE.num_classes) and np.isfinite(logits).all()
    assert zoo.lut(HERE) is not None and zoo.lut(OTHER) is not None
    for rel in ("README.md", f"plots/{HERE}.png", f"plots/{OTHER}.png", "specialization.json",
                "probes/manifest.json"):
        assert zoo.index.expected(rel) is not None, rel
    # Probes ship packed: the manifest and one archive per format, never the loose models too.
    shipped = sorted(p for p in zoo.index.checksums if p.startswith("probes/"))
    assert shipped == ["probes/manifest.json", "probes/onnx_fp32.zip"], shipped
    from ofa_sdk.device_bench.lut import BenchSettings, build_lut

    fast = BenchSettings(min_runs=2, min_time_s=0.0, warmup_min_time_s=0.0)
    res = build_lut(folder / "probes", folder.parent / "new-device.json", runtime="onnx",
                    settings=fast, limit=2)        # a new device times the shipped probes
    assert res.measured == 2 and res.remaining > 0
    assert "python" in zoo.index.producer.command


def test_latency_is_measured_here_and_predicted_elsewhere(zoo_dir, inputs):
    from ofa_sdk.zoo import open_zoo

    zoo = open_zoo(zoo_dir[0])
    other = LatencyPredictor.from_lut(inputs / "other.json", SPACE)
    for e in zoo.entries:
        here, there = e.latency_ms[HERE], e.latency_ms[OTHER]
        assert here.kind == "measured" and here.p90 >= here.value > 0
        assert there.kind == "predicted" and there.p90 is None
        assert there.value == pytest.approx(float(other.predict(e.arch)[0]), rel=1e-5)


def test_accuracy_per_file_is_the_sdk_accuracy_on_the_test_set(zoo_dir):
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.training.data import synthetic_dataset
    from ofa_sdk.training.publish import file_accuracy

    zoo = open_zoo(zoo_dir[0])
    test = synthetic_dataset(50, num_classes=4, size=16, channels=1, seed=1)
    f = zoo.entries[0].file(format="onnx", precision="fp32")
    assert f.accuracy == pytest.approx(file_accuracy(zoo.file_path(f), test.images, test.labels),
                                       abs=1e-6)


def test_int8_files_carry_their_top1_agreement_with_fp32(zoo_dir):
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.training.data import synthetic_dataset
    from ofa_sdk.training.publish import file_predictions

    zoo = open_zoo(zoo_dir[0])
    test = synthetic_dataset(50, num_classes=4, size=16, channels=1, seed=1)
    for e in zoo.entries:
        q, f = (e.file(format="onnx", precision=p) for p in ("int8", "fp32"))
        a, b = (file_predictions(zoo.file_path(x), test.images) for x in (q, f))
        assert q.agreement == pytest.approx(float((a == b).mean()), abs=1e-6)
        assert f.agreement is None and e.file(format="tflite", precision="fp32").agreement is None
    card = (Path(zoo_dir[0]) / "README.md").read_text()
    assert "## int8 quantization" in card and f"`{zoo.entries[0].id}` | onnx |" in card



def test_zoo_ships_a_golden_set_and_each_class_isa(zoo_dir, inputs):
    """The golden set holds the first test images and each file's top-1 through the SDK; a
    class measured here records this CPU's ISA, and pick checks its choice against the set."""
    from ofa_sdk.device import detect_device
    from ofa_sdk.golden import golden_images, load_golden
    from ofa_sdk.pick import pick
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.training.data import synthetic_dataset
    from ofa_sdk.training.publish import file_predictions

    zoo = open_zoo(zoo_dir[0])
    golden = load_golden(zoo)
    test = synthetic_dataset(50, num_classes=4, size=16, channels=1, seed=1)
    assert golden is not None and golden.count == 50 and {"golden/manifest.json",
                                                          "golden/inputs.npy"} <= set(
        zoo.index.checksums)
    images = golden_images(zoo, golden)
    assert np.array_equal(images, test.images.transpose(0, 2, 3, 1))
    for e in zoo.entries:
        for f in e.files:
            assert golden.expected(f) == tuple(file_predictions(zoo.file_path(f), test.images))
    here = zoo.device_classes[HERE]
    assert here.isa == detect_device().cpu_features and zoo.device_classes[OTHER].isa is None
    p = pick(1e6, zoo=zoo)
    assert p.agreement == 1.0 and p.golden["count"] == 50 and p.refused == ()


def test_search_ladder_and_dedupe(zoo_dir, inputs):
    from ofa_sdk.training.publish import budget_ladder

    spec = json.loads((zoo_dir[0] / "specialization.json").read_text())
    ids = {e["entry"] for rows in spec["classes"].values() for e in rows}
    from ofa_sdk.zoo import open_zoo

    assert ids == {e.id for e in open_zoo(zoo_dir[0]).entries}  # one entry per distinct subnet
    for rows in spec["classes"].values():
        budgets = [r["budget_ms"] for r in rows]
        assert budgets == sorted(budgets) and len(budgets) == 3
        assert all(r["predicted_latency_ms"] <= r["budget_ms"] for r in rows)
    pred = LatencyPredictor.from_lut(inputs / "here.json", SPACE)
    ladder = budget_ladder(pred, 8)
    assert len(ladder) == 8 and ladder[0] == pytest.approx(pred.min_latency())
    assert ladder[-1] == pytest.approx(float(pred.predict(SPACE.largest())[0]))
    ratios = np.diff(np.log(ladder))
    assert np.allclose(ratios, ratios[0])


def test_interrupted_publish_keeps_the_old_zoo_and_resumes_from_cache(zoo_dir, inputs,
                                                                       tmp_path):
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.zoo_tools.index import verify_folder

    folder = tmp_path / "zoo"
    shutil.copytree(zoo_dir[0], folder)
    cache = zoo_dir[0].with_name(".zoo.publish-cache")
    shutil.copytree(cache, tmp_path / ".zoo.publish-cache")
    before = (folder / "index.json").read_bytes()

    class Stop(Exception):
        pass

    def stop_while_writing(stage: str, detail: str) -> None:
        if stage == "write":
            # everything is exported; the zoo is being laid out in the temp folder
            raise Stop

    with pytest.raises(Stop):
        _publish(inputs, folder, name="second", progress=stop_while_writing)
    assert (folder / "index.json").read_bytes() == before
    verify_folder(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".zoo.publish-cache", "zoo"]

    # a rerun reuses every cached export and measurement: no export or measure stage
    stages: list[str] = []
    _publish(inputs, folder, name="second", progress=lambda s, d: stages.append(s))
    assert "export" not in stages and "measure" not in stages
    assert open_zoo(folder).index.name == "second"
    verify_folder(folder)

    # the same publish again gives a byte-identical folder (time stamp kept), so a Hub upload
    # of it would send nothing
    def snapshot() -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes()
                for p in folder.rglob("*") if p.is_file()}

    first = snapshot()
    _publish(inputs, folder, name="second")
    assert snapshot() == first


def test_no_measure_here_records_predictions_only(zoo_dir, inputs, tmp_path):
    shutil.copytree(zoo_dir[0].with_name(".zoo.publish-cache"), tmp_path / ".zoo.publish-cache")
    res = _publish(inputs, tmp_path / "zoo", measure_here=False)
    here = LatencyPredictor.from_lut(inputs / "here.json", SPACE)
    for e in res.index.entries:
        assert e.latency_ms[HERE].kind == "predicted"
        assert e.latency_ms[HERE].value == pytest.approx(float(here.predict(e.arch)[0]))


def test_a_zoo_set_aside_by_a_killed_swap_is_restored(zoo_dir, inputs, tmp_path):
    """Killed between "old zoo aside" and "new zoo in": the next publish puts the old one back
    before anything else, so the only copy is never deleted."""
    from ofa_sdk.training.zoo_folder import recover

    aside = tmp_path / ".zoo.publish-old"
    shutil.copytree(zoo_dir[0], aside)
    recover(tmp_path / "zoo")
    assert (tmp_path / "zoo" / "index.json").is_file() and not aside.exists()


def test_a_fresh_export_killed_midway_leaves_no_zoo(inputs, tmp_path):
    class Stop(Exception):
        pass

    def stop_after_first_entry(stage: str, detail: str) -> None:
        if stage == "entry":
            raise Stop

    folder = tmp_path / "zoo"
    with pytest.raises(Stop):
        _publish(inputs, folder, formats=("onnx-fp32", "tflite-fp32"),
                 progress=stop_after_first_entry)
    assert not folder.exists()
    assert not any(p.name.startswith(".zoo.publish-tmp") for p in tmp_path.iterdir())


def test_bad_inputs_are_clear_errors(inputs, tmp_path):
    (tmp_path / "notazoo").mkdir()
    (tmp_path / "notazoo" / "thesis.tex").write_text("keep me")
    with pytest.raises(InputError, match="not a zoo folder"):
        _publish(inputs, tmp_path / "notazoo")
    assert (tmp_path / "notazoo" / "thesis.tex").exists()
    with pytest.raises(InputError, match="not in --formats"):
        _publish(inputs, tmp_path / "z", formats=("onnx-fp32",))
    with pytest.raises(InputError, match="unknown formats"):
        _publish(inputs, tmp_path / "z", formats=("onnx-fp16",))
    with pytest.raises(InputError, match="needs --repo-id"):
        _publish(inputs, tmp_path / "z", dry_run=True)
    # A predictor that learned another supernet's accuracies is refused before any work.
    import shutil

    from ofa_sdk.training.predictors import AccuracyPredictor

    foreign = tmp_path / "foreign"
    shutil.copytree(inputs, foreign, ignore=shutil.ignore_patterns("probes"))
    pred = AccuracyPredictor.load(foreign / "predictor")
    pred.metrics["pairs"] = {"n": 16, "supernet_sha256": "0" * 64}
    pred.save(foreign / "predictor")
    with pytest.raises(InputError, match="another supernet"):
        _publish(foreign, tmp_path / "z", probes=inputs / "probes")
    assert not (tmp_path / "z").exists()


def _cli_args(inputs: Path, *extra: str) -> list[str]:
    """The CLI twin of `_publish` (same settings, so it reuses the same cache)."""
    if "--cache-dir" not in extra:
        to = Path(extra[extra.index("--to") + 1])
        extra = (*extra, "--cache-dir", str(to.with_name(".zoo.publish-cache")))
    return ["--supernet", str(inputs), "--predictor", str(inputs / "predictor"),
            "--lut", f"{HERE}={inputs / 'here.json'}", "--lut", str(inputs / "other.json"),
            "--formats", ",".join(FORMATS), "--probes", str(inputs / "probes"),
            "--dataset", "synthetic", "--synthetic-size", "200", "--budgets", "3",
            "--population", "16", "--generations", "5", "--recal-batches", "2",
            "--num-calib", "32", "--bench-min-runs", "5", "--bench-min-time", "0", *extra]


def _env(tmp_path: Path) -> dict[str, str]:
    import os

    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "HOME": str(tmp_path),
            "HF_HOME": str(tmp_path / "hf"), "OFA_SDK_CACHE": str(tmp_path / "ofa")}


def test_a_killed_publish_process_leaves_the_old_zoo(zoo_dir, inputs, tmp_path):
    """SIGKILL while the zoo is being written: the target is the old zoo, and a rerun works."""
    import signal

    from ofa_sdk.zoo_tools.index import verify_folder

    folder = tmp_path / "zoo"
    shutil.copytree(zoo_dir[0], folder)
    shutil.copytree(zoo_dir[0].with_name(".zoo.publish-cache"), tmp_path / ".zoo.publish-cache")
    before = (folder / "index.json").read_bytes()
    proc = subprocess.Popen([sys.executable, "training/publish.py",
                             *_cli_args(inputs, "--to", str(folder), "--name", "killed")],
                            cwd=ROOT, env=_env(tmp_path), stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith("[write]"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    verify_folder(folder)  # never half-written: the old zoo, or (if the kill came late) the new
    after = (folder / "index.json").read_bytes()
    assert after == before or json.loads(after)["name"] == "killed"
    res = _publish(inputs, folder, name="after-kill")
    assert res.index.name == "after-kill"
    assert not (tmp_path / ".zoo.publish-tmp").exists()


@pytest.mark.integration
def test_dry_run_lists_the_files_and_an_unchanged_zoo_uploads_nothing(zoo_dir, inputs,
                                                                      tmp_path):
    from hubserver import HubServer, olah_cli
    from ofa_sdk.zoo_tools.hub import publish_folder
    from ofa_sdk.zoo_tools.index import zoo_files

    if olah_cli() is None:
        pytest.skip("olah-cli is not installed")
    server = HubServer(tmp_path / "hub")
    server.push_folder("acme/published", zoo_dir[0], "first publish")
    server.start("acme/published")
    try:
        folder = tmp_path / "zoo"
        cache = zoo_dir[0].with_name(".zoo.publish-cache")
        out = subprocess.run(
            [sys.executable, "training/publish.py",
             *_cli_args(inputs, "--to", str(folder), "--cache-dir", str(cache),
                        "--repo-id", "acme/new-zoo", "--dry-run", "--tag", "v1",
                        "--endpoint", server.endpoint)],
            capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path), timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        listed = {line.split(": ", 1)[1] for line in out.stdout.splitlines()
                  if line.startswith("would upload: ")}
        assert listed == set(zoo_files(folder))
        assert "dry run, nothing sent" in out.stdout
        assert "[export]" not in out.stderr  # everything came from the cache

        res = publish_folder(zoo_dir[0], "acme/published", dry_run=True,
                             endpoint=server.endpoint)
        assert res.uploaded == () and res.deleted == () and res.dry_run
    finally:
        server.stop()


def test_cli_runs_as_a_script_and_as_a_module(inputs, tmp_path):
    common = ["--supernet", str(inputs), "--predictor", str(inputs / "predictor"),
              "--lut", f"{HERE}={inputs / 'here.json'}", "--formats", "onnx-fp32",
              "--dataset", "synthetic", "--budgets", "2", "--population", "8",
              "--generations", "2", "--recal-batches", "1", "--num-calib", "8",
              "--bench-min-runs", "3", "--bench-min-time", "0", "--json"]
    env = _env(tmp_path)
    a = subprocess.run([sys.executable, "training/publish.py", *common, "--to",
                        str(tmp_path / "a")], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert a.returncode == 0, a.stderr[-2000:]
    summary = json.loads(a.stdout)
    assert summary["device_classes"][HERE]["latency"] == ["measured"]
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["producer"]["command"].startswith("python training/publish.py --supernet")
    b = subprocess.run([sys.executable, "-m", "ofa_sdk.training.publish", *common, "--to",
                        str(tmp_path / "b")], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert b.returncode == 0, b.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-m", "ofa_sdk.training.publish", *common],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert bad.returncode == InputError.exit_code and "--to" in bad.stderr


@pytest.mark.slow
def test_int8_tflite_through_the_tensorflow_venv(inputs, tmp_path):
    from ofa_sdk.runtime import load_model
    from ofa_sdk.zoo import open_zoo
    from ofa_sdk.training.export import tf_python

    try:
        tf_python()
    except Exception as e:  # BackendNotInstalled names the setup script
        pytest.skip(str(e))
    res = _publish(inputs, tmp_path / "zoo", formats=("onnx-fp32", "tflite-int8"),
                   budgets=2, luts=[f"{HERE}={inputs / 'here.json'}"])
    zoo = open_zoo(res.folder)
    for e in zoo.entries:
        f = e.file(format="tflite", precision="int8")
        assert 0 <= f.accuracy <= 1
        model = load_model(zoo.file_path(f))
        assert model.input_dtype == np.int8


def test_shared_rungs_stay_within_budget_and_tolerance(inputs):
    from ofa_sdk.training.predictors import AccuracyPredictor
    from ofa_sdk.training.publish import load_device_class, specialize
    from ofa_sdk.training.search import EvolutionConfig

    acc = AccuracyPredictor.load(inputs / "predictor")
    classes = [load_device_class(f"{HERE}={inputs / 'here.json'}", acc.space),
               load_device_class(str(inputs / "other.json"), acc.space)]
    cfg = EvolutionConfig(population_size=16, generations=5)
    own, _ = specialize(acc, classes, budgets=4, config=cfg)
    for tol in (0.002, 1.0):
        shared, report = specialize(acc, classes, budgets=4, config=cfg, share_tolerance=tol)
        assert len(shared) <= len(own)
        by_id = {c.id: c for c in shared}
        for dc in classes:
            for row in report[dc.id]:
                spec = by_id[row["entry"]].spec
                assert float(dc.predictor.predict([spec])[0]) <= row["budget_ms"]
                best = row.get("searched", {}).get("predicted_accuracy",
                                                   row["predicted_accuracy"])
                assert row["predicted_accuracy"] >= best - tol - 1e-9
    assert len(shared) == 1  # 100 pp: the subnet that fits every rung serves them all
    with pytest.raises(InputError, match="share tolerance"):
        specialize(acc, classes, budgets=2, config=cfg, share_tolerance=-0.1)


def test_entry_formats_classes_ships_only_what_its_classes_run(zoo_dir, inputs):
    from ofa_sdk.zoo import open_zoo

    res = _publish(inputs, zoo_dir[0].parent / "slim", entry_formats="classes",
                   share_tolerance_pp=0.5)
    zoo = open_zoo(res.folder)
    spec = json.loads((res.folder / "specialization.json").read_text())
    for e in zoo.entries:
        served = {d["device_class"] for d in spec["entries"][e.id]["chosen_for"]}
        want = ({("onnx", "fp32"), ("onnx", "int8")} if HERE in served else set()) | (
            {("tflite", "fp32")} if OTHER in served else set())
        assert {(f.format, f.precision) for f in e.files} == want
        assert set(e.latency_ms) == served  # no latency for a class without its file
        for f in e.files:
            assert zoo.file_path(f).is_file()
    with pytest.raises(InputError, match="entry formats"):
        _publish(inputs, zoo_dir[0].parent / "bad", entry_formats="some")


def test_default_zoo_name_has_one_ofa_prefix():
    from ofa_sdk.training.publish import default_zoo_name

    assert default_zoo_name("ofa_mbv3_fmnist_d234_e346_k357") == "ofa-mbv3-fmnist-d234-e346-k357"
    assert default_zoo_name("fmnist") == "ofa-fmnist"


def test_recalibration_images_come_from_the_supernets_own_training_split():
    """Without ``--val-size`` publish recalibrates BN on the images the supernet trained on: the
    held-out size and split seed its weights record. A given ``--val-size`` or ``--split-seed``
    wins, and a record of other data changes nothing."""
    from ofa_sdk.training.datasets import DataSource
    from ofa_sdk.training.entries import load_data

    def train_of(dataset, **kw):
        return load_data(dataset, SPACE, **kw).train

    trained = {"source": "synthetic", "sizes": {"train": 300, "val": 100}, "split_seed": 3}
    own = train_of("synthetic", trained=trained)
    assert len(own) == 300 and len(train_of("synthetic")) == 320  # the default holds out 80
    assert np.array_equal(own.images, train_of(DataSource("synthetic", val_size=100, split_seed=3,
                                                          synthetic_size=400)).images)
    seed5 = train_of("synthetic", trained=trained, split_seed=5)
    assert len(seed5) == 300 and not np.array_equal(seed5.images, own.images)
    given = DataSource("synthetic", val_size=50, synthetic_size=400)
    assert len(train_of(given, trained=trained)) == 350
    other = {**trained, "source": "fmnist"}
    assert len(train_of("synthetic", trained=other)) == 320
    # the cache keeps the two seeds apart
    keys = {load_data("synthetic", SPACE, trained=trained, split_seed=s).key() for s in (3, 5)}
    assert len(keys) == 2

"""ofa_sdk.runtime against real onnxruntime / LiteRT interpreters and the torch nets behind them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from ofa_sdk.errors import BackendNotInstalled, InputError, ModelLoadError, OfaError
from ofa_sdk.metadata import ModelMetadata, sidecar_path
from ofa_sdk.runtime import Model, dequantize, load_model, quantize

# The tiny models of conftest.py (test_model_properties checks these against their metadata).
SIZE = 16
LABELS = ("zero", "one", "two", "three", "four", "five")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _nchw(rng, n=3, c=3):
    return rng.standard_normal((n, c, SIZE, SIZE)).astype(np.float32)


def _copy_model(model, tmp_path, name=None, *, md=None):
    dst = tmp_path / (name or model.path.name)
    dst.write_bytes(model.path.read_bytes())
    (md or model.metadata).save(dst)
    return dst


# -- parity -------------------------------------------------------------------------------------


def test_onnx_predict_matches_torch(onnx_model):
    m = load_model(onnx_model.path, num_threads=1)
    x = _nchw(np.random.default_rng(0), n=4)
    got = m.predict(x)
    assert got.dtype == np.float32 and got.shape == (4, len(LABELS))
    np.testing.assert_allclose(got, onnx_model.torch_logits(x), atol=1e-4, rtol=0)


def test_tflite_predict_matches_torch(tflite_model):
    m = load_model(tflite_model.path, num_threads=1)
    assert m.input_shape == (1, SIZE, SIZE, 3)  # fixed batch of 1: predict runs samples in turn
    x = _nchw(np.random.default_rng(1), n=3)
    got = m.predict(x.transpose(0, 2, 3, 1))
    assert got.dtype == np.float32 and got.shape == (3, len(LABELS))
    np.testing.assert_allclose(got, tflite_model.torch_logits(x), atol=1e-4, rtol=0)


def test_fixed_batch_onnx_runs_batches_sample_by_sample(gray_onnx_model):
    m = load_model(gray_onnx_model.path, num_threads=1)
    assert m.input_shape == (1, 1, SIZE, SIZE)
    x = _nchw(np.random.default_rng(2), n=3, c=1)
    np.testing.assert_allclose(m.predict(x), gray_onnx_model.torch_logits(x), atol=1e-4)


def test_backends_agree_on_a_png(onnx_model, tflite_model, rgb_png):
    a = load_model(onnx_model.path, num_threads=1)
    b = load_model(tflite_model.path, num_threads=1)
    xa, xb = a.preprocess(rgb_png), b.preprocess(rgb_png)
    np.testing.assert_allclose(xa.transpose(0, 2, 3, 1), xb)
    np.testing.assert_allclose(a.predict(xa), b.predict(xb), atol=1e-4)
    ra, rb = a.classify(rgb_png, top_k=3), b.classify(rgb_png, top_k=3)
    assert [lab for lab, _ in ra[0]] == [lab for lab, _ in rb[0]]


def test_model_properties(onnx_model, tflite_model):
    m = load_model(onnx_model.path, num_threads=2)
    assert isinstance(m, Model) and m.runtime == "onnx"
    assert m.metadata == onnx_model.metadata
    md = m.metadata
    assert (md.input_size, md.labels, md.mean, md.std) == (SIZE, LABELS, MEAN, STD)
    assert m.input_shape == (None, 3, SIZE, SIZE) and m.input_dtype == np.float32
    assert m.num_threads == 2 and m.init_ms > 0 and m.num_classes == len(LABELS)
    assert m.runtime_version().startswith("onnxruntime")
    t = load_model(tflite_model.path)
    assert t.runtime == "tflite" and t.num_threads is None
    assert t.runtime_version().startswith(("ai-edge-litert", "tflite-runtime"))
    r = t.random_input(batch=1)
    assert r.shape == (1, SIZE, SIZE, 3) and r.dtype == np.float32
    assert t.invoke(r).shape == (1, len(LABELS))


def test_runtime_can_be_forced_for_an_odd_suffix(onnx_model, tmp_path):
    md = onnx_model.metadata
    dst = tmp_path / "model.bin"
    dst.write_bytes(onnx_model.path.read_bytes())
    md.save(dst)
    with pytest.raises(ModelLoadError, match="suffix"):
        load_model(dst)
    assert load_model(dst, runtime="onnx").runtime == "onnx"
    with pytest.raises(ModelLoadError, match="unknown runtime"):
        load_model(dst, runtime="tensorrt")


# -- classify -----------------------------------------------------------------------------------


def test_classify_top_k(onnx_model, rgb_png):
    m = load_model(onnx_model.path, num_threads=1)
    [top3] = m.classify(rgb_png, top_k=3)
    assert len(top3) == 3
    assert all(lab in LABELS for lab, _ in top3)
    probs = [p for _, p in top3]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) < 1
    [every] = m.classify(rgb_png, top_k=100)  # more than there are classes: all of them
    assert sorted(lab for lab, _ in every) == sorted(LABELS)
    assert sum(p for _, p in every) == pytest.approx(1.0, abs=1e-9)
    assert every[:3] == top3
    logits = m.predict(m.preprocess(rgb_png))[0]
    assert every[0][0] == LABELS[int(np.argmax(logits))]


def test_classify_a_list_gives_one_result_per_image(onnx_model, rgb_png):
    m = load_model(onnx_model.path, num_threads=1)
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    res = m.classify([rgb_png, arr, str(rgb_png)], top_k=2)
    assert len(res) == 3 and all(len(r) == 2 for r in res)
    assert res[0] == res[2]


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True])
def test_classify_rejects_bad_top_k(onnx_model, rgb_png, top_k):
    m = load_model(onnx_model.path, num_threads=1)
    with pytest.raises(InputError, match="top_k"):
        m.classify(rgb_png, top_k=top_k)


# -- preprocessing ------------------------------------------------------------------------------


def _expected_rgb(path, layout):
    from PIL import Image

    im = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    x = (np.asarray(im, dtype=np.float32) / 255 - np.float32(MEAN)) / np.float32(STD)
    x = x[None]
    return x.transpose(0, 3, 1, 2) if layout == "NCHW" else x


def test_preprocess_png_file(onnx_model, tflite_model, rgb_png):
    for tiny, layout in ((onnx_model, "NCHW"), (tflite_model, "NHWC")):
        m = load_model(tiny.path, num_threads=1)
        x = m.preprocess(rgb_png)
        assert x.dtype == np.float32
        np.testing.assert_allclose(x, _expected_rgb(rgb_png, layout), atol=1e-6)


def test_preprocess_path_pil_and_uint8_array_agree(onnx_model, rgb_png):
    from PIL import Image

    m = load_model(onnx_model.path, num_threads=1)
    from_path = m.preprocess(rgb_png)
    im = Image.open(rgb_png)
    np.testing.assert_array_equal(m.preprocess(im), from_path)
    arr = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(m.preprocess(arr), from_path)
    np.testing.assert_array_equal(m.preprocess(np.stack([arr, arr]))[1], from_path[0])
    # Float pixels in [0, 1] resize without 8-bit rounding: equal within a grey level.
    from_float = m.preprocess(arr.astype(np.float32) / 255)
    assert np.abs(from_float - from_path).max() <= 1.01 / 255 / min(STD)
    # RGBA drops alpha.
    rgba = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(m.preprocess(rgba), from_path)


def test_preprocess_converts_channels(gray_onnx_model, onnx_model, rgb_png):
    from PIL import Image

    g = load_model(gray_onnx_model.path, num_threads=1)
    x = g.preprocess(rgb_png)
    assert x.shape == (1, 1, SIZE, SIZE)
    im = Image.open(rgb_png).convert("L").resize((SIZE, SIZE), Image.BILINEAR)
    np.testing.assert_allclose(x[0, 0], (np.asarray(im, np.float32) / 255 - 0.5) / 0.25, atol=1e-6)
    gray = np.asarray(Image.open(rgb_png).convert("L"))
    np.testing.assert_array_equal(g.preprocess(gray), g.preprocess(gray[..., None]))
    # A gray image into the RGB model: three equal planes.
    c = load_model(onnx_model.path, num_threads=1).preprocess(gray)
    planes = c[0] * np.float32(STD)[:, None, None] + np.float32(MEAN)[:, None, None]
    np.testing.assert_allclose(planes[0], planes[1], atol=1e-6)
    np.testing.assert_allclose(planes[0], planes[2], atol=1e-6)


def test_preprocess_keeps_model_size_images_unresized(onnx_model):
    m = load_model(onnx_model.path, num_threads=1)
    arr = np.random.default_rng(4).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    x = m.preprocess(arr)[0].transpose(1, 2, 0)
    np.testing.assert_allclose(x * np.float32(STD) + np.float32(MEAN), arr / 255, atol=1e-6)


# -- int8 ---------------------------------------------------------------------------------------


def test_quantize_dequantize_round_trip():
    rng = np.random.default_rng(5)
    x = rng.uniform(-0.95, 0.95, 1000).astype(np.float32)  # inside the int8 range
    scale, zp = 2 / 255, -3
    q = quantize(x, scale, zp, np.dtype(np.int8))
    assert q.dtype == np.int8
    assert np.abs(dequantize(q, scale, zp) - x).max() <= scale / 2 + 1e-6
    sat = quantize(np.array([-100.0, 100.0]), scale, zp, np.dtype(np.int8))
    assert sat.tolist() == [-128, 127]
    u = quantize(np.array([0.0, 1.0]), 1 / 255, 0, np.dtype(np.uint8))
    assert u.tolist() == [0, 255] and u.dtype == np.uint8


def _top1(model, image):
    return model.classify(image, top_k=1)[0][0][0]


def _assert_close_to_quantization_error(fp32, int8):
    """int8 logits follow the fp32 ones (quantization error, not garbage, and not fp32 itself)."""
    assert not np.array_equal(fp32, int8)
    assert np.corrcoef(fp32.ravel(), int8.ravel())[0, 1] > 0.95
    assert np.abs(fp32 - int8).max() < 0.25 * (fp32.max() - fp32.min())


def test_int8_onnx_model_tracks_fp32(onnx_model, int8_onnx_model, rgb_png):
    fp = load_model(onnx_model.path, num_threads=1)
    q = load_model(int8_onnx_model.path, num_threads=1)
    assert q.metadata.precision == "int8"
    x = _nchw(np.random.default_rng(6), n=8)
    a, b = fp.predict(x), q.predict(x)
    assert b.dtype == np.float32
    _assert_close_to_quantization_error(a, b)
    assert _top1(q, rgb_png) in {lab for lab, _ in fp.classify(rgb_png, top_k=2)[0]}


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    np.zeros((1, SIZE, SIZE, 3), np.float32),    # NHWC into an NCHW model
    np.zeros((3, SIZE, SIZE), np.float32),       # no batch axis
    np.zeros((1, 3, SIZE, SIZE + 1), np.float32),
    np.zeros((0, 3, SIZE, SIZE), np.float32),
])
def test_predict_rejects_wrong_shape(onnx_model, bad):
    m = load_model(onnx_model.path, num_threads=1)
    with pytest.raises(InputError, match=r"expected input of shape \(N, 3, 16, 16\), got") as e:
        m.predict(bad)
    assert str(tuple(bad.shape)) in str(e.value)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_predict_rejects_wrong_dtype(tflite_model, dtype):
    m = load_model(tflite_model.path, num_threads=1)
    with pytest.raises(InputError, match=f"expected input dtype float32, got {np.dtype(dtype)}"):
        m.predict(np.zeros((1, SIZE, SIZE, 3), dtype))


def test_predict_accepts_float64(onnx_model):
    m = load_model(onnx_model.path, num_threads=1)
    x = _nchw(np.random.default_rng(7), n=1)
    np.testing.assert_allclose(m.predict(x.astype(np.float64)), m.predict(x))


def test_predict_rejects_non_arrays(onnx_model, rgb_png):
    m = load_model(onnx_model.path, num_threads=1)
    with pytest.raises(InputError, match="numpy array"):
        m.predict([[0.0]])
    with pytest.raises(InputError, match="numpy array"):
        m.predict(str(rgb_png))


def test_unreadable_images(onnx_model, tmp_path):
    m = load_model(onnx_model.path, num_threads=1)
    not_png = tmp_path / "fake.png"
    not_png.write_text("this is not an image")
    with pytest.raises(InputError, match="cannot read image"):
        m.classify(not_png)
    with pytest.raises(InputError, match="no such image"):
        m.classify(tmp_path / "missing.png")
    truncated = tmp_path / "cut.png"
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 9).save(tmp_path / "ok.png")
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(InputError, match="cannot read image"):
        m.preprocess(truncated)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((5, 5, 2), np.uint8), "got shape"),
    (np.zeros((2, 8, 8), np.uint8), "add a channel axis"),
    (np.zeros((8, 8, 3), np.int32), "uint8"),
    (np.zeros((1, 2, 3, 4, 5), np.uint8), "got shape"),
    (12, "got int"),
    ([], "no images"),
    ([np.zeros((8, 8), np.uint8), 3.0], "image 1"),
])
def test_preprocess_rejects_bad_images(onnx_model, bad, match):
    m = load_model(onnx_model.path, num_threads=1)
    with pytest.raises(InputError, match=match):
        m.preprocess(bad)


@pytest.mark.parametrize("which", ["onnx_model", "tflite_model"])
def test_corrupt_and_truncated_models(which, request, tmp_path):
    tiny = request.getfixturevalue(which)
    data = tiny.path.read_bytes()
    for name, blob in (("garbage", np.random.default_rng(8).bytes(2000)),
                       ("truncated", data[: len(data) // 2]),
                       ("empty", b"")):
        dst = tmp_path / f"{name}{tiny.path.suffix}"
        dst.write_bytes(blob)
        tiny.metadata.save(dst)
        with pytest.raises(ModelLoadError, match="cannot load"):
            load_model(dst)


def test_missing_model_and_sidecar(onnx_model, tmp_path):
    with pytest.raises(ModelLoadError, match="no model file"):
        load_model(tmp_path / "nope.onnx")
    dst = tmp_path / "bare.onnx"
    dst.write_bytes(onnx_model.path.read_bytes())
    with pytest.raises(ModelLoadError, match="sidecar"):
        load_model(dst)
    sidecar_path(dst).write_text("{not json")
    with pytest.raises(ModelLoadError, match="metadata"):
        load_model(dst)


@pytest.mark.parametrize("change, match", [
    ({"input_size": 32}, "does not match its metadata"),
    ({"layout": "NHWC"}, "does not match its metadata"),
    ({"channels": 1, "mean": [0.5], "std": [0.5]}, "does not match its metadata"),
    ({"labels": ["a", "b"]}, "6 outputs but its metadata lists 2 labels"),
    ({"format": "tflite"}, "format 'tflite'"),
])
def test_metadata_must_match_the_model(onnx_model, tmp_path, change, match):
    data = {**onnx_model.metadata.to_json(), **change}
    dst = _copy_model(onnx_model, tmp_path, md=ModelMetadata.from_json(data))
    with pytest.raises(ModelLoadError, match=match):
        load_model(dst)


@pytest.mark.parametrize("blocked, which, extra", [
    (("onnxruntime",), "onnx_model", "ofa-sdk[onnx]"),
    (("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime"), "tflite_model",
     "ofa-sdk[tflite]"),
])
def test_missing_backend_names_the_extra(blocked, which, extra, request, monkeypatch):
    tiny = request.getfixturevalue(which)
    for name in blocked:  # None in sys.modules makes `import name` raise ImportError
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendNotInstalled) as e:
        load_model(tiny.path)
    assert f'pip install "{extra}"' in str(e.value)
    assert isinstance(e.value, ImportError) and isinstance(e.value, OfaError)


@pytest.mark.parametrize("threads", [0, -2, 1.5, "2"])
def test_bad_num_threads(onnx_model, threads):
    with pytest.raises(InputError, match="num_threads"):
        load_model(onnx_model.path, num_threads=threads)


def test_errors_are_ofa_errors_with_exit_codes(onnx_model, tmp_path):
    with pytest.raises(OfaError) as e:
        load_model(tmp_path / "x.onnx")
    assert isinstance(e.value, ValueError) and e.value.exit_code == 2
    json.dumps(onnx_model.metadata.to_json())  # the sidecar stays plain JSON


def test_int8_tflite_quantizes_input_and_dequantizes_output(tflite_model, int8_tflite_model,
                                                             rgb_png):
    fp = load_model(tflite_model.path, num_threads=1)
    q = load_model(int8_tflite_model.path, num_threads=1)
    assert q.input_dtype == np.int8 and q.input_info.quantized and q.output_info.quantized
    x = np.random.default_rng(9).standard_normal((4, SIZE, SIZE, 3)).astype(np.float32)
    a, b = fp.predict(x), q.predict(x)
    assert b.dtype == np.float32 and b.shape == a.shape
    _assert_close_to_quantization_error(a, b)
    # Quantizing by hand and passing int8 gives the same logits as passing floats.
    info = q.input_info
    native = quantize(x, info.scale, info.zero_point, info.dtype)
    np.testing.assert_array_equal(q.predict(native), b)
    raw = q.invoke(native[:1])
    assert raw.dtype == np.int8
    np.testing.assert_array_equal(
        dequantize(raw, q.output_info.scale, q.output_info.zero_point), b[:1])
    assert _top1(q, rgb_png) in {lab for lab, _ in fp.classify(rgb_png, top_k=2)[0]}
    with pytest.raises(InputError, match="expected input dtype int8 or float32, got uint8"):
        q.predict(np.zeros((1, SIZE, SIZE, 3), np.uint8))

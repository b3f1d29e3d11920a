"""Image preprocessing driven by model metadata, and int8 (de)quantization of tensors.

The resize is Pillow's BILINEAR, the filter training uses (``training/data.py`` resizes decoded
images with Pillow BILINEAR and batches with antialiased bilinear interpolation, which matches it),
so a model sees on the device the pixels it saw in training.
Pillow is imported only when an image is decoded or resized.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from ofa_sdk.errors import InputError
from ofa_sdk.metadata import ModelMetadata

__all__ = ["preprocess_images", "crop_box", "quantize", "dequantize", "softmax"]

# ITU-R 601-2 luma, the weights Pillow's convert("L") uses, so float and uint8 inputs agree.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _is_image_like(obj: Any) -> bool:
    if isinstance(obj, (str, os.PathLike, np.ndarray)):
        return True
    return type(obj).__module__.startswith("PIL.")


def _split(images: Any) -> list[Any]:
    """One image, a list of images, or an N x H x W x C array -> list of single images."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        return [images]
    if isinstance(images, (list, tuple)):
        if not images:
            raise InputError("no images given")
        for i, im in enumerate(images):
            if not _is_image_like(im):
                raise InputError(f"image {i}: expected a path, PIL image or numpy array, "
                                 f"got {type(im).__name__}")
        return list(images)
    if _is_image_like(images):
        return [images]
    raise InputError("expected an image path, PIL image or numpy array, "
                     f"got {type(images).__name__}")


def _open(path: str | os.PathLike) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise InputError(f"no such image file: {os.fspath(path)}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"cannot read image {os.fspath(path)}: {e}") from None


def crop_box(w: int, h: int, size: int, crop: float | None) -> tuple[tuple[int, int], Any]:
    """The resize target and centre-crop box of a ``w`` x ``h`` image for a ``size`` input.

    ``crop`` is the sidecar's crop fraction: the shorter side goes to ``size / crop`` and the
    centre ``size`` x ``size`` is kept (training decodes image folders with this same function,
    ``ofa_sdk.training.data.decode_image``); ``None`` stretches to ``size`` x ``size`` (no box).
    """
    if crop is None:
        return (size, size), None
    scale = size / crop / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (rw - size) // 2, (rh - size) // 2
    return (rw, rh), (left, top, left + size, top + size)


def _pil_to_array(im: Any, channels: int, size: int, crop: float | None = None) -> np.ndarray:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    if im.mode != mode:
        # 16-bit and float grayscale modes do not convert to RGB directly; go through 8 bits.
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F") and mode == "RGB":
            im = im.convert("L")
        im = im.convert(mode)
    target, box = crop_box(*im.size, size, crop)
    if im.size != target:
        im = im.resize(target, Image.BILINEAR)
    if box is not None and im.size != (size, size):
        im = im.crop(box)
    return np.asarray(im).reshape(size, size, channels)  # uint8; scaled in preprocess_images


def _float_array_to_array(arr: np.ndarray, channels: int, size: int,
                          crop: float | None = None) -> np.ndarray:
    from PIL import Image

    arr = arr.astype(np.float32, copy=False)
    c = arr.shape[2]
    if c == 4:
        arr, c = arr[..., :3], 3
    if c == 3 and channels == 1:
        arr = (arr @ _LUMA)[..., None]
    elif c == 1 and channels == 3:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[:2] != (size, size):
        target, box = crop_box(arr.shape[1], arr.shape[0], size, crop)
        planes = []
        for i in range(channels):
            plane = Image.fromarray(np.ascontiguousarray(arr[..., i]), mode="F").resize(
                target, Image.BILINEAR)
            planes.append(np.asarray(plane.crop(box) if box is not None else plane))
        arr = np.stack(planes, axis=-1)
    return arr


def _one_image(image: Any, channels: int, size: int, index: int, crop: float | None = None
               ) -> np.ndarray:
    """A single image -> H x W x C at the model's size: uint8 (0-255) or float32 (0-1)."""
    if isinstance(image, (str, os.PathLike)):
        return _pil_to_array(_open(image), channels, size, crop)
    if not isinstance(image, np.ndarray):
        return _pil_to_array(image, channels, size, crop)
    arr = image
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or 0 in arr.shape:
        raise InputError(
            f"image {index}: expected an array H x W, H x W x C (C in 1, 3, 4) or N x H x W x C, "
            f"got shape {tuple(image.shape)}; for a batch of grayscale images add a channel axis "
            f"(images[..., None])")
    if arr.dtype == np.uint8:
        from PIL import Image

        mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
        plane = arr[..., 0] if mode == "L" else arr
        im = Image.fromarray(np.ascontiguousarray(plane), mode=mode)
        return _pil_to_array(im, channels, size, crop)
    if np.issubdtype(arr.dtype, np.floating):
        return _float_array_to_array(arr, channels, size, crop)
    raise InputError(f"image {index}: expected uint8 (0-255) or float (0-1) pixels, "
                     f"got {arr.dtype}")


def preprocess_images(images: Any, metadata: ModelMetadata) -> np.ndarray:
    """Decode, convert, resize and normalise images into a float32 batch for the model.

    ``images`` is a path, a PIL image, a numpy array (H x W, H x W x C or N x H x W x C; uint8 in
    0-255 or float in 0-1), or a list of these. Each image is converted to the model's channel
    count (L or RGB), resized to ``input_size`` with Pillow BILINEAR (shorter side, then a centre
    crop, when the metadata's ``resize`` says so; else stretched), scaled to [0, 1], normalised
    with the metadata mean/std and laid out as NHWC or NCHW.
    """
    size, channels = metadata.input_size, metadata.channels
    crop = metadata.resize["crop_fraction"] if metadata.resize else None
    items = [_one_image(im, channels, size, i, crop) for i, im in enumerate(_split(images))]
    mean = np.asarray(metadata.mean, dtype=np.float64)
    std = np.asarray(metadata.std, dtype=np.float64)
    # (x / range - mean) / std as one multiply-add per pixel, written straight into the layout.
    shift = (-mean / std).astype(np.float32)
    gain = {np.dtype(np.uint8): (1.0 / (255.0 * std)).astype(np.float32),
            np.dtype(np.float32): (1.0 / std).astype(np.float32)}
    nchw = metadata.layout == "NCHW"
    shape = (channels, size, size) if nchw else (size, size, channels)
    out = np.empty((len(items), *shape), dtype=np.float32)
    for i, img in enumerate(items):
        dst = out[i].transpose(1, 2, 0) if nchw else out[i]  # an H x W x C view of the output
        np.multiply(img, gain[img.dtype], out=dst)
        dst += shift
    return out


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float -> integer with the affine map q = round(x / scale) + zero_point, saturating."""
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float32 with x = (q - zero_point) * scale."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def top_k_labels(probs: np.ndarray, labels: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
    """Per row, the ``k`` most probable (label, prob) pairs, highest first."""
    k = min(k, probs.shape[-1])
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[(labels[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]

#!/usr/bin/env python3
"""Writes reference cases for the pre-processing and inference of the original Python service.

It draws a fixed set of test images (no downloads), runs each through the original pipeline
(Pillow: open, EXIF transpose, RGB, bicubic resize to 224x224, scale to [0,1], ImageNet mean/std,
HWC -> NCHW; then onnxruntime on one CPU thread) and writes, under --out:

  images/<name>.<png|jpg>   the input file
  tensors/<name>.f32        the model input: 1*3*224*224 little-endian float32, NCHW
  scores/<name>.f32         the model output: 1000 little-endian float32 raw scores
  cases.json                [{"name", "image", "format", "tensor", "scores", "top5", "top5_probs"}]

Paths in cases.json are relative to --out. The same model and package versions give the same files.

Usage: reference.py --model MODEL.onnx --out DIR
Needs: pip install pillow numpy onnxruntime (or run scripts/setup-tools.sh)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

try:
    import numpy as np
    import onnxruntime as ort
    from PIL import Image, ImageDraw, ImageOps
except ImportError as exc:  # pragma: no cover - message for a bare machine
    sys.exit(f"error: {exc}. Install: pip install pillow numpy onnxruntime "
             "(or run scripts/setup-tools.sh)")

# The model contract of the original service.
INPUT_SIZE = (224, 224)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
NUM_CLASSES = 1000
TOP_K = 5
JPEG_QUALITY = 90
EXIF_ORIENTATION = 0x0112


def preprocess(path: Path) -> np.ndarray:
    """The original service's pre-processing: file -> [1, 3, 224, 224] float32."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        img = img.resize(INPUT_SIZE, Image.BICUBIC)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    x = x.transpose(2, 0, 1)[np.newaxis]
    return np.ascontiguousarray(x, dtype=np.float32)


def softmax(scores: np.ndarray) -> np.ndarray:
    s = scores.astype(np.float64)
    e = np.exp(s - s.max())
    return e / e.sum()


# --- test images: each returns a PIL image; all are deterministic -----------------------------


def gradient() -> Image.Image:
    """640x480: red rises left to right, green falls, blue rises top to bottom."""
    w, h = 640, 480
    x = np.linspace(0, 255, w)[np.newaxis, :].repeat(h, 0)
    y = np.linspace(0, 255, h)[:, np.newaxis].repeat(w, 1)
    rgb = np.stack([x, 255 - x, 0.25 * y + 64], axis=-1)
    return Image.fromarray(np.round(rgb).astype(np.uint8), "RGB")


def shapes() -> Image.Image:
    """300x500: circles and rectangles on a coloured background."""
    img = Image.new("RGB", (300, 500), (40, 90, 160))
    d = ImageDraw.Draw(img)
    d.rectangle((20, 30, 180, 150), fill=(230, 200, 40), outline=(0, 0, 0), width=4)
    d.ellipse((120, 120, 280, 280), fill=(200, 30, 60))
    d.rectangle((40, 300, 120, 480), fill=(30, 160, 70))
    d.ellipse((150, 330, 290, 470), fill=(250, 250, 250), outline=(20, 20, 20), width=6)
    d.line((0, 499, 299, 0), fill=(255, 140, 0), width=5)
    return img


def noise() -> Image.Image:
    """257x193 (odd sizes): uniform RGB noise."""
    rng = np.random.default_rng(12345)
    return Image.fromarray(rng.integers(0, 256, (193, 257, 3), dtype=np.uint8), "RGB")


def rgba() -> Image.Image:
    """400x400 RGBA: colour pattern with alpha falling from opaque (left) to clear (right)."""
    base = shapes().resize((400, 400), Image.NEAREST)
    alpha = np.linspace(255, 0, 400)[np.newaxis, :].repeat(400, 0)
    img = base.convert("RGBA")
    img.putalpha(Image.fromarray(np.round(alpha).astype(np.uint8), "L"))
    return img


def grey() -> Image.Image:
    """320x200 greyscale (mode L): rings around an off-centre point."""
    yy, xx = np.mgrid[0:200, 0:320]
    r = np.hypot(xx - 110, yy - 80)
    return Image.fromarray(np.round(127.5 + 127.5 * np.cos(r / 6.0)).astype(np.uint8), "L")


def small() -> Image.Image:
    """50x40, so the resize upscales: a checkerboard over a gradient."""
    yy, xx = np.mgrid[0:40, 0:50]
    checker = ((xx // 5 + yy // 5) % 2) * 120
    rgb = np.stack([checker + xx * 2, 255 - checker - yy * 3, (xx * yy) % 256], axis=-1)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def upright_portrait() -> Image.Image:
    """240x320 as it should be seen: nothing symmetric, so a missed rotation shows."""
    img = Image.new("RGB", (240, 320), (250, 245, 230))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, 239, 60), fill=(20, 40, 200))       # blue band at the top
    d.rectangle((10, 80, 90, 300), fill=(220, 30, 30))     # red bar down the left
    d.ellipse((130, 200, 230, 300), fill=(30, 170, 60))    # green disc bottom right
    d.polygon([(120, 90), (230, 90), (230, 170)], fill=(240, 200, 0))
    return img


def exif_rotated() -> tuple[Image.Image, Image.Exif]:
    """Stored 320x240 with Orientation 6: viewers rotate it 90 degrees clockwise to upright."""
    stored = upright_portrait().transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return stored, exif


# name, format, image maker
PNG_CASES: list[tuple[str, Callable[[], Image.Image]]] = [
    ("gradient", gradient),
    ("shapes", shapes),
    ("noise", noise),
    ("rgba", rgba),
    ("grey", grey),
    ("small", small),
]
JPEG_CASES: list[tuple[str, Callable[[], Image.Image]]] = [
    ("gradient_q90", gradient),
    ("shapes_q90", shapes),
    ("noise_q90", noise),
]


def write_images(images_dir: Path) -> list[tuple[str, str, Path]]:
    """Writes every test image; returns (name, format, path) in a fixed order."""
    images_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in PNG_CASES:
        path = images_dir / f"{name}.png"
        make().save(path, format="PNG")
        written.append((name, "png", path))
    for name, make in JPEG_CASES:
        path = images_dir / f"{name}.jpg"
        make().save(path, format="JPEG", quality=JPEG_QUALITY)
        written.append((name, "jpeg", path))

    stored, exif = exif_rotated()
    path = images_dir / "exif_rotated.jpg"
    stored.save(path, format="JPEG", quality=JPEG_QUALITY, exif=exif)
    written.append(("exif_rotated", "jpeg", path))
    check_exif_case(path)
    return written


def check_exif_case(path: Path) -> None:
    """The EXIF case only tests something if its orientation is read and changes the tensor."""
    with Image.open(path) as img:
        if img.size != (320, 240) or img.getexif().get(EXIF_ORIENTATION) != 6:
            sys.exit(f"error: {path}: stored as {img.size}, orientation "
                     f"{img.getexif().get(EXIF_ORIENTATION)}; expected (320, 240) and 6")
        if ImageOps.exif_transpose(img).size != (240, 320):
            sys.exit(f"error: {path}: EXIF transpose did not give 240x320")
        ignored = img.convert("RGB").resize(INPUT_SIZE, Image.BICUBIC)
    honoured = preprocess(path)
    x = np.asarray(ignored, dtype=np.float32) / 255.0
    ignored_t = ((x - MEAN) / STD).transpose(2, 0, 1)[np.newaxis]
    diff = float(np.abs(honoured - ignored_t).mean())
    if diff < 0.1:
        sys.exit(f"error: {path}: ignoring the EXIF orientation changes the tensor too little "
                 f"(mean abs diff {diff:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="ONNX model file")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    args = parser.parse_args()

    if not args.model.is_file():
        sys.exit(f"error: model not found: {args.model} "
                 "(scripts/fetch-model.sh or scripts/make-test-model.py writes one)")

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    out = args.out
    for sub in ("tensors", "scores"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    cases = []
    for name, fmt, image_path in write_images(out / "images"):
        x = preprocess(image_path)
        if x.shape != (1, 3, *INPUT_SIZE[::-1]):
            sys.exit(f"error: {name}: tensor shape {x.shape}")
        (scores,) = session.run(None, {input_name: x})
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if scores.shape != (NUM_CLASSES,) or not np.isfinite(scores).all():
            sys.exit(f"error: {name}: model output has shape {scores.shape} or is not finite")

        probs = softmax(scores)
        top = np.argsort(-scores, kind="stable")[:TOP_K]
        tensor_rel = f"tensors/{name}.f32"
        scores_rel = f"scores/{name}.f32"
        (out / tensor_rel).write_bytes(x.astype("<f4").tobytes())
        (out / scores_rel).write_bytes(scores.astype("<f4").tobytes())
        cases.append({
            "name": name,
            "image": image_path.relative_to(out).as_posix(),
            "format": fmt,
            "tensor": tensor_rel,
            "scores": scores_rel,
            "top5": [int(i) for i in top],
            "top5_probs": [float(probs[i]) for i in top],
        })
        print(f"{name:14s} {fmt:4s} top5 {cases[-1]['top5']} p1 {probs[top[0]]:.4f}")

    (out / "cases.json").write_text(json.dumps(cases, indent=2) + "\n", encoding="utf-8")
    model_sha = hashlib.sha256(args.model.read_bytes()).hexdigest()
    print(f"wrote {len(cases)} cases to {out} (model {args.model}, sha256 {model_sha}; "
          f"onnxruntime {ort.__version__}, Pillow {Image.__version__}, numpy {np.__version__})")


if __name__ == "__main__":
    main()

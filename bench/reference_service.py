"""The Python service this one replaced, as it worked: the baseline of the end-to-end benchmark.

FastAPI + Pillow + onnxruntime. One `async def` handler reads the multipart upload, decodes and
resizes with Pillow, normalises with numpy and calls `session.run` directly on the event loop
(so one request runs at a time, whatever the number of clients), then answers the softmax top-5
as JSON. The onnxruntime session uses INFERENCE_THREADS intra-op threads, the same number the
Rust service is given in the same run.

Run: MODEL_PATH=m.onnx INFERENCE_THREADS=2 python -m uvicorn reference_service:app --port 8000
(from bench/, with the packages of bench/requirements.txt).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, HTTPException, UploadFile
from PIL import Image

INPUT_SIZE = (224, 224)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TOP_K = 5
LABELS_FILE = Path(__file__).resolve().parent.parent / "src" / "imagenet_classes.txt"


def _session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("INFERENCE_THREADS", "1"))
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"]
    )


_load_started = time.perf_counter()
session = _session()
load_time_ms = (time.perf_counter() - _load_started) * 1000.0
input_name = session.get_inputs()[0].name
labels = LABELS_FILE.read_text(encoding="utf-8").splitlines() if LABELS_FILE.is_file() else []

app = FastAPI(title="DenseNet121 reference service")


@app.get("/health")
async def health() -> dict:
    return {"status": "healthy", "model_loaded": True, "load_time_ms": load_time_ms}


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict:
    contents = await file.read()
    started = time.perf_counter()
    try:
        image = Image.open(io.BytesIO(contents)).convert("RGB")
    except Exception as exc:  # the original answered any decode failure with a 400
        raise HTTPException(status_code=400, detail=f"invalid image: {exc}") from exc
    decoded = time.perf_counter()
    image = image.resize(INPUT_SIZE, Image.BICUBIC)
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
    preprocessed = time.perf_counter()
    (scores,) = session.run(None, {input_name: x})
    inferred = time.perf_counter()

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    exp = np.exp(scores - scores.max())
    probs = exp / exp.sum()
    top = np.argsort(-probs, kind="stable")[:TOP_K]
    ms = lambda a, b: round((b - a) * 1000.0, 3)  # noqa: E731
    return {
        "success": True,
        "filename": file.filename or "unknown",
        "predictions": [
            {
                "rank": rank + 1,
                "class_id": int(i),
                "label": labels[i] if i < len(labels) else str(int(i)),
                "probability": float(probs[i]),
                "confidence": f"{probs[i] * 100:.2f}%",
            }
            for rank, i in enumerate(top)
        ],
        "inference_time_ms": ms(started, inferred),
        "timings_ms": {
            "decode": ms(started, decoded),
            "preprocess": ms(decoded, preprocessed),
            "inference": ms(preprocessed, inferred),
        },
    }

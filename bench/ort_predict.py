"""One cold Python + onnxruntime prediction: the baseline of the cold-start benchmark.

Usage: ort_predict.py MODEL IMAGE THREADS

Imports onnxruntime, creates the session (THREADS intra-op threads), classifies IMAGE the way the
original service did (Pillow open, RGB, bicubic resize to the model's input, ImageNet mean/std)
and prints one JSON line: {"top5", "import_ms", "session_ms", "predict_ms"}. The caller measures
the process's wall time and peak memory from outside.
"""

from __future__ import annotations

import json
import sys
import time

started = time.perf_counter()
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402

imported = time.perf_counter()

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def main() -> None:
    model, image_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    created = time.perf_counter()
    model_input = session.get_inputs()[0]
    height, width = model_input.shape[2], model_input.shape[3]

    image = Image.open(image_path).convert("RGB").resize((width, height), Image.BICUBIC)
    x = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
    (scores,) = session.run(None, {model_input.name: x})
    top5 = np.argsort(-np.asarray(scores).reshape(-1), kind="stable")[:5]
    done = time.perf_counter()

    ms = lambda a, b: (b - a) * 1000.0  # noqa: E731
    print(json.dumps({
        "top5": [int(i) for i in top5],
        "import_ms": ms(started, imported),
        "session_ms": ms(imported, created),
        "predict_ms": ms(created, done),
    }))


if __name__ == "__main__":
    main()

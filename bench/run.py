#!/usr/bin/env python3
"""The benchmark of scripts/bench.sh: this service, on each of its two inference engines, against
onnxruntime and the Python original.

The service is measured twice wherever it is measured: on tract (ENGINE=tract, result keys
`service/...`) and on ONNX Runtime (ENGINE=onnxruntime, keys `service-ort/...`), the latter
loading the ONNX Runtime library of ORT_DYLIB_PATH (scripts/bench.sh points it at the library of
the Python onnxruntime package, so both run the very same build). Measures, in one run and
interleaved (the sides take turns round by round, in an order that rotates from round to round,
so a slow moment of a shared machine lands on all of them):

1. inference only: each engine of the service (examples/bench_engine.rs) against onnxruntime on
   the same model and the same input tensor, on 1 thread and on N threads (N = the CPUs);
2. pre-processing only: decode + resize + normalise (examples/bench_preprocess.rs) against
   Pillow + numpy, on a 600x600 and a 4000x3000 JPEG;
3. cold start: process start to first prediction printed, and peak resident memory, for
   `densenet-api predict` on each engine against a Python + onnxruntime process
   (bench/ort_predict.py);
4. end to end: multipart `POST /predict` of both JPEGs against the local server on each engine
   and the Python reference service (bench/reference_service.py), 1 and 4 concurrent clients:
   latency percentiles, throughput and the servers' peak memory; and, to split the time around
   inference, the same JPEGs as a raw body (tract server), and `GET /health` alone.

Each measurement first checks that the answers agree: raw scores of each engine against
onnxruntime's on the same tensors (worst |a - b| / max |b| at most 1e-4), and the top-5 classes of
each image through every path (the CLI on each engine, every server). It writes the report
(Markdown) and the raw numbers (JSON), and exits 1 if any answer disagreed, 2 on a usage or set-up
error. Nothing here asserts on time: targets are reported as met or unmet, never enforced.

Run it through scripts/bench.sh, which builds the binaries and installs the Python packages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import json
import os
import platform
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageDraw, ImageFilter

from report import write_report

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SCORE_TOLERANCE = 1e-4  # worst |a - b| / max |b| on the same tensor
# Two top-5 lists agree when equal, or when they differ only in the order or membership of
# classes whose reference probabilities are this close (a near-tie that a one-grey-level
# difference between two JPEG decoders can flip).
TIE_TOLERANCE = 1e-3
JPEG_QUALITY = 90
IMAGES = {"600x600": (600, 600, 1), "12MP": (4000, 3000, 2)}  # name: width, height, seed
READY_TIMEOUT_S = 120
TIME = "/usr/bin/time"  # GNU time, for the peak memory of a whole process
REQUEST_TIMEOUT_S = 120


@dataclass
class Counts:
    """How many repetitions each measurement makes."""

    inference_rounds: int
    inference_runs: int
    preprocess_rounds: int
    preprocess_runs: int
    cold_runs: int
    e2e_rounds: int
    e2e_requests: dict[tuple[str, int], int]  # (image, clients) -> requests per round
    e2e_deadline_s: float  # the longest one (server, image, clients) round may take
    health_requests: int  # GET /health per server and round


# Rounds of the three-sided measurements are multiples of 3, so that each side takes each place
# in the rotating order equally often.
FULL = Counts(9, 8, 6, 4, 6, 6,
              {("600x600", 1): 24, ("600x600", 4): 48, ("12MP", 1): 10, ("12MP", 4): 20}, 90.0, 50)
QUICK = Counts(3, 2, 2, 2, 3, 1,
               {("600x600", 1): 8, ("600x600", 4): 12, ("12MP", 1): 4, ("12MP", 4): 8}, 45.0, 20)

# The service's engines: result key prefix -> ENGINE.
ENGINES = {"service": "tract", "service-ort": "onnxruntime"}
LABELS = {"service": "this service (tract)", "service-ort": "this service (ONNX Runtime)",
          "onnxruntime": "Python + onnxruntime", "reference": "Python reference service"}


class BenchError(Exception):
    """A set-up failure: a tool that did not start, a server that never became ready."""


# --- statistics -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values), "median": pct(values, 50), "p25": pct(values, 25), "p75": pct(values, 75),
        "p90": pct(values, 90), "p99": pct(values, 99),
        "min": min(values) if values else float("nan"), "max": max(values) if values else float("nan"),
    }


def rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def softmax(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    e = np.exp(s - s.max())
    return e / e.sum()


def top5(scores: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-np.asarray(scores).reshape(-1), kind="stable")[:5]]


def top5_agree(got: list[int], want_probs: np.ndarray) -> tuple[bool, str]:
    """Whether `got` is the reference top-5, allowing only near-ties (see TIE_TOLERANCE)."""
    want = top5(want_probs)
    if got == want:
        return True, "same"
    fifth = float(want_probs[want[-1]])
    ranks_ok = all(float(want_probs[c]) >= fifth - TIE_TOLERANCE for c in got)
    order_ok = all(float(want_probs[a]) >= float(want_probs[b]) - TIE_TOLERANCE
                   for a, b in zip(got, got[1:]))
    if ranks_ok and order_ok and len(set(got)) == 5:
        return True, f"near-tie order (reference {want})"
    return False, f"got {got}, reference {want}"


def rotated(sides: list[str], k: int) -> list[str]:
    """`sides` in the order of round `k`: each round starts one place further along."""
    k %= len(sides)
    return sides[k:] + sides[:k]


def ort_library() -> str:
    """ONNX Runtime's library for the service's ONNX Runtime engine: ORT_DYLIB_PATH, else the
    library of the Python onnxruntime package (the very build the Python side runs)."""
    if os.environ.get("ORT_DYLIB_PATH"):
        return os.environ["ORT_DYLIB_PATH"]
    found = sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so.*"))
    if not found:
        raise BenchError("set ORT_DYLIB_PATH: no libonnxruntime.so.* in the onnxruntime package")
    return str(found[-1])


# --- processes --------------------------------------------------------------------------------


class LineProcess:
    """A child answering one JSON line per command line (the bench_* examples)."""

    def __init__(self, argv: list[str], log: Path, timeout_s: float = 600.0,
                 env: dict[str, str] | None = None):
        self.timeout_s = timeout_s
        self.log = log
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=stderr, text=True, bufsize=1, env=env)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)

    def read(self) -> dict:
        if not self.selector.select(self.timeout_s):
            raise BenchError(f"{self.proc.args[0]} gave no answer within {self.timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise BenchError(f"{self.proc.args[0]} exited ({self.proc.returncode}): "
                             f"{self.log.read_text(errors='replace')[-2000:]}")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_measured(argv: list[str], env: dict[str, str], timeout_s: float = 300.0
                 ) -> tuple[float, int, str, str, int]:
    """Runs a process to its end: (wall ms from spawn to exit, peak RSS KiB, stdout, stderr, rc).

    The peak comes from GNU time, not from this process's own wait4: a child spawned straight
    from here starts with this (large) process's high-water mark, as Linux carries it over exec.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out, err, peak = (Path(tmp) / n for n in ("out", "err", "peak"))
        with out.open("wb") as o, err.open("wb") as e:
            started = time.perf_counter()
            proc = subprocess.Popen([TIME, "-f", "%M", "-o", str(peak), *argv], env=env,
                                    stdout=o, stderr=e)
            try:
                rc = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise BenchError(f"{argv[0]} did not finish within {timeout_s:.0f} s") from None
            wall_ms = (time.perf_counter() - started) * 1000.0
        rss = int(peak.read_text().split()[-1]) if peak.is_file() and peak.read_text().strip() else 0
        return wall_ms, rss, out.read_text(), err.read_text(), rc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def memory_kib(pid: int, field_name: str) -> int | None:
    """A memory figure of /proc/PID/status: VmHWM (peak resident) or VmRSS (resident now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    ready_ms: float = float("nan")
    first_prediction_ms: float = float("nan")
    peak_after_first_kib: int | None = None

    def start(self, first_body: bytes, content_type: str) -> None:
        self.port = free_port()
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        started = time.perf_counter()
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, env=self.env, cwd=self.cwd, stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = started + READY_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}); see {self.log}")
            try:
                if http_get(self.port, "/health", 1.0)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        else:
            raise BenchError(f"{self.name} was not ready within {READY_TIMEOUT_S} s; see {self.log}")
        self.ready_ms = (time.perf_counter() - started) * 1000.0
        status, body = post(self.port, first_body, content_type)
        if status != 200:
            raise BenchError(f"{self.name}: first /predict answered {status}: {body[:300]!r}")
        self.first_prediction_ms = (time.perf_counter() - started) * 1000.0
        self.peak_after_first_kib = memory_kib(self.proc.pid, "VmHWM")

    def stop(self) -> dict[str, int | None]:
        """Stops the server; returns its peak and current resident memory, KiB."""
        if self.proc is None or self.proc.poll() is not None:
            return {}
        memory = {"peak_rss_kib": memory_kib(self.proc.pid, "VmHWM"),
                  "rss_kib": memory_kib(self.proc.pid, "VmRSS")}
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return memory


# --- HTTP load ----------------------------------------------------------------------------------


def multipart(image: bytes, filename: str) -> tuple[bytes, str]:
    boundary = "----densenet-bench-7d1f2a"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    return head + image + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, content_type: str,
         conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    server_decode_ms: list[float] = field(default_factory=list)
    server_preprocess_ms: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    truncated: bool = False


def health_round_trips(port: int, count: int) -> list[float]:
    """Milliseconds of `count` GET /health on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    times = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        conn.close()
    return times


def load(port: int, body: bytes, content_type: str, clients: int, requests: int,
         deadline_s: float) -> LoadResult:
    """`requests` POSTs from `clients` threads, each on its own keep-alive connection."""
    result = LoadResult()
    lock = threading.Lock()
    remaining = [requests]
    started = time.perf_counter()
    stop_at = started + deadline_s

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
        try:
            while True:
                with lock:
                    if remaining[0] <= 0:
                        return
                    if time.perf_counter() > stop_at:
                        result.truncated = True
                        return
                    remaining[0] -= 1
                t0 = time.perf_counter()
                try:
                    status, data = post(port, body, content_type, conn)
                except (OSError, http.client.HTTPException):
                    status, data = 0, b""
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
                latency = (time.perf_counter() - t0) * 1000.0
                with lock:
                    if status != 200:
                        result.errors += 1
                        continue
                    timings = json.loads(data).get("timings_ms", {})
                    result.latencies_ms.append(latency)
                    result.inference_ms.append(float(timings.get("inference", float("nan"))))
                    result.server_decode_ms.append(float(timings.get("decode", float("nan"))))
                    result.server_preprocess_ms.append(float(timings.get("preprocess", float("nan"))))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline_s + REQUEST_TIMEOUT_S)
    result.elapsed_s = time.perf_counter() - started
    return result


# --- inputs -------------------------------------------------------------------------------------


def make_image(width: int, height: int, seed: int) -> Image.Image:
    """A deterministic photo-like picture: smooth colour fields, shapes, slight blur and grain.

    Its JPEG compresses like a camera picture (about 3 MB at 12 MP, quality 90), not like flat
    colour (far smaller) or pure noise (far larger)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(width // 40, width // 6))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(1, width // 800)))
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.int16)
    pixels = np.clip(np.asarray(img, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def pillow_stages(data: bytes, size: tuple[int, int]) -> tuple[np.ndarray, list[float]]:
    """The original service's pre-processing, timed: (tensor, [decode, resize, normalise] ms)."""
    t0 = time.perf_counter()
    img = Image.open(io.BytesIO(data)).convert("RGB")
    t1 = time.perf_counter()
    img = img.resize(size, Image.BICUBIC)
    t2 = time.perf_counter()
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - MEAN) / STD
    x = np.ascontiguousarray(x.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
    t3 = time.perf_counter()
    return x, [(t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000]


def ort_session(model: Path, threads: int) -> tuple[ort.InferenceSession, float]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    started = time.perf_counter()
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return session, (time.perf_counter() - started) * 1000.0


# --- the benchmark ------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.counts = QUICK if args.quick else FULL
        self.threads = args.threads or os.cpu_count() or 1
        self.thread_counts = sorted({1, self.threads})
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {"checks": []}
        self.failures: list[str] = []
        self.servers: list[Server] = []
        self.children: list[LineProcess] = []

    def engine_env(self, side: str, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a service process on the engine of `side` (see ENGINES)."""
        env = dict(os.environ if base is None else base)
        env.pop("PREPARED_MODEL_PATH", None)
        env["ENGINE"] = ENGINES.get(side, "tract")
        if env["ENGINE"] == "onnxruntime":
            env["ORT_DYLIB_PATH"] = self.ort_library
        elif side == "service" and self.args.prepared:
            # tract as the Lambda image runs it: the model prepared ahead (prepare-model).
            env["PREPARED_MODEL_PATH"] = str(self.args.prepared)
        return env

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def check(self, what: str, ok: bool, detail: str) -> None:
        self.results["checks"].append({"what": what, "ok": ok, "detail": detail})
        self.log(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
        if not ok:
            self.failures.append(f"{what}: {detail}")

    # inputs

    def prepare(self) -> None:
        self.ort_library = ort_library()
        self.log(f"ONNX Runtime engine: ORT_DYLIB_PATH={self.ort_library}")
        self.images: dict[str, Path] = {}
        for name, (w, h, seed) in IMAGES.items():
            path = self.out / f"photo-{w}x{h}.jpg"
            if not path.is_file():
                make_image(w, h, seed).save(path, format="JPEG", quality=JPEG_QUALITY)
            self.images[name] = path
        self.image_bytes = {n: p.read_bytes() for n, p in self.images.items()}
        probe, _ = ort_session(self.args.model, 1)
        model_input = probe.get_inputs()[0]
        self.input_name = model_input.name
        self.size = (int(model_input.shape[3]), int(model_input.shape[2]))  # (width, height)
        # The reference answer of each image: Pillow's tensor, onnxruntime's scores on 1 thread.
        self.tensors: dict[str, Path] = {}
        self.ref_scores: dict[str, np.ndarray] = {}
        self.pillow_tensors: dict[str, np.ndarray] = {}
        for name, data in self.image_bytes.items():
            x, _ = pillow_stages(data, self.size)
            path = self.out / f"tensor-{name}.f32"
            path.write_bytes(x.astype("<f4").tobytes())
            self.tensors[name] = path
            self.pillow_tensors[name] = x
            self.ref_scores[name] = np.asarray(probe.run(None, {self.input_name: x})[0]).reshape(-1)
        del probe
        self.results["images"] = {
            n: {"path": str(p), "bytes": len(self.image_bytes[n]),
                "size": list(Image.open(p).size), "reference_top5": top5(self.ref_scores[n])}
            for n, p in self.images.items()}

    # 1. inference

    def inference(self) -> None:
        c = self.counts
        self.log(f"inference: {c.inference_rounds} rounds x {c.inference_runs} runs, "
                 f"threads {self.thread_counts}, engines {list(ENGINES.values())} and onnxruntime")
        tensor = self.tensors["600x600"]
        x = self.pillow_tensors["600x600"]
        # One bench_engine process per engine, started (and so loaded) one after the other.
        engines: dict[str, LineProcess] = {}
        loaded: dict[str, dict] = {}
        for side, engine_name in ENGINES.items():
            engines[side] = LineProcess(
                [str(self.args.examples / "bench_engine"), str(self.args.model), str(tensor),
                 *map(str, self.thread_counts)],
                self.out / f"bench_engine-{engine_name}.log", env=self.engine_env(side))
            self.children.append(engines[side])
            loaded[side] = engines[side].read()
        sessions = {t: ort_session(self.args.model, t)[0] for t in self.thread_counts}

        ort_scores = {t: np.asarray(sessions[t].run(None, {self.input_name: x})[0]).reshape(-1)
                      for t in self.thread_counts}
        for side, engine in engines.items():
            for entry in loaded[side]["engines"]:
                t = entry["threads"]
                d = rel_diff(np.asarray(entry["scores"], dtype=np.float32), ort_scores[t])
                self.check(f"raw scores, 600x600 tensor, {LABELS[side]}, {t} thread(s)",
                           d <= SCORE_TOLERANCE,
                           f"worst |a-b|/max|b| = {d:.2e} (limit {SCORE_TOLERANCE:.0e})")
                other = engine.ask(f"scores {t} {self.tensors['12MP']}")
                d = rel_diff(np.asarray(other["scores"], dtype=np.float32), self.ref_scores["12MP"])
                self.check(f"raw scores, 12MP tensor, {LABELS[side]}, {t} thread(s)",
                           d <= SCORE_TOLERANCE,
                           f"worst |a-b|/max|b| = {d:.2e} (limit {SCORE_TOLERANCE:.0e})")
        runtime = loaded["service-ort"].get("runtime", "")
        self.check("the ONNX Runtime engine runs the Python side's ONNX Runtime build",
                   runtime == f"onnxruntime {ort.__version__}",
                   f"service: {runtime or 'unknown'}; Python: onnxruntime {ort.__version__}")

        times: dict[str, list[float]] = {}
        for t in self.thread_counts:  # warm-up, untimed
            sessions[t].run(None, {self.input_name: x})
        sides = [*ENGINES, "onnxruntime"]
        for r in range(c.inference_rounds):
            for t in self.thread_counts:
                for side in rotated(sides, r + t):
                    key = f"{side}/{t}"
                    if side in engines:
                        ms = engines[side].ask(f"time {t} {c.inference_runs}")["ms"]
                    else:
                        ms = []
                        for _ in range(c.inference_runs):
                            t0 = time.perf_counter()
                            sessions[t].run(None, {self.input_name: x})
                            ms.append((time.perf_counter() - t0) * 1000.0)
                    times.setdefault(key, []).extend(ms)
        for engine in engines.values():
            engine.close()
        self.results["inference"] = {k: {**summary(v), "runs": v} for k, v in times.items()}
        self.results["inference_load_ms"] = {
            side: {e["threads"]: e["load_ms"] for e in loaded[side]["engines"]} for side in engines}
        self.results["engine_runtimes"] = {side: loaded[side].get("runtime", "unknown")
                                           for side in engines}

    # 1b. where tract spends its time

    def profile(self) -> None:
        runs = 3 if self.args.quick else 10
        self.log(f"tract profile: load stages and {runs} inferences timed node by node, 1 thread")
        argv = [str(self.args.examples / "profile_tract"), str(self.args.model), "1", str(runs)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"profile_tract failed ({done.returncode}): {done.stderr[-2000:]}")
        load, ops, total, nodes = [], [], None, None
        for line in done.stdout.splitlines():
            cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
            if m := re.search(r"(\d+) nodes in the optimised plan", line):
                nodes = int(m.group(1))
            elif len(cells) == 2 and re.fullmatch(r"[0-9.]+", cells[1]):
                load.append({"stage": cells[0], "ms": float(cells[1])})
            elif len(cells) == 3 and cells[0].startswith("whole run"):
                total = float(cells[1])
            elif len(cells) == 3 and re.fullmatch(r"[0-9.]+", cells[1]):
                ops.append({"op": cells[0], "ms": float(cells[1])})
        if total is None or not ops:
            raise BenchError(f"profile_tract printed no profile: {done.stdout[-2000:]}")
        self.results["tract_profile"] = {"runs": runs, "nodes": nodes, "load": load, "ops": ops,
                                         "total_ms": total}

    # 2. pre-processing

    def preprocess(self) -> None:
        c = self.counts
        self.log(f"pre-processing: {c.preprocess_rounds} rounds x {c.preprocess_runs} runs per image")
        w, h = self.size
        prep = LineProcess([str(self.args.examples / "bench_preprocess"), str(w), str(h)],
                           self.out / "bench_preprocess.log")
        self.children.append(prep)
        results: dict[str, Any] = {}
        plane = w * h
        for name, path in self.images.items():
            out = self.out / f"tensor-{name}-service.f32"
            prep.ask(f"tensor {path} {out}")
            got = np.fromfile(out, dtype="<f4")
            want = self.pillow_tensors[name].reshape(-1)
            level = np.repeat(1.0 / (255.0 * STD), plane)  # one grey level per channel
            grey = np.abs(got - want) / level
            results[name] = {"max_grey_levels": float(grey.max()),
                             "share_within_2_levels": float(np.mean(grey <= 2.0 + 1e-3)),
                             "mean_grey_levels": float(grey.mean())}
        for r in range(c.preprocess_rounds):
            for name, path in self.images.items():
                sides = ["service", "pillow"] if r % 2 == 0 else ["pillow", "service"]
                for side in sides:
                    entry = results[name].setdefault(side, {"decode": [], "resize": [],
                                                            "normalize": [], "total": []})
                    if side == "service":
                        reply = prep.ask(f"time {path} {c.preprocess_runs}")
                        stages = list(zip(reply["decode_ms"], reply["resize_ms"],
                                          reply["normalize_ms"]))
                        entry.setdefault("full_decode", []).extend(reply["full_decode_ms"])
                        results[name]["service_decoded_size"] = [reply["width"], reply["height"]]
                    else:
                        data = self.image_bytes[name]
                        stages = [pillow_stages(data, self.size)[1]
                                  for _ in range(c.preprocess_runs)]
                    for d, rs, n in stages:
                        entry["decode"].append(d)
                        entry["resize"].append(rs)
                        entry["normalize"].append(n)
                        entry["total"].append(d + rs + n)
        prep.close()
        for name in results:
            for side in ("service", "pillow"):
                results[name][side] = {k: summary(v) for k, v in results[name][side].items()}
        self.results["preprocess"] = results

    # 3. cold start

    def cold_start(self) -> None:
        c = self.counts
        self.log(f"cold start: {c.cold_runs} runs per side, {self.threads} inference threads")
        image = self.images["600x600"]
        probs = softmax(self.ref_scores["600x600"])
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("RUST_LOG",))}
        service_env = {**base_env, "MODEL_PATH": str(self.args.model),
                       "INFERENCE_THREADS": str(self.threads), "RUST_LOG": "info",
                       "LOG_DIR": str(self.out / "cli-logs"), "NO_COLOR": "1"}
        # "service-onnx": tract loading the ONNX file itself, without the prepared model.
        sides = [*ENGINES, *(["service-onnx"] if self.args.prepared else []), "onnxruntime"]
        runs: dict[str, dict[str, list[float]]] = {
            side: {"wall_ms": [], "rss_kib": [], "load_ms": []} for side in sides}
        runs["onnxruntime"]["import_ms"] = []
        checked = {side: False for side in sides}
        for r in range(c.cold_runs):
            for side in rotated(sides, r):
                if side != "onnxruntime":
                    argv = [str(self.args.bin), "predict", str(image), "--json"]
                    wall, rss, out, err, rc = run_measured(argv, self.engine_env(side, service_env))
                    if rc != 0:
                        raise BenchError(f"densenet-api predict ({side}) failed "
                                         f"({rc}): {err[-2000:]}")
                    got = [p["class_id"] for p in json.loads(out.splitlines()[-1])["predictions"]]
                    m = re.search(r"load_ms=([0-9.]+)", err)
                    runs[side]["load_ms"].append(float(m.group(1)) if m else float("nan"))
                else:
                    argv = [sys.executable, str(self.args.root / "bench" / "ort_predict.py"),
                            str(self.args.model), str(image), str(self.threads)]
                    wall, rss, out, err, rc = run_measured(argv, base_env)
                    if rc != 0:
                        raise BenchError(f"ort_predict.py failed ({rc}): {err[-2000:]}")
                    reply = json.loads(out.splitlines()[-1])
                    got = reply["top5"]
                    runs[side]["load_ms"].append(reply["session_ms"])
                    runs[side]["import_ms"].append(reply["import_ms"])
                runs[side]["wall_ms"].append(wall)
                runs[side]["rss_kib"].append(rss)
                if not checked[side]:
                    ok, detail = top5_agree(got, probs)
                    label = (f"densenet-api predict, {side}" if side != "onnxruntime"
                             else LABELS[side])
                    self.check(f"top-5, 600x600 JPEG, {label} (cold process)", ok, detail)
                    checked[side] = True
        self.results["cold_start"] = {side: {k: summary(v) for k, v in m.items()}
                                      for side, m in runs.items()}

    # 4. end to end

    def end_to_end(self) -> None:
        c = self.counts
        venv_python = sys.executable
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUST_LOG")}
        servers: dict[str, Server] = {}
        for side, engine_name in ENGINES.items():
            logs = self.out / ("server-logs" if side == "service" else f"server-logs-{engine_name}")
            shutil.rmtree(logs, ignore_errors=True)  # every run starts empty
            servers[side] = Server(
                side, [str(self.args.bin), "serve", "--host", "127.0.0.1", "--port", "{port}"],
                self.engine_env(side, {
                    **env, "MODEL_PATH": str(self.args.model),
                    "INFERENCE_THREADS": str(self.threads), "LOG_DIR": str(logs), "STAGE": "dev",
                    "RUST_LOG": "warn"}),
                self.args.root, self.out / f"{side}.log")
        servers["reference"] = Server(
            "reference",
            [venv_python, "-m", "uvicorn", "reference_service:app", "--host", "127.0.0.1",
             "--port", "{port}", "--log-level", "warning", "--no-access-log"],
            {**env, "MODEL_PATH": str(self.args.model), "INFERENCE_THREADS": str(self.threads)},
            self.args.root / "bench", self.out / "reference.log")
        service = servers["service"]
        bodies = {n: multipart(b, self.images[n].name) for n, b in self.image_bytes.items()}
        self.log(f"end to end: starting {len(servers)} servers ({self.threads} inference threads "
                 "each)")
        for s in servers.values():
            self.servers.append(s)
            s.start(*bodies["600x600"])

        for name, s in servers.items():
            for image, (body, ctype) in bodies.items():
                status, data = post(s.port, body, ctype)
                if status != 200:
                    raise BenchError(f"{name}: /predict of the {image} JPEG answered {status}: "
                                     f"{data[:300]!r}")
                got = [p["class_id"] for p in json.loads(data)["predictions"]]
                ok, detail = top5_agree(got, softmax(self.ref_scores[image]))
                self.check(f"top-5, {image} JPEG, {LABELS[name]} /predict", ok, detail)
        status, info = http_get(service.port, "/model-info")
        self.results["model_info"] = json.loads(info) if status == 200 else {}
        status, info = http_get(servers["service-ort"].port, "/model-info")
        self.results["model_info_ort"] = json.loads(info) if status == 200 else {}

        # Besides the multipart uploads: the same images as a raw image/jpeg body to the service
        # (what multipart parsing costs), and GET /health (the HTTP round trip alone).
        raw = {n: (b, "image/jpeg") for n, b in self.image_bytes.items()}
        runs: dict[str, LoadResult] = {}
        health: dict[str, list[float]] = {name: [] for name in servers}
        for r in range(c.e2e_rounds):
            self.log(f"end to end: round {r + 1} of {c.e2e_rounds}")
            order = rotated(list(servers), r)
            for name in order:
                health[name] += health_round_trips(servers[name].port, c.health_requests)
            for (image, clients), n in c.e2e_requests.items():
                plan = [(name, bodies[image], f"{name}/{image}/{clients}") for name in order]
                if clients == 1:
                    plan.append(("service", raw[image], f"service-raw/{image}/{clients}"))
                for name, (body, ctype), key in plan:
                    res = load(servers[name].port, body, ctype, clients, n, c.e2e_deadline_s)
                    acc = runs.setdefault(key, LoadResult())
                    acc.latencies_ms += res.latencies_ms
                    acc.inference_ms += res.inference_ms
                    acc.server_decode_ms += res.server_decode_ms
                    acc.server_preprocess_ms += res.server_preprocess_ms
                    acc.errors += res.errors
                    acc.elapsed_s += res.elapsed_s
                    acc.truncated |= res.truncated
        self.results["health_round_trip_ms"] = {n: summary(v) for n, v in health.items()}
        e2e: dict[str, Any] = {}
        for key, res in runs.items():
            overhead = [lat - inf for lat, inf in zip(res.latencies_ms, res.inference_ms)]
            e2e[key] = {
                "requests": len(res.latencies_ms), "errors": res.errors, "truncated": res.truncated,
                "throughput_rps": len(res.latencies_ms) / res.elapsed_s if res.elapsed_s else 0.0,
                "latency_ms": summary(res.latencies_ms),
                "inference_ms": summary(res.inference_ms),
                "decode_ms": summary(res.server_decode_ms),
                "preprocess_ms": summary(res.server_preprocess_ms),
                "around_inference_ms": summary(overhead),
            }
            if res.errors:
                self.check(f"{key}: all requests answered 200", False, f"{res.errors} failed")
        self.results["e2e"] = e2e
        self.results["servers"] = {}
        for name, s in servers.items():
            self.results["servers"][name] = {"ready_ms": s.ready_ms,
                                             "first_prediction_ms": s.first_prediction_ms,
                                             "peak_after_first_kib": s.peak_after_first_kib,
                                             **s.stop()}

    def cleanup(self) -> None:
        for child in self.children:
            child.close()
        for s in self.servers:
            s.stop()


# --- environment and report ---------------------------------------------------------------------


def cpu_busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        u = resource.getrusage(who)
        total += u.ru_utime + u.ru_stime
    return total


def others_share(elapsed_s: float, busy0: float, own0: float) -> float:
    """The share of the machine's CPU time that other processes used since (busy0, own0)."""
    others = max(0.0, (cpu_busy_s() - busy0) - (own_cpu_s() - own0))
    return others / max(elapsed_s * (os.cpu_count() or 1), 1e-9)


def command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), 0)
    os_name = "Linux"
    if Path("/etc/os-release").is_file():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
            "kernel": platform.release(), "os": os_name}


def versions(root: Path, info: dict, info_ort: dict) -> dict[str, str]:
    import fastapi
    import PIL
    import uvicorn

    commit = command_output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = command_output(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"])
    return {
        "densenet-api": f"{commit}{' + uncommitted changes' if dirty else ''}",
        "rustc": command_output(["rustc", "--version"]),
        "service runtime": info.get("runtime", "unknown"),
        "ONNX Runtime engine": info_ort.get("runtime", "unknown"),
        "Python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "Pillow": PIL.__version__,
        "numpy": np.__version__,
        "FastAPI": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", type=Path, required=True, help="the ONNX model")
    parser.add_argument("--bin", type=Path, required=True, help="the densenet-api binary")
    parser.add_argument("--examples", type=Path, required=True,
                        help="the folder of the built bench_engine and bench_preprocess")
    parser.add_argument("--out", type=Path, required=True, help="work folder (images, logs, JSON)")
    parser.add_argument("--report", type=Path, required=True, help="the Markdown report to write")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--threads", type=int, default=0, help="N (default: the CPUs)")
    parser.add_argument("--test-model", action="store_true",
                        help="the model is the random-weight stand-in (said in the report)")
    parser.add_argument("--prepared", type=Path, default=None,
                        help="the model prepared by `densenet-api prepare-model`, which the tract "
                             "side loads as the Lambda image does")
    parser.add_argument("--quick", action="store_true", help="few repetitions (minutes, noisy)")
    parser.add_argument("--command", default="", help="the command line to record in the report")
    args = parser.parse_args()
    for p in (args.model, args.bin, args.examples / "bench_engine",
              args.examples / "bench_preprocess", args.examples / "profile_tract", Path(TIME)):
        if not p.exists():
            print(f"error: {p} not found (scripts/bench.sh builds and makes everything)",
                  file=sys.stderr)
            return 2

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    started, busy0, own0 = time.time(), cpu_busy_s(), own_cpu_s()
    load_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    bench = Bench(args)
    sections: dict[str, float] = {}  # CPU share other processes took during each step
    steps: list[Callable[[], None]] = [bench.prepare, bench.inference, bench.profile,
                                       bench.preprocess, bench.cold_start, bench.end_to_end]
    try:
        for step in steps:
            t0, busy, own = time.time(), cpu_busy_s(), own_cpu_s()
            step()
            sections[step.__name__] = others_share(time.time() - t0, busy, own)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        bench.cleanup()
    elapsed = time.time() - started
    meta = {
        "command": args.command or shlex.join(sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": elapsed,
        "quick": args.quick,
        "threads": bench.threads,
        "machine": machine(),
        "versions": versions(args.root, bench.results.get("model_info", {}),
                             bench.results.get("model_info_ort", {})),
        "onnxruntime_library": getattr(bench, "ort_library", ""),
        "model_name": args.model.name,
        "test_model": args.test_model,
        "noise": {"others_share": others_share(elapsed, busy0, own0),
                  "sections": sections,
                  "load_start": load_start,
                  "load_end": " ".join(f"{v:.2f}" for v in os.getloadavg())},
    }
    results = {"meta": meta, **bench.results}
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    write_report(args.report, bench.results, meta)
    bench.log(f"wrote {args.report} and {args.out / 'results.json'}")
    if bench.failures:
        print("error: the service's answers disagree with the reference:", file=sys.stderr)
        for f in bench.failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Markdown report of bench/run.py: the run's conditions, the checks, the targets for each of
the service's engines, one section per measurement, a breakdown of where the time goes and an
estimate of the Lambda memory setting and cost per prediction, all computed from the results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

CLIENTS = (1, 4)
# The service's engines, by result key prefix.
ENGINES = {"service": "tract", "service-ort": "ONNX Runtime"}
SIDES = {"service": "this service (tract)", "service-ort": "this service (ONNX Runtime)",
         "reference": "Python reference"}
STEPS = {"inference": "inference only", "preprocess": "pre-processing",
         "cold_start": "cold start", "end_to_end": "end to end"}
ROWS = {**SIDES, "service-raw": "this service (tract), raw body"}

# AWS Lambda, x86: the price of compute and of requests, and the memory sizes estimated.
LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_REQUEST_USD = 0.20 / 1e6
LAMBDA_FULL_VCPU_MB = 1769
LAMBDA_SIZES_MB = (1024, 1769, 3008, 3538)


def fmt(v: float | None, unit: str = "") -> str:
    if v is None or v != v:
        return "n/a"
    text = f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}"
    return text + unit


def spread(s: dict[str, float]) -> str:
    return f"{fmt(s['p25'])}–{fmt(s['p75'])}"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def share(part: float, whole: float) -> str:
    return f"{part / whole * 100:.0f}%" if whole else "n/a"


def mib(kib: float | None) -> str:
    return f"{kib / 1024:.0f} MiB" if kib else "n/a"


def targets(res: dict, threads: int) -> list[tuple[str, dict[str, tuple[str, bool]]]]:
    """Each target of the issue, evaluated for each engine: (what, {side: (measured, met)})."""
    inf, e2e = res.get("inference", {}), res.get("e2e", {})
    servers, cold = res.get("servers", {}), res.get("cold_start", {})
    rows: list[tuple[str, dict[str, tuple[str, bool]]]] = []

    def add(what: str, cell: Callable[[str], tuple[str, bool]]) -> None:
        cells = {}
        for side in ENGINES:
            try:
                cells[side] = cell(side)
            except (KeyError, TypeError):
                pass  # not measured for this engine
        if cells:
            rows.append((what, cells))

    def one_thread(side: str) -> tuple[str, bool]:
        a, b = inf[f"{side}/1"]["median"], inf["onnxruntime/1"]["median"]
        return f"{fmt(ratio(a, b))}x ({fmt(a)} vs {fmt(b)} ms)", ratio(a, b) <= 1.25

    def n_threads(side: str) -> tuple[str, bool]:
        a, n = inf[f"{side}/1"]["median"], inf[f"{side}/{threads}"]["median"]
        return f"{fmt(ratio(a, n))}x ({fmt(n)} vs {fmt(a)} ms)", ratio(a, n) >= 1.7

    def around(side: str) -> tuple[str, bool]:
        v = e2e[f"{side}/600x600/1"]["around_inference_ms"]
        return f"{fmt(v['median'])} ms (p90 {fmt(v['p90'])} ms)", v["median"] <= 3.0

    def big_image(side: str) -> tuple[str, bool]:
        a, b = e2e[f"{side}/12MP/1"]["latency_ms"], e2e["reference/12MP/1"]["latency_ms"]
        speed = ratio(b["median"], a["median"])
        return f"{fmt(speed)}x ({fmt(a['median'])} vs {fmt(b['median'])} ms)", speed >= 2.0

    def throughput(image: str) -> Callable[[str], tuple[str, bool]]:
        def cell(side: str) -> tuple[str, bool]:
            a, b = e2e[f"{side}/{image}/4"], e2e[f"reference/{image}/4"]
            speed = ratio(a["throughput_rps"], b["throughput_rps"])
            peak, ref = servers[side]["peak_rss_kib"], servers["reference"]["peak_rss_kib"]
            memory = ratio(peak, ref) if peak and ref else float("nan")
            return (f"{fmt(speed)}x ({fmt(a['throughput_rps'])} vs {fmt(b['throughput_rps'])} "
                    f"req/s); memory {fmt(memory)}x ({mib(peak)} vs {mib(ref)})",
                    speed >= 1.8 and memory < 0.5)
        return cell

    def cold_ready(side: str) -> tuple[str, bool]:
        a, b = cold[side]["load_ms"]["median"], cold["onnxruntime"]["load_ms"]["median"]
        return f"{fmt(ratio(a, b))}x ({fmt(a)} vs {fmt(b)} ms)", ratio(a, b) <= 2.0

    add("Inference on 1 thread at most 1.25x onnxruntime's", one_thread)
    if threads > 1:
        add(f"Inference on {threads} threads at least 1.7x faster than on 1 thread", n_threads)
    add("Everything around inference of a 600x600 JPEG /predict at most 3 ms (client latency − "
        "`timings_ms.inference`, 1 client, median)", around)
    add(f"12-MP JPEG /predict at least 2x faster than the Python reference ({threads} inference "
        "threads each, 1 client, median)", big_image)
    for image in res.get("images", {}):
        add(f"Throughput with 4 clients ({image} JPEG) at least 1.8x the Python reference's, "
            "with peak memory under half", throughput(image))
    add("Cold start to ready (model load + optimisation) at most 2x onnxruntime's session "
        "creation", cold_ready)
    return rows


def header(res: dict, meta: dict) -> list[str]:
    m, info, noise = meta["machine"], res.get("model_info", {}), meta["noise"]
    threads = meta["threads"]
    stand_in = (" — the random-weight stand-in of `scripts/make-test-model.py`: the real model's "
                "topology and cost, meaningless classes" if meta["test_model"] else "")
    shared = noise["others_share"] > 0.05
    return [
        "# Benchmarks\n",
        "This service (Rust), on each of its two inference engines — tract (`ENGINE=tract`, "
        "the default) and ONNX Runtime (`ENGINE=onnxruntime`) — against onnxruntime and against "
        "the Python service it replaced (FastAPI + Pillow + onnxruntime, "
        "`bench/reference_service.py`), measured side by side in one run by the command below "
        "(`--help` explains it; `bench/run.py` holds the method). The raw numbers of a run are "
        "written to `bench/out/results.json`.\n",
        "```sh\n" + meta["command"] + "\n```\n",
        f"- Date: {meta['date']}; the run took {meta['duration_s']:.0f} s"
        + (" (quick mode: few repetitions, indicative only)" if meta["quick"] else "") + ".",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM; {m['os']}, "
        f"Linux {m['kernel']}.",
        "- Versions: " + "; ".join(f"{k} {v.removeprefix(k + ' ')}"
                                   for k, v in meta["versions"].items()) + ".",
        *([f"- The service's ONNX Runtime engine loads `{Path(meta['onnxruntime_library']).name}` "
           "of the Python onnxruntime package (`ORT_DYLIB_PATH`): the same build as the Python "
           "side."] if meta.get("onnxruntime_library") else []),
        f"- Model: `{meta['model_name']}` (sha256 `{info.get('model_sha256', '?')[:16]}…`, "
        f"{info.get('parameters', '?')} parameters, opset {info.get('opset_version', '?')}, "
        f"input {info.get('input_shape', '?')}){stand_in}.",
        "- Images, made by `bench/run.py` (deterministic, photo-like, JPEG quality 90): "
        + ", ".join(f"{n}: {v['size'][0]}x{v['size'][1]}, {v['bytes'] / 1e6:.2f} MB"
                    for n, v in res.get("images", {}).items()) + ".",
        f"- N = {threads} (the cores): where a measurement says N threads, the service runs "
        f"with `INFERENCE_THREADS={threads}` (on ONNX Runtime, its `intra_op_num_threads`) and "
        f"Python's onnxruntime with `intra_op_num_threads={threads}`.",
        f"- Load from other processes: {noise['others_share'] * 100:.0f}% of the machine's CPU "
        "time during the run (" + "".join(
            f"{STEPS[k]} {v * 100:.0f}%, " for k, v in noise.get("sections", {}).items()
            if k in STEPS)
        + f"load average {noise['load_start']} at the start, {noise['load_end']} at the end)"
        + ("; **the machine was shared**, so absolute times are inflated and spreads wide. The "
           "sides take turns round by round, which keeps their ratios fairer than the absolute "
           "numbers." if shared else "; the machine was otherwise quiet.") + "\n",
        "Statistics: medians, with the interquartile range (p25–p75) as the spread, over all "
        "rounds; in each measurement the sides take turns round by round, in an order that "
        "rotates from one round to the next.\n",
    ]


def correctness(res: dict) -> list[str]:
    lines = ["## Correctness\n",
             "Checked before anything is timed; any failure here makes the run exit 1 (a "
             "benchmark of wrong answers is worthless). Raw scores are compared on the same "
             "tensor: worst |a − b| / max |b|. A top-5 may differ from the reference only "
             "between classes whose reference probabilities are within 0.001 (near-ties).\n",
             "| check | result | detail |", "|---|---|---|"]
    for c in res["checks"]:
        detail = c["detail"].replace("|", "\\|")
        lines.append(f"| {c['what']} | {'pass' if c['ok'] else '**FAIL**'} | {detail} |")
    pre = res.get("preprocess", {})
    if pre:
        lines.append("\nThe service's model input against Pillow's, same JPEG, in grey levels "
                     "(JPEG decoders round differently, and the service decodes large JPEGs at "
                     "reduced scale): " + "; ".join(
                         f"{n}: max {v['max_grey_levels']:.1f}, mean {v['mean_grey_levels']:.3f}, "
                         f"{v['share_within_2_levels'] * 100:.2f}% within 2"
                         for n, v in pre.items()) + ".")
    return lines + [""]


def target_table(res: dict, threads: int) -> list[str]:
    rows = targets(res, threads)
    if not rows:
        return []
    lines = ["## Targets\n",
             "Each target evaluated for the service on each engine; onnxruntime and the Python "
             "reference are the same baselines for both.\n",
             "| target | " + " | ".join(f"this service, {e}" for e in ENGINES.values()) + " |",
             "|---|" + "---|" * len(ENGINES)]
    for what, cells in rows:
        lines.append(f"| {what} | " + " | ".join(
            f"{cells[side][0]}: {'**met**' if cells[side][1] else '**unmet**'}"
            if side in cells else "not measured" for side in ENGINES) + " |")
    lines += ["", *limits(res, threads)]
    return lines + [""]


def limits(res: dict, threads: int) -> list[str]:
    """What bounds the targets still unmet, in this run's own numbers."""
    inf, e2e, pre = res.get("inference", {}), res.get("e2e", {}), res.get("preprocess", {})
    out = []
    one, many = inf.get("onnxruntime/1"), inf.get(f"onnxruntime/{threads}")
    if one and many:
        out.append(f"- Scaling to {threads} threads: onnxruntime itself gains "
                   f"{fmt(ratio(one['median'], many['median']))}x here, so the ONNX Runtime "
                   "engine's speed-up is the machine's; tract's multithreaded matrix products "
                   "gain less.")
    small = pre.get("600x600", {}).get("service", {}).get("decode")
    pil = pre.get("600x600", {}).get("pillow", {}).get("decode")
    if small and pil:
        out.append(f"- Around inference: decoding the 600x600 JPEG alone takes "
                   f"{fmt(small['median'])} ms (libjpeg-turbo in Pillow: {fmt(pil['median'])} ms) "
                   "of the 3 ms budget; a reduced-scale decode would be cheaper but would no "
                   "longer match Pillow's input at this size.")
    ort2 = inf.get(f"service-ort/{threads}")
    ref4 = e2e.get("reference/600x600/4")
    if ort2 and ref4:
        out.append(f"- Throughput at 600x600 is bound by inference on every side: one inference "
                   f"on {threads} threads takes {fmt(ort2['median'])} ms on the ONNX Runtime "
                   f"engine, at most {fmt(1000.0 / ort2['median'])} req/s before any decoding, "
                   f"against the reference's {fmt(ref4['throughput_rps'])} req/s; 1.8x is out "
                   "of reach while both run the same kernels on the same cores.")
    servers = res.get("servers", {})
    first = servers.get("service-ort", {}).get("peak_after_first_kib")
    ref = servers.get("reference", {}).get("peak_rss_kib")
    if first and ref:
        peak = servers.get("service-ort", {}).get("peak_rss_kib")
        out.append(f"- Memory: the ONNX Runtime engine holds {mib(first)} once its first "
                   f"prediction is done (the session with its weights and buffers), "
                   f"{share(first, ref)} of the reference's peak ({mib(ref)}) before any "
                   "concurrent request"
                   + (f"; 4 clients take it to {mib(peak)}" if peak else "") + ".")
    return out


def inference(res: dict, threads: int, noise: dict) -> list[str]:
    inf = res.get("inference", {})
    if not inf:
        return []
    busy = noise.get("sections", {}).get("inference", 0.0)
    names = {"service": "this service, tract", "service-ort": "this service, ONNX Runtime",
             "onnxruntime": "onnxruntime (Python)"}
    lines = ["## Inference only\n",
             "The same model and the same input tensor (Pillow's tensor of the 600x600 JPEG); "
             "one run, ms. This service: `examples/bench_engine.rs` on each engine (`ENGINE`), "
             "through `densenet_api::inference::load` as the service loads it; onnxruntime: "
             "`InferenceSession.run` from Python, on the same ONNX Runtime library as the "
             "service's ONNX Runtime engine.\n",
             "| engine | threads | median | p25–p75 | min | runs | vs onnxruntime |",
             "|---|---|---|---|---|---|---|"]
    for t in sorted({int(k.split("/")[1]) for k in inf}):
        for side, name in names.items():
            s, base = inf.get(f"{side}/{t}"), inf.get(f"onnxruntime/{t}")
            if not s:
                continue
            against = fmt(ratio(s["median"], base["median"])) + "x" if base else "n/a"
            lines.append(f"| {name} | {t} | {fmt(s['median'])} | {spread(s)} | "
                         f"{fmt(s['min'])} | {s['n']} | {against} |")
    if threads > 1:
        short = {"service": "tract", "service-ort": "the service's ONNX Runtime engine",
                 "onnxruntime": "Python onnxruntime"}
        speed_up = {side: ratio(inf[f"{side}/1"]["median"], inf[f"{side}/{threads}"]["median"])
                    for side in names if f"{side}/1" in inf and f"{side}/{threads}" in inf}
        lines.append(f"\nSpeed-up from 1 to {threads} threads: " + ", ".join(
            f"{short[side]} {fmt(v)}x" for side, v in speed_up.items()) + ".")
        if busy > 0.05:
            lines.append(f"Other processes took {busy * 100:.0f}% of the CPU time during these "
                         f"runs: a run on {threads} threads waits for its slowest thread, so the "
                         f"{threads}-thread times, and these speed-ups, suffer most.")
    return lines + [""]


def preprocess(res: dict) -> list[str]:
    pre = res.get("preprocess", {})
    if not pre:
        return []
    lines = ["## Pre-processing only\n",
             "Decode + resize to the model input + normalise, ms per image: "
             "`examples/bench_preprocess.rs` (the functions the service calls) against Pillow + "
             "numpy as the original service ran them.\n",
             "| image | implementation | decoded at | decode | resize | normalise | "
             "total (p25–p75) | vs Pillow |", "|---|---|---|---|---|---|---|---|"]
    for name, v in pre.items():
        for side in ("service", "pillow"):
            s = v[side]
            w, h = v["service_decoded_size"] if side == "service" else res["images"][name]["size"]
            label = "this service" if side == "service" else "Pillow + numpy"
            lines.append(
                f"| {name} | {label} | {w}x{h} | {fmt(s['decode']['median'])} | "
                f"{fmt(s['resize']['median'])} | {fmt(s['normalize']['median'])} | "
                f"{fmt(s['total']['median'])} ({spread(s['total'])}) | "
                f"{fmt(ratio(s['total']['median'], v['pillow']['total']['median']))}x |")
    lines.append("\nThe service decodes a JPEG much larger than the model input at 1/2, 1/4 or "
                 "1/8 scale straight from its DCT coefficients "
                 "(`preprocess::decode_for_input`); a full-size decode (`preprocess::decode`) "
                 "takes " + ", ".join(
                     f"{fmt(v['service']['full_decode']['median'])} ms for the {n} JPEG"
                     for n, v in pre.items()) + ".")
    return lines + [""]


def cold_start(res: dict, threads: int) -> list[str]:
    cold = res.get("cold_start", {})
    if not cold:
        return []
    lines = ["## Cold start\n",
             f"A fresh process classifies the 600x600 JPEG and exits ({threads} inference "
             "threads): `densenet-api predict IMAGE --json` on each engine against "
             "`bench/ort_predict.py` (Python starts, imports numpy, onnxruntime and Pillow, "
             "creates the session, classifies). Wall time from spawn to exit; model ready: the "
             "service's own `load_ms` (tract: read the model prepared by `densenet-api "
             "prepare-model`, as the Lambda image ships it, then optimise and plan; from the ONNX "
             "file: also parse, type and declutter; ONNX Runtime: load the library, read the "
             "file, create the session) against the `InferenceSession(...)` call; peak resident "
             "memory as GNU time reports it (`%M`).\n",
             "| process | spawn to prediction, ms (p25–p75) | model ready, ms | peak RSS | runs |",
             "|---|---|---|---|---|"]
    labels = {"service": "densenet-api predict, tract (prepared model)",
              "service-onnx": "densenet-api predict, tract from the ONNX file",
              "service-ort": "densenet-api predict, ONNX Runtime",
              "onnxruntime": "Python + onnxruntime"}
    for side, label in labels.items():
        s = cold.get(side)
        if not s:
            continue
        lines.append(f"| {label} | {fmt(s['wall_ms']['median'])} ({spread(s['wall_ms'])}) | "
                     f"{fmt(s['load_ms']['median'])} | {mib(s['rss_kib']['median'])} | "
                     f"{s['wall_ms']['n']} |")
    if "import_ms" in cold.get("onnxruntime", {}):
        lines.append(f"\nPython's imports take {fmt(cold['onnxruntime']['import_ms']['median'])} "
                     "ms of its total.")
    if res.get("servers"):
        lines.append("\nThe servers' start-up (spawn to `/health`, to the first `/predict`) and "
                     "memory are in the table at the end of the next section.")
    return lines + [""]


def end_to_end(res: dict, threads: int) -> list[str]:
    e2e = res.get("e2e", {})
    if not e2e:
        return []
    lines = ["## End to end\n",
             "Multipart `POST /predict` over loopback, keep-alive connections, from a Python "
             "client (threads + `http.client`) sharing the same cores. This service: "
             f"`densenet-api serve` with `INFERENCE_THREADS={threads}` and the default "
             "`MAX_CONCURRENT_INFERENCES` (the cores), writing its prediction log to a local "
             "file, once with `ENGINE=tract` and once with `ENGINE=onnxruntime` (whose session "
             "runs one inference at a time: a request waiting for it counts that wait in its "
             "`timings_ms.inference`). Reference: `uvicorn reference_service:app`, one process, "
             f"`intra_op_num_threads={threads}`, inference on the event loop. Latencies in ms as "
             "the client saw them; decode, resize + normalise and inference are the medians of "
             "the responses' `timings_ms`; around inference = client latency − "
             "`timings_ms.inference`. With fewer than 100 requests p99 is about the maximum. "
             "\"Raw body\": the same JPEG sent as `Content-Type: image/jpeg` instead of "
             "multipart, to the tract server.\n",
             "| server | image | clients | requests | p50 | p90 | p99 | req/s | decode | "
             "resize + normalise | inference | around inference |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for image in res.get("images", {}):
        for clients in CLIENTS:
            for side, label in ROWS.items():
                v = e2e.get(f"{side}/{image}/{clients}")
                if not v:
                    continue
                lat = v["latency_ms"]
                cut = " (cut short)" if v["truncated"] else ""
                errors = f", {v['errors']} failed" if v["errors"] else ""
                lines.append(
                    f"| {label} | {image} | {clients} | {v['requests']}{cut}{errors} | "
                    f"{fmt(lat['median'])} | {fmt(lat['p90'])} | {fmt(lat['p99'])} | "
                    f"{fmt(v['throughput_rps'])} | {fmt(v['decode_ms']['median'])} | "
                    f"{fmt(v['preprocess_ms']['median'])} | {fmt(v['inference_ms']['median'])} | "
                    f"{fmt(v['around_inference_ms']['median'])} |")
    floor = res.get("health_round_trip_ms", {})
    if floor:
        lines.append("\nThe HTTP round trip alone, `GET /health` on a keep-alive connection from "
                     "the same client: " + "; ".join(
                         f"{SIDES.get(n, n)} {fmt(v['median'])} ms (p90 {fmt(v['p90'])})"
                         for n, v in floor.items()) + ".")
    servers = res.get("servers", {})
    if servers:
        lines += ["\nThe servers, each started once for these runs: from spawn to `/health` "
                  "answering 200 and to the first `/predict` answered, then resident memory from "
                  "/proc: peak after start-up and the first prediction, peak over the whole run "
                  "(VmHWM), and resident at its end.\n",
                  "| server | ready, ms | first prediction, ms | peak after first | peak | "
                  "resident at the end |", "|---|---|---|---|---|---|"]
        for n, v in servers.items():
            lines.append(f"| {SIDES.get(n, n)} | {fmt(v.get('ready_ms'))} | "
                         f"{fmt(v.get('first_prediction_ms'))} | "
                         f"{mib(v.get('peak_after_first_kib'))} | {mib(v.get('peak_rss_kib'))} | "
                         f"{mib(v.get('rss_kib'))} |")
        loads = [f"{e} {fmt(res.get(key, {}).get('load_time_ms'))} ms" for key, e in
                 (("model_info", "tract"), ("model_info_ort", "ONNX Runtime")) if res.get(key)]
        if loads:
            lines.append("\n`/model-info` reports `load_time_ms`: " + ", ".join(loads) + ".")
    return lines + [""]


def where_time_goes(res: dict, threads: int) -> list[str]:
    """Each 1-client request split into its stages, then what concurrency and start-up add."""
    e2e, lines = res.get("e2e", {}), []
    for image in res.get("images", {}):
        for side, label in SIDES.items():
            v = e2e.get(f"{side}/{image}/1")
            if not v:
                continue
            total = v["latency_ms"]["median"]
            parts = {"decode": v["decode_ms"]["median"],
                     "resize + normalise": v["preprocess_ms"]["median"],
                     "inference": v["inference_ms"]["median"]}
            parts["HTTP, multipart, JSON and the rest"] = max(0.0, total - sum(parts.values()))
            lines.append(f"- {label}, {image} JPEG, 1 client: {fmt(total)} ms = " + " + ".join(
                f"{k} {fmt(p)} ({share(p, total)})" for k, p in parts.items()) + ".")
    inf = res.get("inference", {})
    counts = sorted({1, threads})
    alone = []
    for side, engine in {"service": "tract", "service-ort": "the ONNX Runtime engine"}.items():
        keys = [(f"{side}/{t}", f"onnxruntime/{t}") for t in counts]
        if not all(a in inf and b in inf for a, b in keys):
            continue
        medians = " and ".join(fmt(ratio(inf[a]["median"], inf[b]["median"])) + "x"
                               for a, b in keys)
        fastest = " and ".join(fmt(ratio(inf[a]["min"], inf[b]["min"])) + "x" for a, b in keys)
        alone.append(f"{engine} {medians} (fastest runs: {fastest})")
    if alone:
        lines.append("- Inference alone, same tensor, as a multiple of Python onnxruntime's time "
                     f"on {' and '.join(map(str, counts))} thread(s): " + "; ".join(alone) + ".")
    floor = res.get("health_round_trip_ms", {}).get("service")
    raw_vs = [(image, e2e[f"service/{image}/1"], e2e[f"service-raw/{image}/1"])
              for image in res.get("images", {})
              if f"service/{image}/1" in e2e and f"service-raw/{image}/1" in e2e]
    if floor and raw_vs:
        lines.append(
            f"- Of the rest, the HTTP round trip itself is {fmt(floor['median'])} ms (`GET "
            "/health`), and multipart parsing is visible as the difference with a raw body; "
            "around inference, multipart against raw: " + "; ".join(
                f"{image} {fmt(m['around_inference_ms']['median'])} against "
                f"{fmt(r['around_inference_ms']['median'])} ms" for image, m, r in raw_vs) + ".")
    for image in res.get("images", {}):
        for side, engine in ENGINES.items():
            one, four = e2e.get(f"{side}/{image}/1"), e2e.get(f"{side}/{image}/4")
            if not (one and four):
                continue
            why = (f"up to `MAX_CONCURRENT_INFERENCES` inferences of {threads} threads each "
                   "share the cores, and the other requests wait for a permit (part of the time "
                   f"around inference, {fmt(four['around_inference_ms']['median'])} ms)"
                   if side == "service" else
                   "its one session runs one inference at a time, so the median includes the "
                   "wait for the previous requests' inferences (the permits of "
                   "`MAX_CONCURRENT_INFERENCES` let more requests in than it runs at once); "
                   f"around inference {fmt(four['around_inference_ms']['median'])} ms")
            lines.append(
                f"- With 4 clients ({image}), the median inference of the service on {engine} "
                f"goes from {fmt(one['inference_ms']['median'])} to "
                f"{fmt(four['inference_ms']['median'])} ms: {why}.")
    cold = res.get("cold_start", {})
    what = {"service": "reading the prepared model, optimising and planning it",
            "service-ort": "loading ONNX Runtime, reading the model and creating the session"}
    for side, engine in ENGINES.items():
        s = cold.get(side)
        if s:
            lines.append(f"- Cold start on {engine}: of the service's "
                         f"{fmt(s['wall_ms']['median'])} ms from spawn to prediction, "
                         f"{fmt(s['load_ms']['median'])} ms "
                         f"({share(s['load_ms']['median'], s['wall_ms']['median'])}) is "
                         f"{what[side]}.")
    for side, v in res.get("servers", {}).items():
        peak, early = v.get("peak_rss_kib"), v.get("peak_after_first_kib")
        if peak and early:
            when = ("start-up (loading the model) and the first request"
                    if early >= 0.9 * peak else "the requests that followed start-up")
            lines.append(f"- Memory, {SIDES.get(side, side)}: {mib(early)} of its {mib(peak)} "
                         f"peak was reached by the end of its first prediction, so {when} set "
                         "the peak.")
    if not lines:
        return []
    return ["## Where the time goes\n",
            "Medians of the runs above; the rest is client latency minus the server's own "
            "timings (network stack, HTTP parsing, multipart, the JSON answer, the prediction "
            "log, queueing).\n", *lines, ""]


def lambda_estimates(inf: dict, side: str, threads: int) -> list[dict]:
    """Estimated inference duration and cost per million predictions of the engine `side` for
    each Lambda memory size, from the measured 1- and N-thread medians (see lambda_cost)."""
    one = inf.get(f"{side}/1", {}).get("median")
    many = inf.get(f"{side}/{threads}", {}).get("median")
    rows = []
    for memory in LAMBDA_SIZES_MB:
        if memory <= LAMBDA_FULL_VCPU_MB:
            vcpus = memory / LAMBDA_FULL_VCPU_MB
            basis, ms = "1 thread", one * LAMBDA_FULL_VCPU_MB / memory if one else None
            if memory < LAMBDA_FULL_VCPU_MB:
                basis += f" × {LAMBDA_FULL_VCPU_MB}/{memory}"
        else:
            vcpus = 1.7 if memory < 3538 else 2.0
            if threads == 1:  # one thread uses one vCPU, however many there are
                basis, ms = "1 thread", one
            elif threads == 2:
                basis = "2 threads" + (" × 2/1.7" if vcpus < 2 else "")
                ms = many * 2 / vcpus if many else None
            else:
                basis, ms = f"needs a run with `--threads 2` (this one: {threads})", None
        row = {"memory": memory, "vcpus": vcpus, "basis": basis, "ms": ms, "cost": None}
        if ms is not None:
            billed_s = math.ceil(ms) / 1000.0  # Lambda bills whole milliseconds
            compute = billed_s * memory / 1024 * LAMBDA_GB_SECOND_USD * 1e6
            row.update(compute=compute, cost=compute + LAMBDA_REQUEST_USD * 1e6)
        rows.append(row)
    return rows


def lambda_cost(res: dict, threads: int, noise: dict) -> list[str]:
    inf = res.get("inference", {})
    estimates = {side: lambda_estimates(inf, side, threads) for side in ENGINES
                 if f"{side}/1" in inf}
    if not estimates:
        return []
    lines = ["## Lambda memory setting and cost per prediction\n",
             "**An estimate, not a measurement on Lambda**: the inference medians measured above "
             f"(1 and {threads} threads, this machine's CPU) carried over to Lambda's CPU "
             "allocation, which grows with the memory setting. Assumptions: one function "
             f"instance serves one request at a time; {LAMBDA_FULL_VCPU_MB} MB buys one full "
             "vCPU, and below that one thread gets memory/1769 of a core, so the inference takes "
             f"the 1-thread time × {LAMBDA_FULL_VCPU_MB}/memory; 3008 MB gives about 1.7 vCPUs "
             "(the 2-thread time × 2/1.7) and 3538 MB about 2 (the 2-thread time); Lambda's "
             "vCPUs are as fast as this machine's cores. Cost per million predictions: the "
             "billed inference duration (rounded up to the millisecond) × memory/1024 GB × "
             f"${LAMBDA_GB_SECOND_USD:.10f} per GB-second (x86), plus "
             f"${LAMBDA_REQUEST_USD * 1e6:.2f} per million requests. Not counted: decoding and "
             "pre-processing (a few ms for a 600x600 JPEG, tens of ms for 12 MP, see above), "
             "the rest of the request, cold starts, and API Gateway.\n",
             "| engine | memory | vCPUs | from the median on | inference, ms (estimate) | "
             "compute, $ per million | total, $ per million | |",
             "|---|---|---|---|---|---|---|---|"]
    def best(rows: list[tuple[str, dict]], key: str) -> list[tuple[str, dict]]:
        """The rows within 1% of the lowest `key`: closer than that is a tie for an estimate."""
        low = min((r[key] for _, r in rows), default=None)
        return [(side, r) for side, r in rows if low is not None and r[key] <= low * 1.01]

    every = [(side, r) for side, rows in estimates.items() for r in rows if r["cost"] is not None]
    for side, rows in estimates.items():
        known = [(side, r) for r in rows if r["cost"] is not None]
        cheapest = [r for _, r in best(known, "cost")]
        fastest = [r for _, r in best(known, "ms")]
        for r in rows:
            marks = [m for m, winners in (("cheapest", cheapest), ("fastest", fastest))
                     if any(w is r for w in winners)]
            mark = f"**{' and '.join(marks)}** on {ENGINES[side]}" if marks else ""
            lines.append(
                f"| {ENGINES[side]} | {r['memory']} MB | {r['vcpus']:.2f} | {r['basis']} | "
                f"{fmt(r['ms'])} | {fmt(r.get('compute'))} | {fmt(r['cost'])} | {mark} |")
    if every:
        def named(rows: list[tuple[str, dict]]) -> str:
            return " and ".join(f"{ENGINES[side]} at {r['memory']} MB ({fmt(r['ms'])} ms, about "
                                f"${r['cost']:.2f} per million)" for side, r in rows)

        lines.append(f"\nOf all these (estimates within 1% of each other count as a tie), the "
                     f"cheapest is {named(best(every, 'cost'))}; the fastest is "
                     f"{named(best(every, 'ms'))}. Below 1769 MB the duration grows as the "
                     "memory shrinks, so the compute cost stays about the same while each "
                     "prediction gets slower; above it, more memory pays only as far as the "
                     f"{threads}-thread time beats the 1-thread time.")
    if threads > 1 and noise.get("sections", {}).get("inference", 0.0) > 0.05:
        lines.append("Other processes shared this machine while inference was measured, which "
                     f"slows the {threads}-thread runs most (see above): the estimates for 3008 "
                     "and 3538 MB are pessimistic.")
    peaks = {side: res.get("servers", {}).get(side, {}).get("peak_rss_kib") for side in estimates}
    if any(peaks.values()):
        small = min(LAMBDA_SIZES_MB)
        lines.append("\nMemory itself: the servers' peak resident memory in the end-to-end runs "
                     "(4 clients at once) was " + ", ".join(
                         f"{mib(k)} on {ENGINES[side]}" for side, k in peaks.items() if k)
                     + (f", below the smallest size here ({small} MB)."
                        if all(k and k / 1024 < small for k in peaks.values())
                        else "; a size below that peak may not hold it."))
    return lines + [""]


def tract_profile(res: dict) -> list[str]:
    prof = res.get("tract_profile")
    if not prof:
        return []
    total = prof["total_ms"]
    ops = sorted(prof["ops"], key=lambda o: -o["ms"])
    lines = ["## Where tract spends its time\n",
             f"`examples/profile_tract.rs` (run by the benchmark): the model loaded from the ONNX "
             f"file stage by stage, then {prof['runs']} inferences on 1 thread with every node of "
             f"the optimised plan ({prof['nodes']} nodes) timed; each operator's median time per "
             "run.\n",
             "| load stage | ms |", "|---|---:|"]
    lines += [f"| {s['stage']} | {fmt(s['ms'])} |" for s in prof["load"]]
    lines += ["", "| operator | ms per run | share |", "|---|---:|---:|"]
    lines += [f"| {o['op']} | {fmt(o['ms'])} | {share(o['ms'], total)} |" for o in ops
              if o["ms"] >= 0.005 * total]
    rest = sum(o["ms"] for o in ops if o["ms"] < 0.005 * total)
    lines.append(f"| others (each under 0.5%) | {fmt(rest)} | {share(rest, total)} |")
    lines.append(f"| **one inference** | **{fmt(total)}** | 100% |")
    by = {o["op"]: o["ms"] for o in ops}
    matmul = by.get("OptMatMul", 0.0) + by.get("OptMatMulPack", 0.0)
    inf = res.get("inference", {})
    ort = inf.get("onnxruntime/1", {}).get("median")
    stages = {s["stage"]: s["ms"] for s in prof["load"]}
    graph_work = sum(ms for name, ms in stages.items()
                     if name in ("read + parse the protobuf", "build the inference graph",
                                 "analyse + type", "declutter"))
    lines.append("")
    lines.append(
        f"What remains on tract is its matrix products: the convolutions run as packed matrix "
        f"multiplications (OptMatMul, with OptMatMulPack packing their inputs), "
        f"{fmt(matmul)} ms of a {fmt(total)} ms inference ({share(matmul, total)})"
        + (f", more than onnxruntime's whole inference ({fmt(ort)} ms on 1 thread)" if ort
           and matmul > ort else "")
        + ". The graph around them (the fused batch-norm + ReLU chains, the padding before each "
        "3x3 convolution, DenseNet's concatenations, the pooling) is the remainder, so no "
        "change to the graph can close the gap: it lies in the convolution kernels, tract's own "
        "against onnxruntime's (MLAS, which runs these convolutions in a blocked NCHWc layout "
        "after its graph optimisations). That is why the service also offers ONNX Runtime as an "
        "engine. At load, "
        f"{fmt(graph_work)} ms of the stages above (parse, build, type, declutter) are what "
        "`densenet-api prepare-model` does once, ahead of time, so the Lambda image pays only "
        "for reading the prepared model and the final optimisation.")
    return lines + [""]


def write_report(path: Path, res: dict, meta: dict) -> None:
    threads = meta["threads"]
    sections: list[Callable[[], list[str]]] = [
        lambda: header(res, meta), lambda: correctness(res),
        lambda: target_table(res, threads), lambda: inference(res, threads, meta["noise"]),
        lambda: tract_profile(res),
        lambda: preprocess(res), lambda: cold_start(res, threads),
        lambda: end_to_end(res, threads), lambda: where_time_goes(res, threads),
        lambda: lambda_cost(res, threads, meta["noise"])]
    lines = [line for section in sections for line in section()]
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


if __name__ == "__main__":
    # Re-renders a report from a run's results.json: python3 bench/report.py RESULTS REPORT
    import json
    import sys

    saved = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    write_report(Path(sys.argv[2]), {k: v for k, v in saved.items() if k != "meta"},
                 saved["meta"])

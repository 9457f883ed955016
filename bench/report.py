"""The Markdown report of bench/run.py: the run's conditions, the checks, the targets, one section
per measurement and a breakdown of where the time goes, all computed from the results."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

CLIENTS = (1, 4)
SIDES = {"service": "this service", "reference": "Python reference"}
STEPS = {"inference": "inference only", "preprocess": "pre-processing",
         "cold_start": "cold start", "end_to_end": "end to end"}
ROWS = {**SIDES, "service-raw": "this service, raw body"}


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


def targets(res: dict, threads: int) -> list[tuple[str, str, bool]]:
    """Each target of the issue: (what, measured, met)."""
    rows: list[tuple[str, str, bool]] = []
    inf = res.get("inference", {})
    if inf:
        a, b = inf["service/1"]["median"], inf["onnxruntime/1"]["median"]
        rows.append(("Inference on 1 thread at most 1.25x onnxruntime's",
                     f"{fmt(ratio(a, b))}x ({fmt(a)} vs {fmt(b)} ms)", ratio(a, b) <= 1.25))
        if threads > 1 and f"service/{threads}" in inf:
            n = inf[f"service/{threads}"]["median"]
            rows.append((f"Inference on {threads} threads at least 1.7x faster than on 1 thread",
                         f"{fmt(ratio(a, n))}x ({fmt(n)} vs {fmt(a)} ms)", ratio(a, n) >= 1.7))
    e2e = res.get("e2e", {})
    if "service/600x600/1" in e2e:
        around = e2e["service/600x600/1"]["around_inference_ms"]
        rows.append(("Everything around inference of a 600x600 JPEG /predict at most 3 ms "
                     "(client latency − `timings_ms.inference`, 1 client, median)",
                     f"{fmt(around['median'])} ms (p90 {fmt(around['p90'])} ms)",
                     around["median"] <= 3.0))
    a, b = e2e.get("service/12MP/1"), e2e.get("reference/12MP/1")
    if a and b:
        speed = ratio(b["latency_ms"]["median"], a["latency_ms"]["median"])
        rows.append((f"12-MP JPEG /predict at least 2x faster than the Python reference "
                     f"({threads} inference threads each, 1 client, median)",
                     f"{fmt(speed)}x ({fmt(a['latency_ms']['median'])} vs "
                     f"{fmt(b['latency_ms']['median'])} ms)", speed >= 2.0))
    servers = res.get("servers", {})
    peaks = [servers.get(s, {}).get("peak_rss_kib") for s in SIDES]
    memory = ratio(peaks[0], peaks[1]) if all(peaks) else float("nan")
    for image in res.get("images", {}):
        a, b = e2e.get(f"service/{image}/4"), e2e.get(f"reference/{image}/4")
        if a and b:
            speed = ratio(a["throughput_rps"], b["throughput_rps"])
            rows.append((f"Throughput with 4 clients ({image} JPEG) at least 1.8x the Python "
                         "reference's, with peak memory under half",
                         f"{fmt(speed)}x ({fmt(a['throughput_rps'])} vs "
                         f"{fmt(b['throughput_rps'])} req/s); memory {fmt(memory)}x "
                         f"({mib(peaks[0])} vs {mib(peaks[1])})", speed >= 1.8 and memory < 0.5))
    cold = res.get("cold_start", {})
    if cold:
        a, b = cold["service"]["load_ms"]["median"], cold["onnxruntime"]["load_ms"]["median"]
        rows.append(("Cold start to ready (model load + optimisation) at most 2x onnxruntime's "
                     "session creation", f"{fmt(ratio(a, b))}x ({fmt(a)} vs {fmt(b)} ms)",
                     ratio(a, b) <= 2.0))
    return rows


def header(res: dict, meta: dict) -> list[str]:
    m, info, noise = meta["machine"], res.get("model_info", {}), meta["noise"]
    threads = meta["threads"]
    stand_in = (" — the random-weight stand-in of `scripts/make-test-model.py`: the real model's "
                "topology and cost, meaningless classes" if meta["test_model"] else "")
    shared = noise["others_share"] > 0.05
    return [
        "# Benchmarks\n",
        "This service (Rust, tract) against onnxruntime and against the Python service it "
        "replaced (FastAPI + Pillow + onnxruntime, `bench/reference_service.py`), measured side "
        "by side in one run by the command below (`--help` explains it; `bench/run.py` holds "
        "the method). The raw numbers of a run are written to `bench/out/results.json`.\n",
        "```sh\n" + meta["command"] + "\n```\n",
        f"- Date: {meta['date']}; the run took {meta['duration_s']:.0f} s"
        + (" (quick mode: few repetitions, indicative only)" if meta["quick"] else "") + ".",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM; {m['os']}, "
        f"Linux {m['kernel']}.",
        "- Versions: " + "; ".join(f"{k} {v.removeprefix(k + ' ')}"
                                   for k, v in meta["versions"].items()) + ".",
        f"- Model: `{meta['model_name']}` (sha256 `{info.get('model_sha256', '?')[:16]}…`, "
        f"{info.get('parameters', '?')} parameters, opset {info.get('opset_version', '?')}, "
        f"input {info.get('input_shape', '?')}){stand_in}.",
        "- Images, made by `bench/run.py` (deterministic, photo-like, JPEG quality 90): "
        + ", ".join(f"{n}: {v['size'][0]}x{v['size'][1]}, {v['bytes'] / 1e6:.2f} MB"
                    for n, v in res.get("images", {}).items()) + ".",
        f"- N = {threads} (the cores): where a measurement says N threads, the service runs "
        f"with `INFERENCE_THREADS={threads}` and onnxruntime with "
        f"`intra_op_num_threads={threads}`.",
        f"- Load from other processes: {noise['others_share'] * 100:.0f}% of the machine's CPU "
        "time during the run (" + "".join(
            f"{STEPS[k]} {v * 100:.0f}%, " for k, v in noise.get("sections", {}).items()
            if k in STEPS)
        + f"load average {noise['load_start']} at the start, {noise['load_end']} at the end)"
        + ("; **the machine was shared**, so absolute times are inflated and spreads wide. The "
           "two sides alternate round by round, which keeps their ratios fairer than the "
           "absolute numbers." if shared else "; the machine was otherwise quiet.") + "\n",
        "Statistics: medians, with the interquartile range (p25–p75) as the spread, over all "
        "rounds; in each measurement the two sides alternate round by round.\n",
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
    lines = ["## Targets\n", "| target | measured | |", "|---|---|---|"]
    for what, measured, ok in targets(res, threads):
        lines.append(f"| {what} | {measured} | {'**met**' if ok else '**unmet**'} |")
    return lines + [""]


def inference(res: dict, threads: int, noise: dict) -> list[str]:
    inf = res.get("inference", {})
    if not inf:
        return []
    busy = noise.get("sections", {}).get("inference", 0.0)
    lines = ["## Inference only\n",
             "The same model and the same input tensor (Pillow's tensor of the 600x600 JPEG); "
             "one run, ms. This service: `examples/bench_engine.rs`, through "
             "`densenet_api::inference::load` as the service loads it; onnxruntime: "
             "`InferenceSession.run` from Python.\n",
             "| engine | threads | median | p25–p75 | min | runs | vs onnxruntime |",
             "|---|---|---|---|---|---|---|"]
    for key in sorted(inf, key=lambda k: (int(k.split("/")[1]), not k.startswith("service"))):
        side, t = key.split("/")
        s = inf[key]
        name = "this service (tract)" if side == "service" else "onnxruntime"
        lines.append(f"| {name} | {t} | {fmt(s['median'])} | {spread(s)} | {fmt(s['min'])} | "
                     f"{s['n']} | {fmt(ratio(s['median'], inf[f'onnxruntime/{t}']['median']))}x |")
    if threads > 1:
        lines.append(f"\nSpeed-up from 1 to {threads} threads: " + ", ".join(
            f"{'this service' if side == 'service' else 'onnxruntime'} "
            f"{fmt(ratio(inf[f'{side}/1']['median'], inf[f'{side}/{threads}']['median']))}x"
            for side in ("service", "onnxruntime")) + ".")
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
             "threads): `densenet-api predict IMAGE --json` against `bench/ort_predict.py` "
             "(Python starts, imports numpy, onnxruntime and Pillow, creates the session, "
             "classifies). Wall time from spawn to exit; model ready: the service's own "
             "`load_ms` (read, parse, optimise, plan) against the `InferenceSession(...)` call; "
             "peak resident memory as GNU time reports it (`%M`).\n",
             "| process | spawn to prediction, ms (p25–p75) | model ready, ms | peak RSS | runs |",
             "|---|---|---|---|---|"]
    for side, label in (("service", "densenet-api predict"),
                        ("onnxruntime", "Python + onnxruntime")):
        s = cold[side]
        lines.append(f"| {label} | {fmt(s['wall_ms']['median'])} ({spread(s['wall_ms'])}) | "
                     f"{fmt(s['load_ms']['median'])} | {mib(s['rss_kib']['median'])} | "
                     f"{s['wall_ms']['n']} |")
    if "import_ms" in cold["onnxruntime"]:
        lines.append(f"\nPython's imports take {fmt(cold['onnxruntime']['import_ms']['median'])} "
                     "ms of its total.\n")
    servers = res.get("servers", {})
    if servers:
        lines.append(
            "The servers of the end-to-end runs, started once each, from spawn to `/health` "
            "answering 200 and to the first `/predict` answered: " + "; ".join(
                f"{SIDES[n]} {fmt(v['ready_ms'])} and {fmt(v['first_prediction_ms'])} ms"
                for n, v in servers.items())
            + f". The service's `/model-info` reports `load_time_ms` "
            f"{fmt(res.get('model_info', {}).get('load_time_ms'))}.")
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
             "file. Reference: `uvicorn reference_service:app`, one process, "
             f"`intra_op_num_threads={threads}`, inference on the event loop. Latencies in ms as "
             "the client saw them; decode, resize + normalise and inference are the medians of "
             "the responses' `timings_ms`; around inference = client latency − "
             "`timings_ms.inference`. With fewer than 100 requests p99 is about the maximum. "
             "\"Raw body\": the same JPEG sent as `Content-Type: image/jpeg` instead of "
             "multipart.\n",
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
                         f"{SIDES[n]} {fmt(v['median'])} ms (p90 {fmt(v['p90'])})"
                         for n, v in floor.items()) + ".")
    servers = res.get("servers", {})
    if servers:
        lines.append("\nResident memory of each server (from /proc): peak over its whole life "
                     "(VmHWM), peak after start-up and its first prediction, and resident at the "
                     "end of the run: " + "; ".join(
                         f"{SIDES[n]} {mib(v.get('peak_rss_kib'))}, "
                         f"{mib(v.get('peak_after_first_kib'))} and {mib(v.get('rss_kib'))}"
                         for n, v in servers.items()) + ".")
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
    if "service/1" in inf and f"service/{threads}" in inf:
        lines.append(
            "- Inference alone, same tensor: tract takes "
            f"{fmt(ratio(inf['service/1']['median'], inf['onnxruntime/1']['median']))}x "
            f"onnxruntime's time on 1 thread and "
            f"{fmt(ratio(inf[f'service/{threads}']['median'], inf[f'onnxruntime/{threads}']['median']))}x "
            f"on {threads}; the fastest runs give "
            f"{fmt(ratio(inf['service/1']['min'], inf['onnxruntime/1']['min']))}x and "
            f"{fmt(ratio(inf[f'service/{threads}']['min'], inf[f'onnxruntime/{threads}']['min']))}x.")
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
        one, four = e2e.get(f"service/{image}/1"), e2e.get(f"service/{image}/4")
        if one and four:
            lines.append(
                f"- With 4 clients ({image}), the service's median inference goes from "
                f"{fmt(one['inference_ms']['median'])} to {fmt(four['inference_ms']['median'])} "
                f"ms: up to `MAX_CONCURRENT_INFERENCES` inferences of {threads} threads each "
                "share the cores, and the other requests wait for a permit (part of the time "
                f"around inference, {fmt(four['around_inference_ms']['median'])} ms).")
    cold = res.get("cold_start", {})
    if cold:
        s = cold["service"]
        lines.append(f"- Cold start: of the service's {fmt(s['wall_ms']['median'])} ms from "
                     f"spawn to prediction, {fmt(s['load_ms']['median'])} ms "
                     f"({share(s['load_ms']['median'], s['wall_ms']['median'])}) is reading, "
                     "parsing, optimising and planning the model.")
    for side, v in res.get("servers", {}).items():
        peak, early = v.get("peak_rss_kib"), v.get("peak_after_first_kib")
        if peak and early:
            when = ("start-up (loading the model) and the first request"
                    if early >= 0.9 * peak else "the requests that followed start-up")
            lines.append(f"- Memory, {SIDES[side]}: {mib(early)} of its {mib(peak)} peak was "
                         f"reached by the end of its first prediction, so {when} set the peak.")
    if not lines:
        return []
    return ["## Where the time goes\n",
            "Medians of the runs above; the rest is client latency minus the server's own "
            "timings (network stack, HTTP parsing, multipart, the JSON answer, the prediction "
            "log, queueing).\n", *lines, ""]


def write_report(path: Path, res: dict, meta: dict) -> None:
    threads = meta["threads"]
    sections: list[Callable[[], list[str]]] = [
        lambda: header(res, meta), lambda: correctness(res),
        lambda: target_table(res, threads), lambda: inference(res, threads, meta["noise"]),
        lambda: preprocess(res), lambda: cold_start(res, threads),
        lambda: end_to_end(res, threads), lambda: where_time_goes(res, threads)]
    lines = [line for section in sections for line in section()]
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")

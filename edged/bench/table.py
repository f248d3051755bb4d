"""The table `edged bench` prints, and its figures checked against the targets.

Pure functions of the report dict, so the JSON and the table never disagree.
"""

from __future__ import annotations

from typing import Any

from edged.bench.rows import STAGES

TARGET_MODEL = "mobilenetv2_224_int8.tflite"
BACKLOG_US = 100_000  # receipt - published_at beyond this: results stood in a queue


def _us(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"edged bench: {m['cpu']} ({m['cores']} cores), {m['runtime']}, "
             f"{report['threads']} threads, delegate {report['delegate']}; "
             f"{report['runs']} runs x {report['frames']} frames after warm-up, medians",
             ""]
    head = (f"{'row':<17}{'frames/s':>9} {'(min-max)':>13}{'ratio':>7}"
            + "".join(f"{s[:7]:>8}" for s in STAGES) + f"{'RSS MB':>8}")
    lines += [head + "   (stage columns: microseconds per frame)"]
    group = None
    limit: dict[str, Any] | None = None
    for r in report["rows"]:
        if (r["model"], r["source"]) != group:
            group = (r["model"], r["source"])
            lines.append(f"-- {r['model']}, {r['source']} frames")
            limit = None
        if r["row"] == "limit":
            limit = r
        st = r["stages_us"]
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "-"
        noise = f"{r['fps_min']:.0f}-{r['fps_max']:.0f}"
        lines.append(f"{r['title']:<17}{r['fps']:>9.1f} {noise:>13}{ratio:>7}"
                     + "".join(f"{_us(st.get(s)):>8}" for s in STAGES)
                     + f"{r['peak_rss_mb']:>8.0f}")
        if "latency_ms" in r:
            lat = r["latency_ms"]
            lines.append(f"{'':<17}latency capture->receipt p50 {lat['p50']:.1f} ms, "
                         f"p95 {lat['p95']:.1f} ms, p99 {lat['p99']:.1f} ms "
                         f"(invoke p99 {r['invoke_ms']['p99']:.1f} ms)")
        if "spread" in r:
            lines.append(f"{'':<17}{r['title']} offered {r['offered_fps']:.0f} "
                         f"frames/s together; spread of their results {r['spread']:.1%} "
                         f"(worst run {r['spread_max']:.1%})")
        if r.get("cascade_us") and r.get("classifier_limit_us"):
            crop_us = r["cascade_us"]["classify"] / r["crops"]
            lines.append(f"{'':<17}in the cascade: the classifier {crop_us:.0f} us a crop (its "
                         f"limit row {r['classifier_limit_us']:.0f}), cutting the crops "
                         f"{r['cascade_us']['crop']:.0f} us a frame")
        if "cpu_us_per_result" in r:
            lines.append(f"{'':<17}CPU per result: " + ", ".join(
                f"{k} {v:.0f} us" for k, v in r["cpu_us_per_result"].items()))
        if r.get("threads_us_per_result"):
            by_thread = dict(r["threads_us_per_result"])
            switches = by_thread.pop("context switches", 0.0)
            lines.append(f"{'':<17}the daemon's threads per result: " + ", ".join(
                f"{k.removeprefix('edged-')} {v:.0f} us"
                for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v >= 1)
                + f"; {switches:.1f} context switches")
        if r.get("ceiling") and r.get("ratio") is not None:
            cores = m["cores"]
            lines.append(f"{'':<17}ceiling {cores} x invoke / ({cores} x invoke + the "
                         f"daemon's CPU per result) {r['ceiling']:.2f}; the ratio is "
                         f"{r['ratio'] / r['ceiling']:.2f} of it")
            if r.get("ceiling_all"):
                lines.append(f"{'':<17}with the broker, subscriber and bench on these cores "
                             f"too: ceiling {r['ceiling_all']:.2f}, the ratio "
                             f"{r['ratio'] / r['ceiling_all']:.2f} of it")
        waited = st.get("publish") or 0.0
        if waited > BACKLOG_US:
            # Then results/s is how fast the MQTT path drains a standing queue, not
            # what the pipeline produces (a lost wake-up once hid behind this).
            lines.append(f"{'':<17}results waited {waited / 1000:.0f} ms in the publisher's "
                         "queue: the MQTT path, not the model, set this row's pace")
        elif r["row"] in ("daemon", "accelerator") and r["fps"] > 0:
            lines.append(f"{'':<17}{_worker_time(r, limit)}")
        elif r["row"] == "floor":
            lines.append(f"{'':<17}no invoke waited for, no interpreter on the cores: the "
                         "daemon's CPU per result above is this design's floor")
    lines += ["", "daemon: resize..dequantize are the daemon's own timings_us; 'publish' is "
              "receipt minus published_at (encode + MQTT + broker + subscriber); "
              "RSS = daemon + worker."]
    if "micro" in report:
        lines.append("")
        lines.append("hot path (microseconds per call, median (min-max)):")
        for name, f in report["micro"].items():
            lines.append(f"  {name:<32}{f['us']:>8.1f}  ({f['min']:.1f}-{f['max']:.1f})"
                         f"  target < {f['target_us']:.0f}")
    if "latency_30fps" in report:
        lat = report["latency_30fps"]
        lines.append("")
        lines.append(f"latency at {lat['offered_fps']:.0f} frames/s offered ({lat['model']}, "
                     f"{lat['results']} results): p50 {lat['latency_ms']['p50']:.2f} ms, "
                     f"p95 {lat['latency_ms']['p95']:.2f} ms, p99 {lat['latency_ms']['p99']:.2f} "
                     f"ms; invoke p50 {lat['invoke_ms']['p50']:.2f} ms, "
                     f"p99 {lat['invoke_ms']['p99']:.2f} ms")
    if "rss_growth" in report:
        g = report["rss_growth"]
        parts = [f"in-process {g['inprocess_kb']:+d} kB"]
        if "daemon_kb" in g:
            parts.append(f"daemon+worker {g['daemon_kb']:+d} kB")
        lines.append("")
        lines.append(f"RSS growth over {g['frames']} frames after warm-up ({g['model']}): "
                     + ", ".join(parts))
    for note in report.get("notes", ()):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _worker_time(r: dict[str, Any], limit: dict[str, Any] | None) -> str:
    """A daemon result's interval at saturation, split on the worker's clock.

    The worker has a frame waiting whenever it finishes one, so its interval is
    invoke + quantize + the rest (copying outputs, its socket, being preempted):
    what separates the row from the limit, and which of the two grew."""
    st = r["stages_us"]
    per_result = 1e6 / r["fps"]
    invoke, quantize = st.get("invoke") or 0.0, st.get("quantize") or 0.0
    text = f"per result {per_result:.0f} us: invoke {invoke:.0f}"
    if limit is not None and limit.get("stages_us", {}).get("invoke"):
        text += f" (limit row {limit['stages_us']['invoke']:.0f})"
    if r.get("row") == "accelerator":
        # The next frame is quantized while the device runs this one (its twin
        # interpreter, edged.inference.overlap): only the rest lies between invokes.
        text += (f", quantize {quantize:.0f} (beside the invoke), the worker between "
                 f"invokes {per_result - invoke:.0f}")
        return text
    between = per_result - invoke - quantize
    text += f", quantize {quantize:.0f}, the worker between invokes {between:.0f}"
    offered = r.get("offered_fps") or 0.0
    if offered and r["fps"] >= 0.95 * offered:
        # Not saturated: the source's cap (tiny models) sets the pace, and the
        # worker's time between invokes is mostly waiting for the next frame.
        text += f" (mostly waiting: frames are offered at {offered:.0f}/s)"
    return text


def cores_note(threads: int, cores: int, rows: tuple[str, ...]) -> str | None:
    """Said under a table whose daemon row shares every core with the interpreter.

    Measured here (BENCHMARKS.md, fourth round): on 2 cores the same daemon reads
    0.69-0.78 of the limit with 2 threads and 0.93-0.97 with 1, and the 2 threads
    still give more results/s; the ratio alone would read as edged's overhead."""
    if "daemon" not in rows or threads < cores:
        return None
    if cores == 1:
        return "one core: the daemon's own threads run in the invoke's time"
    return (f"the interpreter's {threads} threads use all {cores} cores, so the daemon's "
            "own threads (capture, pipeline, MQTT), the broker and the subscriber run in "
            "the invoke's time: the daemon row's ratio is lower than beside a free core "
            f"(--threads {cores - 1} shows that case)")


def _row(report: dict[str, Any], model: str, row: str, source: str = ""
         ) -> dict[str, Any] | None:
    """The row at `source` frames; "" for the model's own input size (the first group)."""
    found: list[dict[str, Any]] = [r for r in report["rows"] if r["model"] == model
                                   and r["row"] == row and (r["source"] == source or not source)]
    return found[0] if found else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target the report has figures for: what, measured, bar, met."""
    out: list[dict[str, Any]] = []

    def add(what: str, value: float, bar: float, higher_is_better: bool) -> None:
        met = value >= bar if higher_is_better else value < bar
        out.append({"target": what, "value": round(value, 3), "bar": bar, "met": met})

    for row, bar in (("daemon", 0.90), ("inprocess", 0.95)):
        r = _row(report, TARGET_MODEL, row)
        if r is not None and r.get("ratio") is not None and report["threads"] == 2:
            add(f"{row}/limit results/s, {TARGET_MODEL}, 2 threads", r["ratio"], bar, True)
    # Camera-size frames (issue 21): the daemon against the limit at the same size.
    for source, bar in (("640x480", 0.85), ("1280x720", 0.80), ("1920x1080", 0.80)):
        r = _row(report, TARGET_MODEL, "daemon", source)
        if r is not None and r.get("ratio") is not None and report["threads"] == 2:
            add(f"daemon/limit results/s at {source}, {TARGET_MODEL}, 2 threads", r["ratio"],
                bar, True)
    for r in report["rows"]:
        if r["row"] == "daemon" and r.get("model_size") and r.get("cpu_us_per_result"):
            # Issue 21: a Pi's CPU budget. The daemon's own threads, capture to publish
            # (the worker's invoke is not in it), at frames of the model's size.
            add(f"daemon CPU per result, {r['model']} (us)",
                r["cpu_us_per_result"]["daemon"], 200.0, False)
            if r.get("ceiling") and r.get("ratio") is not None:
                add(f"daemon/limit over its ceiling, {r['model']}, {report['threads']} threads",
                    r["ratio"] / r["ceiling"], 0.97, True)
        if r["row"] == "cameras" and r.get("ratio") is not None and r.get("model_bound"):
            # Issue 17: the model shared by N cameras, a core left free, evenly.
            add(f"{r['title']}/limit results/s, {r['model']}, 1 thread", r["ratio"], 0.90, True)
            if r["cameras"] > 1:
                add(f"{r['title']}: spread of their results", r["spread"], 0.10, False)
        if r["row"] == "cascade" and r.get("ratio") is not None:
            # Issue 17: the classifier's crops in the detector's worker, no gap between.
            add(f"{r['title']}/the two models' limits, {r['model']}, 1 thread", r["ratio"],
                0.90, True)
        if r["row"] == "accelerator" and r.get("ratio") is not None:
            add(f"accelerator results/s x invoke time, {r['model']}", r["ratio"], 0.97, True)
    lat = report.get("latency_30fps")
    if lat:
        add("latency p99 - invoke p99 at 30 fps offered (ms)",
            lat["latency_ms"]["p99"] - lat["invoke_ms"]["p99"], 3.0, False)
    for name, f in report.get("micro", {}).items():
        add(f"{name} (us)", f["us"], f["target_us"], False)
    g = report.get("rss_growth")
    if g:
        for key in ("inprocess_kb", "daemon_kb"):
            if key in g:
                add(f"RSS growth {key[:-3]} over {g['frames']} frames (kB)", g[key], 1024, False)
    return out


def target_lines(report: dict[str, Any]) -> list[str]:
    lines = ["", "targets:"] if report["targets"] else []
    for t in report["targets"]:
        lines.append(f"  {'met ' if t['met'] else 'MISS'}  {t['target']}: {t['value']:g} "
                     f"(bar {t['bar']:g})")
    return lines


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    sizes = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        w, _, h = item.partition("x")
        if not (w.isdigit() and h.isdigit()) or not (16 <= int(w) <= 8192 and 16 <= int(h) <= 8192):
            raise ValueError(f"--sizes: {item!r} is not WxH (16 to 8192 each), e.g. 1280x720")
        sizes.append((int(h), int(w)))
    return tuple(sizes)

"""Build each stage from its config section. No threads are started here.

Kept apart from `daemon.py` so a reload can rebuild exactly the stages whose
section changed, with the same functions that built them at start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from edged.config import Camera, Config
from edged.config.commands import command_cameras
from edged.config.fit import publish_problem, too_large_for_json
from edged.decode.dispatch import (
    DecoderKind,
    DecodeSettings,
    decode,
    decode_kind,
    decoded_json,
    prepare_labels,
    ssd_names_for,
)
from edged.decode.labels import Labels, load_labels
from edged.decode.results import ClassFilter, Detection
from edged.inference.messages import ModelInfo
from edged.inference.supervisor import Supervisor
from edged.mqtt.cameradiscovery import CameraEntities
from edged.mqtt.discovery import DiscoverySettings
from edged.mqtt.eventdiscovery import EventEntities
from edged.mqtt.eventpayload import camera_topics
from edged.mqtt.payload import Result as Payload
from edged.mqtt.payload import encode_result_binary, encode_result_json, outputs_from
from edged.mqtt.publisher import Publisher
from edged.mqtt.settings import PublisherSettings, TlsSettings
from edged.numerics.imageinput import ImageInput, image_input
from edged.numerics.quantize import normalization_source
from edged.preprocess import Preprocessor
from edged.service.cascade import Cascade, cascade_fit_problems
from edged.service.delivery import Deliver, Later, owned
from edged.service.eventstage import EventStages, SnapshotEncoder
from edged.service.pipeline import Result
from edged.sources import open_source
from edged.sources.capture import CaptureThread
from edged.sources.resilient import ResilientSource
from edged.system.threads import leave_cores_to_the_model

log = logging.getLogger("edged.wiring")

# Config kinds name what the user has; the drivers are fewer.
_DRIVER = {"v4l2": "opencv", "stream": "opencv", "video": "opencv"}
# Files are not real time: every frame is inferred, none dropped.
_LOSSLESS = {"video", "folder"}


def build_capture(cfg: Config, input_size: tuple[int, int], first_seq: int = 0
                  ) -> CaptureThread:
    s = cfg.source
    kind = _DRIVER.get(s.kind, s.kind)
    params: dict[str, Any]
    if kind == "synthetic":
        params = {"size": (s.height, s.width), "fps": s.fps}
    elif kind == "folder":
        params = {"path": s.uri, "loop": s.loop, "fps": s.fps}
    elif kind == "picamera2":
        # The ISP scales the lores stream to the model's input: no CPU resize. The
        # main stream is left to the source, which keeps the model's aspect ratio
        # so the ISP crops rather than stretches.
        params = {"size": input_size if s.lores else (s.height, s.width), "fps": s.fps}
    else:
        params = {"uri": s.uri, "width": s.width, "height": s.height, "fps": s.fps,
                  "loop": s.loop}
        if s.kind == "v4l2":
            params["v4l2_format"] = s.v4l2_format
    if jpeg_source(cfg):
        params["min_size"] = jpeg_min_size(cfg, input_size)
        if s.kind != "folder":  # a folder is lossless: every image is taken anyway
            # Its JPEGs decoded by the pipeline once taken, not each one the camera sends.
            params["defer_decode"] = True
            params["decode_thread"] = s.jpeg_decode_thread
    # A video or folder with loop = false ends for good: reopening would replay it.
    source = ResilientSource(open_source(kind, **params), initial_backoff=s.reopen_backoff_s,
                             max_backoff=s.reopen_backoff_max_s,
                             reopen_on_end=s.loop or s.kind not in _LOSSLESS,
                             first_seq=first_seq)
    return CaptureThread(source, lossless=s.kind in _LOSSLESS)


def jpeg_source(cfg: Config) -> bool:
    """Whether the camera's driver decodes JPEGs itself (edged.sources.jpeg); a V4L2
    camera does once it took MJPEG (a camera without it ignores the settings)."""
    s = cfg.source
    return s.kind == "folder" or (s.kind == "stream" and s.uri.lower().startswith("http")) or (
        s.kind == "v4l2" and s.v4l2_format != "uncompressed")


def jpeg_min_size(cfg: Config, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest (height, width) a JPEG source may decode its pictures at (None:
    whole, or not a JPEG source).

    The model's input in both dimensions: exact for stretch and crop, a little more
    than letterbox needs. Event snapshots are cut from the frame, so it stays at least
    their max_width wide; a cascade's crops need the camera's detail: whole."""
    if not jpeg_source(cfg) or cfg.source.jpeg_decode == "full" or cfg.cascade.model:
        return None
    height, width = input_size
    snap = cfg.events.snapshot
    if cfg.output.publish != "results" and snap.enabled:
        width = max(width, snap.max_width)
    return height, width


def image_of(cfg: Config, info: ModelInfo) -> ImageInput:
    """The running model's image input (the worker refused any other at load)."""
    return image_input(info.inputs[0], cfg.preprocess.layout)


def describe_pixels(cfg: Config, info: ModelInfo) -> str:
    """For the start-up log: the layout, and the normalization with where it came from."""
    def nums(v: tuple[float, ...]) -> str:
        return ", ".join(f"{x:.6g}" for x in v)

    source = info.normalization_source or normalization_source(
        info.inputs[0], bool(cfg.preprocess.mean))
    return (f"({image_of(cfg, info).describe()}; pixels (p - [{nums(info.mean)}]) / "
            f"[{nums(info.std)}], {source}; {info.pixel_path} path)")


def input_size(cfg: Config, info: ModelInfo) -> tuple[int, int]:
    return image_of(cfg, info).size


def build_preprocess(cfg: Config, info: ModelInfo
                     ) -> Callable[[NDArray[np.uint8], NDArray[np.uint8]], Any]:
    p = cfg.preprocess
    image = image_of(cfg, info)
    pre = Preprocessor(image.size, image.channels, mode=p.resize, pad_value=p.pad_value,
                       color_order=p.color_order, interpolation=p.interpolation)
    leave_cores_to_the_model()  # the worker's interpreter threads own the cores

    def preprocess(pixels: NDArray[np.uint8], dst: NDArray[np.uint8]) -> Any:
        pre(pixels, out=dst)  # straight into the worker's slot
        return pre.geometry

    return preprocess


def build_publisher(cfg: Config) -> Publisher:
    m = cfg.mqtt
    tls = None
    if m.tls:
        # No CA file: the system trust store (never "no verification").
        tls = TlsSettings(ca_file=m.ca_file, cert_file=m.cert_file, key_file=m.key_file)
    return Publisher(PublisherSettings(
        device_id=cfg.device.id, host=m.host, port=m.port, prefix=m.topic_prefix,
        client_id=cfg.client_id, protocol=m.protocol, keepalive_s=m.keepalive_s,
        username=m.username or None, password=m.resolve_password(), tls=tls,
        results_qos=m.qos_results, results_retain=m.retain_results,
        status_qos=m.qos_status, stats_qos=m.qos_status,
        message_expiry_s=m.message_expiry_s or None, queue_size=m.queue_size,
        backoff_min_s=m.reconnect_min_s, backoff_max_s=m.reconnect_max_s,
    ))


def decoder_kind(cfg: Config, info: ModelInfo) -> str:
    """What `output.decoder` resolves to for this model ("none" when it cannot:
    `build_deliver` reports why)."""
    ssd_names, _ = ssd_names_for(cfg.output.ssd_outputs, info.ssd_outputs)
    try:
        return decode_kind(cfg.output.decoder, info.outputs, ssd_names)[0]
    except ValueError:
        return "none"


def model_fit_problems(path: object, cfg: Config, info: ModelInfo, camera: str = ""
                       ) -> list[str]:
    """What of `cfg` does not fit the loaded model's outputs, one `file: key: message`
    line each: start and reload refuse such a config (check-config says it earlier).
    `camera`: where a camera's keys are written (`cameras[1]`), "" for the file's."""
    out, key = cfg.output, f"{camera}.output" if camera else "output"
    try:
        build_decoding(cfg, info, None, announce=False)
    except ValueError as exc:  # DecodeError: the decoder does not fit these outputs
        return [f"{path}: {key}.decoder: {exc}"]
    problems = []
    too_large = too_large_for_json(info.outputs, out)
    if too_large is not None:
        problems.append(f"{path}: {key}.max_values: {too_large}")
    kind = decoder_kind(cfg, info)
    publish = publish_problem(out, kind) if kind != "none" else None
    if publish is not None:
        problems.append(f"{path}: {key}.publish: {publish}")
    problems += [f"{path}: {camera + '.' if camera else ''}{k}: {message}"
                 for k, message in cascade_fit_problems(cfg, info, kind)]
    return problems


@dataclass(frozen=True)
class Decoding:
    """The decoder as set up for one loaded model."""

    info: ModelInfo
    kind: DecoderKind
    settings: DecodeSettings
    labels: Labels | None
    input_wh: tuple[int, int]


def build_decoding(cfg: Config, info: ModelInfo, labels: Labels | None, *,
                   announce: bool = True) -> Decoding:
    """Resolve the decoder for `info`'s outputs; DecodeError (one line) if it does not fit."""
    out = cfg.output
    ssd_names, ssd_source = ssd_names_for(out.ssd_outputs, info.ssd_outputs)
    kind, reason = decode_kind(out.decoder, info.outputs, ssd_names)
    classes = ClassFilter.of(out.classes_keep, out.classes_ignore)
    if labels is not None:
        labels = prepare_labels(kind, labels, info.outputs)
    if announce:
        if out.decoder == "auto":
            log.info("decoder auto: %s (%s)", kind, reason)
        if kind == "detection" and ssd_names:
            log.info("detection: SSD %s", ssd_source)
        for note in labels.notes if labels is not None else ():
            log.info("labels: %s", note)
        for name in classes.unknown_names(labels.names()) if labels is not None else ():
            log.warning("output.classes_keep/classes_ignore: %r is not a label in %s", name,
                        cfg.model.labels)
    # top_k bounds boxes as well as classes (its documented meaning for detection).
    settings = DecodeSettings(
        min_score=out.min_score, top_k=out.top_k, iou_threshold=out.nms_iou,
        max_detections=out.top_k, min_box_area=out.min_box_area, classes=classes,
        mask_max_side=out.segmentation_mask or None, ssd_names=ssd_names)
    height, width = input_size(cfg, info)
    return Decoding(info, kind, settings, labels, (width, height))


def build_deliver(cfg: Config, supervisor: Supervisor, publisher: Publisher,
                  on_published: Callable[[], None], stages: EventStages | None = None,
                  *, fresh_events: bool = False, camera: str | None = None, model: int = 0
                  ) -> Deliver:
    """Decode (as configured), encode and hand off one result; with output.publish
    events or both, detections go through the events stage too (the one `stages`
    keeps, unless `fresh_events`: a reload changed what it is made of). `camera`: its
    [[cameras]] id, in the payload and the topic (None: the device's results topic);
    `model`: which of the worker's models makes its results (ModelInfo.model)."""
    assert supervisor.info is not None
    out = cfg.output
    labels = load_labels(cfg.model.labels) if cfg.model.labels else None
    decoding = build_decoding(cfg, supervisor.info.model(model), labels)
    events = None
    if out.publish != "results" and decoding.kind == "detection":  # else model_fit_problems
        events = (stages or EventStages(SnapshotEncoder())).for_config(cfg, publisher,
                                                                      fresh_events)
    results = out.publish != "events"
    encode = encode_result_binary if out.encoding == "binary" else encode_result_json
    device_id = cfg.device.id
    topic = camera_topics(cfg.topic_base, camera)["results"] if camera is not None else None
    # Per loaded model, not per result (a Path per result was a tenth of this
    # thread's CPU): a CPU fallback changes the file, and brings a new `info`.
    model_name = supervisor.model_file(model)
    cascade = Cascade(cfg, supervisor) if cfg.cascade.model else None

    def deliver(result: Result) -> Later | None:
        nonlocal decoding, model_name
        if stages is not None:  # a snapshot asked for by a command
            stages.deliver_snapshot(result.pixels)
        info = supervisor.info.model(model) if supervisor.info is not None else None
        if info is not None and info is not decoding.info:
            # A restarted worker, maybe on the CPU model after an Edge TPU fallback: another
            # file can have other tensor indices (SSD roles) or class counts.
            decoding = build_decoding(cfg, info, labels, announce=False)
            model_name = supervisor.model_file(model)
            if events is not None and decoding.kind != "detection":
                log.error("events stopped: the model the restarted worker loaded (%s) does "
                          "not decode as detections; output.publish = %r needs them",
                          model_name, out.publish)
        d = decoding
        t0 = time.perf_counter_ns()
        if d.kind == "none":
            publish(result, d, 0, None, {})
            return None
        geometry = result.geometry
        found = decode(
            d.kind, result.raw_outputs, result.tensors, settings=d.settings,
            input_wh=d.input_wh, geometry=geometry, labels=d.labels,
            content_box=getattr(geometry, "content", None))
        decode_us = (time.perf_counter_ns() - t0) // 1000
        if cascade is not None and d.kind == "detection":
            job = cascade.start(cast(tuple[Detection, ...], found), result.pixels,
                                result.frame_size)
            if job is not None:
                # Published after the next frame's crops are queued (service.delivery),
                # whose detector owns the slot by then: what is read of it goes along.
                kept = replace(result, outputs=tuple(owned(o) for o in result.outputs),
                               raw_outputs=())
                return Later(lambda: publish(kept, d, decode_us, *cascade.finish(job)),
                             due=job.due)
            # In order: after the frame held before it (edged.service.delivery).
            return Later(lambda: publish(result, d, decode_us, found, {}), waits=False)
        publish(result, d, decode_us, found, {})
        return None

    def publish(result: Result, d: Decoding, decode_us: int, found: Any,
                cascade_us: dict[str, int]) -> None:
        t0 = time.perf_counter_ns()
        decoded = None
        if d.kind != "none":
            if events is not None and d.kind == "detection":
                events.step(cast(tuple[Detection, ...], found), result.pixels,
                            result.captured_at, result.captured_mono, result.full_size)
            if not results:
                on_published()
                return
            decoded = decoded_json(d.kind, found)
        timings = result.times.as_dict()
        timings["decode"] = decode_us + (time.perf_counter_ns() - t0) // 1000
        timings.update(cascade_us)
        payload = encode(Payload(
            device_id=device_id, seq=result.frame_seq, captured_at=result.captured_at,
            model=model_name, delegate=d.info.delegate,
            outputs=outputs_from(result.tensors, result.outputs) if out.include_raw else (),
            timings_us=timings, decoded=decoded, camera=camera,
        ))
        publisher.publish_result(payload, topic)
        on_published()

    return deliver


def discovery_settings(cfg: Config, board: tuple[str, ...] = (),
                       infos: Mapping[str, ModelInfo] | None = None) -> DiscoverySettings:
    """The part of the config Home Assistant discovery needs; `board`: the health
    figures this board reports (edged.service.boardhealth); `infos`: the models loaded
    (by [[models]] id, "" for [model]), for each camera's decoder (without them, the
    one `discovery_config` is given)."""
    ha = cfg.homeassistant
    return DiscoverySettings(
        device_id=cfg.device.id, topic_base=cfg.topic_base, enabled=ha.enabled,
        prefix=ha.discovery_prefix, name=ha.name, board=board,
        cameras=tuple(_camera_entities(camera, (infos or {}).get(camera.model))
                      for camera in cfg.camera_list() if camera.enabled),
        commands=tuple(command_cameras(cfg)) if cfg.commands.enabled else None)


def _camera_entities(camera: Camera, info: ModelInfo | None) -> CameraEntities:
    cfg, out = camera.config, camera.config.output
    return CameraEntities(
        camera=camera.id if camera.index is not None else None,
        json_results=out.encoding == "json" and out.publish != "events",
        classes_keep=tuple(out.classes_keep), cascade=bool(cfg.cascade.model),
        decoder=decoder_kind(cfg, info) if info is not None else None,
        events=EventEntities(cfg.source.name, tuple(z.name for z in cfg.events.zones),
                             tuple(cfg.events.labels), cfg.events.snapshot.enabled)
        if out.publish != "results" else None)

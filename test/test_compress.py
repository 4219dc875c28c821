"""Camera compression: CDR parsing, JPEG and H.264 encoders, the ordered worker stage.

Everything runs the real codecs (OpenCV, PyAV/libx264) and checks the output with readers we
did not write: rclpy's deserializer, ``mcap_ros2``'s decoder (through a file written by the
official ``mcap`` writer), OpenCV's JPEG decoder and FFmpeg's H.264 decoder. Frames come from
the simulator's renderer (gradient, moving pattern, noise), at small sizes to stay cheap.
"""

from __future__ import annotations

import array
import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer as OfficialMcapWriter
from mcap_ros2._dynamic import generate_dynamic, serialize_dynamic
from mcap_ros2.decoder import DecoderFactory
from pydantic import ValidationError
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

from xsquare_logger.bag.embedded import COMPRESSED_VIDEO, embedded_schema
from xsquare_logger.camera import (
    EMBEDDED_SCHEMAS,
    CameraCompression,
    CdrError,
    CodecUnavailable,
    CompressionStage,
    H264Encoder,
    JpegEncoder,
    UnsupportedImage,
    parse_image,
)
from xsquare_logger.camera.cdr import serialize_compressed_image, serialize_compressed_video
from xsquare_logger.sim.frames import render_frames
from xsquare_logger.sim.profiles import QOS_SENSOR, ImageStream

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is a runtime dependency")
try:
    import av
except ImportError:  # the optional 'h264' extra
    av = None
needs_av = pytest.mark.skipif(
    av is None, reason="PyAV not installed (optional extra: pip install 'xsquare_logger[h264]')"
)

NS = 1_000_000_000
SEP = "\n" + "=" * 80 + "\n"


# ---------------------------------------------------------------------------- helpers


def sim_frames(width: int, height: int, encoding: str = "rgb8", n: int = 8) -> list[np.ndarray]:
    spec = ImageStream(
        topic="/camera/head/image_raw",
        type_name="sensor_msgs/msg/Image",
        rate_hz=30.0,
        qos=QOS_SENSOR,
        camera="head",
        width=width,
        height=height,
        encoding=encoding,
        ring_size=n,
    )
    return render_frames(spec)


def image_cdr(
    pixels: np.ndarray,
    encoding: str,
    stamp_ns: int = 0,
    frame_id: str = "head_camera",
    row_padding: int = 0,
) -> bytes:
    """A sensor_msgs/Image serialized by rclpy, rows optionally padded to a larger step."""
    h, w, c = pixels.shape
    step = w * c + row_padding
    rows = np.full((h, step), 0xEE, dtype=np.uint8)  # padding bytes must never be read
    rows[:, : w * c] = pixels.reshape(h, w * c)
    m = Image()
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, NS)
    m.header.frame_id = frame_id
    m.height, m.width, m.encoding, m.step = h, w, encoding, step
    m.data = array.array("B", rows.tobytes())
    return serialize_message(m)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def nal_types(annexb: bytes) -> list[int]:
    """NAL unit types of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    types = []
    i = annexb.find(b"\x00\x00\x01")
    while i >= 0:
        types.append(annexb[i + 3] & 0x1F)
        i = annexb.find(b"\x00\x00\x01", i + 3)
    return types


def mcap_roundtrip(tmp_path: Path, type_name: str, schema: bytes, messages: list[bytes]) -> list:
    """Write CDR messages with the official mcap writer; decode them with mcap_ros2."""
    path = tmp_path / "t.mcap"
    with open(path, "wb") as f:
        w = OfficialMcapWriter(f)
        w.start(profile="ros2", library="test")
        sid = w.register_schema(name=type_name, encoding="ros2msg", data=schema)
        cid = w.register_channel(topic="/t", message_encoding="cdr", schema_id=sid)
        for i, data in enumerate(messages):
            w.add_message(cid, log_time=i, publish_time=i, data=data, sequence=i)
        w.finish()
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        decoded = list(reader.iter_decoded_messages())
    assert [s.name for s, _c, _m, _d in decoded] == [type_name] * len(messages)
    return [d for _s, _c, _m, d in decoded]


# -------------------------------------------------------------------------- CDR parse


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
@pytest.mark.parametrize("frame_id", ["", "c", "cam", "head_camera_optical_frame"])
def test_parse_image_fields_and_pixels(encoding: str, frame_id: str) -> None:
    # frame_id lengths 0..many move every later field through each alignment case.
    [pixels] = sim_frames(40, 30, encoding, n=1)
    stamp_ns = 1_700_000_123 * NS + 456_789
    buf = image_cdr(pixels, encoding, stamp_ns, frame_id)
    img = parse_image(buf)
    assert img.stamp == (1_700_000_123, 456_789)
    assert img.stamp_ns == stamp_ns
    assert (img.frame_id, img.encoding) == (frame_id, encoding)
    assert (img.height, img.width, img.step) == (30, 40, 40 * pixels.shape[2])
    assert img.pixels.shape == pixels.shape
    np.testing.assert_array_equal(img.pixels, pixels)


@pytest.mark.parametrize("padding", [1, 3, 64])
def test_parse_image_with_row_padding_is_a_view(padding: int) -> None:
    [pixels] = sim_frames(33, 17, "rgb8", n=1)
    buf = image_cdr(pixels, "rgb8", row_padding=padding)
    img = parse_image(buf)
    assert img.step == 33 * 3 + padding
    np.testing.assert_array_equal(img.pixels, pixels)  # the 0xEE padding is not in the view
    assert img.pixels.strides == (img.step, 3, 1)
    # Zero copy: the pixels live inside the received bytes.
    assert np.shares_memory(img.pixels, np.frombuffer(buf, dtype=np.uint8))
    assert not img.pixels.flags.writeable


def test_parse_image_bytearray_view_is_read_only() -> None:
    [pixels] = sim_frames(8, 6, "bgr8", n=1)
    buf = bytearray(image_cdr(pixels, "bgr8"))
    img = parse_image(buf)
    assert np.shares_memory(img.pixels, np.frombuffer(buf, dtype=np.uint8))
    with pytest.raises(ValueError, match="read-only"):
        img.pixels[0, 0, 0] = 1


def test_parse_image_rejects_unsupported_and_malformed() -> None:
    m = Image()
    m.height, m.width, m.encoding, m.step = 2, 2, "16UC1", 4
    m.data = array.array("B", bytes(8))
    with pytest.raises(UnsupportedImage, match="'16UC1'"):
        parse_image(serialize_message(m))
    [pixels] = sim_frames(8, 6, "rgb8", n=1)
    buf = image_cdr(pixels, "rgb8")
    with pytest.raises(CdrError, match="truncated"):
        parse_image(buf[:-10])
    with pytest.raises(CdrError, match="encapsulation"):
        parse_image(b"\x07\x07\x00\x00" + buf[4:])
    m.encoding, m.step = "rgb8", 5  # step smaller than width * 3
    m.data = array.array("B", bytes(10))
    with pytest.raises(CdrError, match="step 5"):
        parse_image(serialize_message(m))


# ---------------------------------------------------------------------- CDR writers


@pytest.mark.parametrize("frame_id", ["", "cam", "head_camera"])
@pytest.mark.parametrize("size", [0, 1, 5, 1000])
def test_compressed_image_cdr_matches_rclpy(frame_id: str, size: int) -> None:
    data = bytes(range(256)) * 4
    data = data[:size]
    ours = serialize_compressed_image((12, 345), frame_id, "jpeg", data)
    msg = deserialize_message(ours, CompressedImage)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    assert (msg.header.frame_id, msg.format, bytes(msg.data)) == (frame_id, "jpeg", data)
    # Same layout as rclpy's own bytes (rmw leaves padding uninitialized, so compare length)
    # and byte-identical to mcap_ros2's encoder, which zeroes padding as we do.
    assert len(ours) == len(serialize_message(msg))
    schema = _installed_schema("sensor_msgs/msg/CompressedImage")
    value = {"header": {"stamp": {"sec": 12, "nanosec": 345}, "frame_id": frame_id}}
    value |= {"format": "jpeg", "data": data}
    encode = serialize_dynamic("sensor_msgs/msg/CompressedImage", schema)
    assert ours == encode["sensor_msgs/msg/CompressedImage"](value)


def _installed_schema(type_name: str) -> str:
    from xsquare_logger.bag.schema import ros2msg_schema

    return ros2msg_schema(type_name).decode()


@pytest.mark.parametrize("frame_id", ["", "cam", "head_camera"])
@pytest.mark.parametrize("size", [0, 3, 1000])
def test_compressed_video_cdr_decodes_with_embedded_schema(
    tmp_path: Path, frame_id: str, size: int
) -> None:
    data = (b"\x00\x00\x00\x01\x67" + bytes(range(200)) * 5)[:size]
    ours = serialize_compressed_video((-3, 999_999_999), frame_id, data, "h264")
    schema = EMBEDDED_SCHEMAS[COMPRESSED_VIDEO]
    [msg] = mcap_roundtrip(tmp_path, COMPRESSED_VIDEO, schema, [ours])
    assert (msg.timestamp.sec, msg.timestamp.nanosec) == (-3, 999_999_999)
    assert (msg.frame_id, bytes(msg.data), msg.format) == (frame_id, data, "h264")
    encode = serialize_dynamic(COMPRESSED_VIDEO, schema.decode())[COMPRESSED_VIDEO]
    value = {"timestamp": {"sec": -3, "nanosec": 999_999_999}, "frame_id": frame_id}
    assert ours == encode(value | {"data": data, "format": "h264"})


def test_embedded_compressed_video_schema_layout() -> None:
    text = EMBEDDED_SCHEMAS[COMPRESSED_VIDEO].decode()
    assert embedded_schema("foxglove_msgs/CompressedVideo") == embedded_schema(COMPRESSED_VIDEO)
    top, dep = text.split(SEP)
    fields = [ln.split() for ln in top.splitlines() if ln.strip() and not ln.startswith("#")]
    # Foxglove's field order; its panels need all four.
    assert fields == [
        ["builtin_interfaces/Time", "timestamp"],
        ["string", "frame_id"],
        ["uint8[]", "data"],
        ["string", "format"],
    ]
    assert dep.startswith("MSG: builtin_interfaces/Time\n")
    dep_fields = [ln.split() for ln in dep.splitlines()[1:] if ln and not ln.startswith("#")]
    assert dep_fields == [["int32", "sec"], ["uint32", "nanosec"]]


# ------------------------------------------------------------------------------ JPEG


@pytest.mark.parametrize(("encoding", "padding"), [("rgb8", 0), ("bgr8", 5), ("mono8", 3)])
def test_jpeg_roundtrip(encoding: str, padding: int) -> None:
    frames = sim_frames(160, 120, encoding, n=2)
    enc = JpegEncoder(quality=90)
    assert enc.output_type == "sensor_msgs/msg/CompressedImage"
    for i, pixels in enumerate(frames):
        stamp_ns = 1_700_000_000 * NS + i * 33_333_333
        out = enc.encode(parse_image(image_cdr(pixels, encoding, stamp_ns, row_padding=padding)))
        msg = deserialize_message(out, CompressedImage)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(stamp_ns, NS)
        assert (msg.header.frame_id, msg.format) == ("head_camera", "jpeg")
        jpeg = np.frombuffer(bytes(msg.data), dtype=np.uint8)
        if encoding == "mono8":
            decoded = cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)[..., None]
        else:
            decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)  # BGR, like any JPEG reader
            if encoding == "rgb8":
                decoded = decoded[..., ::-1]
        assert decoded.shape == pixels.shape
        assert psnr(decoded, pixels) > 30.0


def test_jpeg_quality_bounds() -> None:
    with pytest.raises(ValueError, match="1-100"):
        JpegEncoder(quality=0)


# ----------------------------------------------------------------------------- H.264


@needs_av
def test_h264_stream_decodes_with_keyframes_and_no_b_frames(tmp_path: Path) -> None:
    width, height, fps, n = 192, 108, 30, 70
    frames = sim_frames(width, height, "rgb8", n=30)
    enc = H264Encoder(width, height, fps=fps, keyframe_interval_s=1.0, preset="ultrafast")
    assert enc.output_type == COMPRESSED_VIDEO
    t0 = 1_700_000_000 * NS
    stamps = [t0 + i * NS // fps for i in range(n)]
    out = []
    for i in range(n):
        out.append(enc.encode(parse_image(image_cdr(frames[i % 30], "rgb8", stamps[i]))))
        assert enc.last_keyframe == (i % 30 == 0)
    enc.close()
    msgs = mcap_roundtrip(tmp_path, COMPRESSED_VIDEO, EMBEDDED_SCHEMAS[COMPRESSED_VIDEO], out)

    decoder = av.CodecContext.create("h264", "r")
    keyframes = []
    for i, msg in enumerate(msgs):
        assert (msg.timestamp.sec, msg.timestamp.nanosec) == divmod(stamps[i], NS)
        assert (msg.frame_id, msg.format) == ("head_camera", "h264")
        data = bytes(msg.data)
        assert data.startswith(b"\x00\x00\x00\x01") or data.startswith(b"\x00\x00\x01")
        types = nal_types(data)
        if 5 in types:  # IDR slice
            keyframes.append(i)
            assert data.startswith(b"\x00\x00\x00\x01")
            assert 7 in types and 8 in types, f"keyframe {i} lacks SPS/PPS: {types}"
            assert types.index(7) < types.index(5) and types.index(8) < types.index(5)
        # One message, one picture, out at once: no reordering delay, so no B-frames.
        [picture] = decoder.decode(av.Packet(data))
        assert av.video.frame.PictureType(picture.pict_type).name in ("I", "P")
        rgb = picture.to_ndarray(format="rgb24")
        assert psnr(rgb, frames[i % 30]) > 28.0, f"frame {i}"
    assert keyframes == [0, 30, 60]
    assert decoder.decode(None) == []  # nothing held back


@needs_av
def test_h264_keyframes_follow_stamps_when_camera_is_slower_than_fps() -> None:
    # Configured for 30 Hz, the camera delivers 10 Hz: keyint (30 frames) alone would give a
    # keyframe every 3 s; the stamp rule keeps one per second.
    frames = sim_frames(64, 48, "bgr8", n=4)
    enc = H264Encoder(64, 48, fps=30, keyframe_interval_s=1.0)
    keys = []
    for i in range(25):
        enc.encode(parse_image(image_cdr(frames[i % 4], "bgr8", i * NS // 10)))
        if enc.last_keyframe:
            keys.append(i)
    assert keys == [0, 10, 20]
    # A stamp going backwards (clock reset) starts a fresh keyframe.
    enc.encode(parse_image(image_cdr(frames[0], "bgr8", 0)))
    assert enc.last_keyframe
    enc.close()


def _key_gaps_ns(stamps: list[int]) -> list[int]:
    return [b - a for a, b in itertools.pairwise(stamps)]


@needs_av
def test_h264_keyframes_by_stamp_survive_skipped_frames() -> None:
    """Encoding fell behind and every third frame got through (the stage skipped the rest):
    the keyframe is forced by stamp, on the last frame before the 1 s deadline if the next
    one would land past it. (The old rule forced the first frame past 0.983 s: 1.067 s gaps.)
    Stamps are jittered by up to 0.5 ms."""
    frames = sim_frames(64, 48, "bgr8", n=4)
    enc = H264Encoder(64, 48, fps=30, keyframe_interval_s=1.0)
    rng = np.random.default_rng(3)
    period = NS // 30
    kept = [0, *range(2, 300, 3)]  # 10 s at 30 Hz, two of three frames skipped
    keys = []
    for i in kept:
        stamp = 5 * NS + i * period + int(rng.integers(0, 500_000))
        enc.encode(parse_image(image_cdr(frames[i % 4], "bgr8", stamp)))
        if enc.last_keyframe:
            keys.append(stamp)
    enc.close()
    gaps = _key_gaps_ns(keys)
    assert len(keys) >= 10 and max(gaps) <= NS, [g / NS for g in gaps]


@needs_av
def test_stage_keeps_the_keyframe_due_frame_when_encoding_falls_behind() -> None:
    """The lane is full exactly when the frame at the 1 s deadline arrives: the stage drops
    the frame waiting before it instead, so the keyframe comes at 1.0 s, not after the skip."""
    frames = sim_frames(64, 48, n=4)
    gate = threading.Event()
    gate.set()
    entered = threading.Event()
    calls: list[tuple[int, int, bytes]] = []

    def on_output(_topic: str, _type: str, cdr: bytes, log_ns: int, _p: int, seq: int) -> None:
        entered.set()
        gate.wait(30)
        calls.append((seq, log_ns, cdr))

    spec = {"/cam": CameraCompression(mode="h264")}
    with CompressionStage(spec, on_output, workers=1, max_pending_per_topic=2) as stage:
        def submit(i: int) -> bool:
            stamp = i * NS // 30
            return stage.submit("/cam", image_cdr(frames[i % 4], "rgb8", stamp), stamp, stamp, i)

        for i in range(28):
            assert submit(i) and stage.drain(timeout=30)
        gate.clear()
        assert submit(28)
        assert entered.wait(30)  # frame 28 is stuck in on_output
        assert submit(29)  # waits behind it: the lane is full
        assert submit(30)  # due (1.0 s): takes the place of 29, which is skipped
        assert not submit(31)  # not due: refused as usual
        gate.set()
        assert stage.drain(timeout=30)
        for i in range(32, 75):
            assert submit(i) and stage.drain(timeout=30)
        skipped = stage.skipped["/cam"]
    assert [c[0] for c in calls] == [i for i in range(75) if i not in (29, 31)]
    assert skipped == 2
    keys = [log for _seq, log, cdr in calls if 5 in nal_types(cdr)]
    assert keys[0] == 0
    assert max(_key_gaps_ns(keys)) <= NS, [k / NS for k in keys]


@needs_av
def test_h264_mono_and_size_checks() -> None:
    [pixels] = sim_frames(64, 48, "mono8", n=1)
    enc = H264Encoder(64, 48)
    out = enc.encode(parse_image(image_cdr(pixels, "mono8", row_padding=2)))
    decode = generate_dynamic(COMPRESSED_VIDEO, EMBEDDED_SCHEMAS[COMPRESSED_VIDEO].decode())
    msg = decode[COMPRESSED_VIDEO](out)
    decoder = av.CodecContext.create("h264", "r")
    [picture] = decoder.decode(av.Packet(bytes(msg.data)))
    assert psnr(picture.to_ndarray(format="gray")[..., None], pixels) > 28.0
    with pytest.raises(ValueError, match="encoder is 64x48"):
        enc.encode(parse_image(image_cdr(sim_frames(32, 24, n=1)[0], "rgb8")))
    enc.close()
    with pytest.raises(ValueError, match="even"):
        H264Encoder(63, 48)


def test_h264_without_av_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(CodecUnavailable, match=r"pip install 'xsquare_logger\[h264\]'"):
        H264Encoder(64, 48)
    with pytest.raises(CodecUnavailable, match="optional 'av' package"):
        CompressionStage({"/cam": CameraCompression(mode="h264")}, on_output=lambda *a: None)


# ----------------------------------------------------------------------------- config


def test_camera_compression_config() -> None:
    assert CameraCompression().mode == "raw"
    jpeg = CameraCompression(mode="jpeg", jpeg_quality=80)
    assert jpeg.output_topic("/camera/head/image_raw") == "/camera/head/image_raw/compressed"
    h264 = CameraCompression(mode="h264", keyframe_interval_s=0.5, crf=28, preset="veryfast")
    assert h264.output_topic("/camera/head/image_raw") == "/camera/head/image_raw/h264"
    assert CameraCompression(mode="h264", out_topic="/v").output_topic("/x") == "/v"
    with pytest.raises(ValidationError, match="jpg_quality"):
        CameraCompression.model_validate({"mode": "jpeg", "jpg_quality": 80})
    with pytest.raises(ValidationError, match="preset"):
        CameraCompression(mode="h264", preset="warp")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="absolute"):
        CameraCompression(mode="jpeg", out_topic="relative")


# ------------------------------------------------------------------------------ stage


class Collector:
    """An on_output that records calls; optionally holds the first call until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[tuple[str, str, bytes, int, int, int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, *call: object) -> None:
        self.entered.set()
        self.release.wait(30)
        self.calls.append(call)  # type: ignore[arg-type]


def test_stage_counts_skips_when_encoding_falls_behind() -> None:
    [pixels] = sim_frames(64, 48, n=1)
    raw = image_cdr(pixels, "rgb8")
    out = Collector(hold_first=True)
    spec = {"/cam": CameraCompression(mode="jpeg")}
    stage = CompressionStage(spec, out, workers=1, max_pending_per_topic=1)
    assert stage.submit("/cam", raw, 10, 9, 0)
    assert out.entered.wait(30)  # the first frame is stuck in on_output: the lane is full
    refused = [stage.submit("/cam", raw, 10 + i, 9 + i, i) for i in range(1, 6)]
    assert refused == [False] * 5
    assert stage.skipped == {"/cam": 5}
    out.release.set()
    assert stage.close(timeout=30)
    [s] = stage.stats().values()
    assert (s.submitted, s.delivered, s.skipped, s.failed, s.pending) == (1, 1, 5, 0, 0)
    assert [c[5] for c in out.calls] == [0]
    with pytest.raises(RuntimeError, match="closed"):
        stage.submit("/cam", raw, 0, 0, 99)


@pytest.mark.parametrize("with_h264", [False, pytest.param(True, marks=needs_av)])
def test_stage_delivers_in_order_per_topic(with_h264: bool) -> None:
    frames = sim_frames(64, 48, n=6)
    spec = {
        "/cam/a": CameraCompression(mode="jpeg"),
        "/cam/b": CameraCompression(mode="h264" if with_h264 else "jpeg", out_topic="/b/out"),
        "/cam/raw": CameraCompression(mode="raw"),
    }
    out = Collector()
    n = 24
    with CompressionStage(spec, out, workers=2, max_pending_per_topic=n) as stage:
        assert not stage.handles("/cam/raw")
        assert stage.outputs["/cam/a"] == ("/cam/a/compressed", "sensor_msgs/msg/CompressedImage")
        for i in range(n):
            for topic in ("/cam/a", "/cam/b"):
                stamp = i * NS // 30
                raw = image_cdr(frames[i % 6], "rgb8", stamp, frame_id=topic)
                assert stage.submit(topic, raw, stamp + 1, stamp + 2, i)
        assert stage.drain(timeout=60)
        stats = stage.stats()
    for topic, out_topic in (("/cam/a", "/cam/a/compressed"), ("/cam/b", "/b/out")):
        calls = [c for c in out.calls if c[0] == out_topic]
        assert [c[5] for c in calls] == list(range(n))  # submission order
        for _t, _type, _cdr, log_ns, pub_ns, seq in calls:
            assert (log_ns, pub_ns) == (seq * NS // 30 + 1, seq * NS // 30 + 2)
        assert stats[topic].delivered == n and stats[topic].skipped == 0
    if with_h264:
        assert {c[1] for c in out.calls if c[0] == "/b/out"} == {COMPRESSED_VIDEO}
        assert stats["/cam/b"].keyframes == 1  # 24 frames at 30 Hz: one keyframe, at 0
    with pytest.raises(KeyError, match="/cam/raw"):
        stage.submit("/cam/raw", b"", 0, 0, 0)


def test_stage_counts_failed_frames_and_goes_on() -> None:
    [pixels] = sim_frames(64, 48, n=1)
    m = Image()
    m.height, m.width, m.encoding, m.step = 2, 2, "rgba8", 8
    m.data = array.array("B", bytes(16))
    out = Collector()
    with CompressionStage({"/cam": CameraCompression(mode="jpeg")}, out) as stage:
        assert stage.submit("/cam", serialize_message(m), 1, 1, 0)
        assert stage.submit("/cam", image_cdr(pixels, "rgb8"), 2, 2, 1)
        assert stage.drain(timeout=30)
        [s] = stage.stats().values()
    assert (s.delivered, s.failed) == (1, 1)
    assert s.last_error is not None and "'rgba8'" in s.last_error
    assert [c[5] for c in out.calls] == [1]


def test_stage_rejects_colliding_output_topics() -> None:
    spec = {
        "/a": CameraCompression(mode="jpeg", out_topic="/same"),
        "/b": CameraCompression(mode="jpeg", out_topic="/same"),
    }
    with pytest.raises(ValueError, match="/same"):
        CompressionStage(spec, on_output=lambda *a: None)

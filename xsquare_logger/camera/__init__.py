"""Camera compression: raw ``sensor_msgs/msg/Image`` CDR in, JPEG or H.264 messages out.

* ``cdr``: zero-copy parse of serialized images; CDR writers for the output messages.
* ``encoders``: ``JpegEncoder`` (OpenCV) and ``H264Encoder`` (PyAV/libx264, optional extra).
* ``stage``: ``CompressionStage``, per-topic ordered lanes on worker threads.
* ``schemas``: embedded ``ros2msg`` text for types no installed package provides.
* ``config``: ``CameraCompression``, the per-camera settings.
"""

from __future__ import annotations

from xsquare_logger.bag.embedded import EMBEDDED_SCHEMAS, embedded_schema
from xsquare_logger.camera.cdr import CdrError, ParsedImage, UnsupportedImage, parse_image
from xsquare_logger.camera.encoders import (
    CodecUnavailable,
    H264Encoder,
    JpegEncoder,
    make_encoder,
    require_codec,
)
from xsquare_logger.camera.stage import CompressionStage, LaneStats
from xsquare_logger.config.camera import CameraCompression

__all__ = [
    "EMBEDDED_SCHEMAS",
    "CameraCompression",
    "CdrError",
    "CodecUnavailable",
    "CompressionStage",
    "H264Encoder",
    "JpegEncoder",
    "LaneStats",
    "ParsedImage",
    "UnsupportedImage",
    "embedded_schema",
    "make_encoder",
    "parse_image",
    "require_codec",
]

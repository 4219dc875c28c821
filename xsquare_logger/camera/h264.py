"""H.264 Annex B bitstream inspection: which NAL units a recorded frame holds.

A player can start decoding a ``foxglove_msgs/msg/CompressedVideo`` topic only at a frame that
carries an IDR slice (NAL type 5) with its parameter sets (SPS 7, PPS 8); ``xsq clip`` uses
this to start each video topic there. Only the NAL headers up to the first slice are read: the
slice data (nearly all of a frame) is never scanned.
"""

from __future__ import annotations

__all__ = ["IDR", "PPS", "SPS", "is_keyframe", "nal_unit_types"]

IDR = 5  # coded slice of an IDR picture
SPS = 7  # sequence parameter set
PPS = 8  # picture parameter set
_SLICES = frozenset({1, 2, 3, 4, 5})  # VCL NAL types: the picture data starts here
_START = b"\x00\x00\x01"


def nal_unit_types(annexb: bytes | bytearray | memoryview, *, stop_at_slice: bool = False
                   ) -> list[int]:
    """The ``nal_unit_type`` of each NAL unit in an Annex B byte stream, in order.

    Args:
        annexb: one or more NAL units, each after a 3- or 4-byte start code.
        stop_at_slice: stop after the first slice (types 1-5): enough to classify a frame.
    """
    data = bytes(annexb) if not isinstance(annexb, bytes) else annexb
    types: list[int] = []
    pos = data.find(_START)
    while 0 <= pos < len(data) - 3:
        nal_type = data[pos + 3] & 0x1F
        types.append(nal_type)
        if stop_at_slice and nal_type in _SLICES:
            break
        pos = data.find(_START, pos + 3)
    return types


def is_keyframe(annexb: bytes | bytearray | memoryview) -> bool:
    """Whether decoding can start at this frame: an IDR slice preceded by an SPS."""
    types = nal_unit_types(annexb, stop_at_slice=True)
    return bool(types) and types[-1] == IDR and SPS in types

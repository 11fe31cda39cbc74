"""The STOMP codec: pure, stdlib only, so it imports without Django."""

from .frames import HEARTBEAT, Frame, FrameError, FrameTooLarge, encode_frame
from .parser import FrameParser

__all__ = ["HEARTBEAT", "Frame", "FrameError",
    "FrameTooLarge", "FrameParser", "encode_frame"]

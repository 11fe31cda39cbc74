"""The STOMP codec: pure, stdlib only, so it imports without Django."""

from .frames import HEARTBEAT, Frame, FrameError, encode_frame
from .parser import FrameParser

__all__ = ["HEARTBEAT", "Frame", "FrameError", "FrameParser", "encode_frame"]

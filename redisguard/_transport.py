"""Recognise asyncio's own errors from a transport that the peer already closed.

On CPython 3.12, 3.13.0-3.13.9 and 3.14.0, ``StreamWriter.writelines()`` on a socket
transport whose connection was lost raises a transport-internal error instead of a
connection error (redis-py issue #4287): ``AttributeError: 'NoneType' object has no
attribute '_add_writer'`` once the transport has dropped its loop, or ``TypeError:
'NoneType' object is not callable`` after ``close()`` dropped its write callback.
redis-py 8.1 lets it escape, so a pooled asyncio connection that the peer reset while
idle fails its next command with it. Nothing was sent: the connection was already gone.

:func:`closed_transport_error` tells such an error apart from a bug by where it was
raised and the state of the transport it was raised on, never by its message.
"""

from __future__ import annotations

import asyncio
import collections
import os
from types import FrameType, TracebackType

__all__ = ["closed_transport_error"]

_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep
_SHAPES = (AttributeError, TypeError)
_MAX_FRAMES = 64


def closed_transport_error(exc: BaseException) -> bool:
    """True if ``exc`` is asyncio's internal error from writing to a closed transport.

    All of these must hold:

    * ``exc`` is an ``AttributeError`` or ``TypeError`` (the shapes the bug takes);
    * the innermost frame of its traceback is in asyncio's own modules, so the error was
      raised by asyncio, not by the caller's code or a callback asyncio ran;
    * a transport found in that innermost run of asyncio frames (a frame's ``self`` or
      another local, or the transport of a stream or protocol there) reports
      ``is_closing()``, or has lost its event loop.

    Args:
        exc: An exception raised inside a guarded call.

    Returns:
        Whether the error means "the connection was already closed".
    """
    if not isinstance(exc, _SHAPES):
        return False
    frames = _innermost_asyncio_frames(exc.__traceback__)
    return any(_closed(transport) for frame in frames for transport in _transports(frame))


def _innermost_asyncio_frames(tb: TracebackType | None) -> list[FrameType]:
    """The frames from the innermost one outwards while they are asyncio's own."""
    chain: collections.deque[FrameType] = collections.deque(maxlen=_MAX_FRAMES)
    while tb is not None:  # keeps the innermost frames of a deep traceback
        chain.append(tb.tb_frame)
        tb = tb.tb_next
    run: list[FrameType] = []
    for frame in reversed(chain):
        if not _in_asyncio(frame):
            break
        run.append(frame)
    return run


def _in_asyncio(frame: FrameType) -> bool:
    return os.path.abspath(frame.f_code.co_filename).startswith(_ASYNCIO_DIR)


def _transports(frame: FrameType) -> list[asyncio.BaseTransport]:
    """Transports a frame was working on: its locals, or what a stream or protocol holds."""
    found: list[asyncio.BaseTransport] = []
    for value in list(frame.f_locals.values()):
        if isinstance(value, asyncio.BaseTransport):
            found.append(value)
        elif isinstance(value, (asyncio.StreamWriter, asyncio.BaseProtocol)):
            for name in ("transport", "_transport"):
                inner = getattr(value, name, None)
                if isinstance(inner, asyncio.BaseTransport):
                    found.append(inner)
                    break
    return found


def _closed(transport: asyncio.BaseTransport) -> bool:
    try:
        return transport.is_closing() or getattr(transport, "_loop", True) is None
    except Exception:  # a transport that cannot say is not taken as closed
        return False

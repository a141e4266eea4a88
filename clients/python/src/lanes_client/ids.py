"""Time-ordered job ids (UUID version 7, RFC 9562).

lanes takes a client's id as the job id; time-ordered ids keep a large jobs table's id index
fast (every insert lands at its end instead of on a random page).
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48 bits of Unix milliseconds, then a 12-bit counter (so ids made in the
    same millisecond by this process still sort in order), then 62 random bits."""
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            # Start low in the counter's range, leaving room to count up within the millisecond.
            _counter = secrets.randbits(10)
        else:
            _counter += 1
            if _counter > 0xFFF:
                # More than the counter holds in one millisecond: borrow the next one.
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | counter << 64
        | 0b10 << 62
        | secrets.randbits(62)
    )
    return uuid.UUID(int=value)

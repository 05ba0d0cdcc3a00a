"""Request and event ids: 128 random bits as 32 hex digits, like ``uuid4().hex``, but cheap.

``uuid4`` reads ``os.urandom`` on every call, a system call that measured 30-65 us in this
project's sandboxed machines, on every request. These ids need to be unique, not unguessable
(they are not secrets: they are echoed to clients), so a Mersenne Twister seeded once from the OS
serves; each process (and each replica) gets its own seed.
"""

from __future__ import annotations

import random

_rng = random.Random()  # seeded from os.urandom once, at import


def new_id() -> str:
    return f"{_rng.getrandbits(128):032x}"

"""Waiting for something another process or thread does, without asserting on time: ``wait_until``
polls a condition and returns whether it came true; the tests assert on that outcome. The limit only
keeps a hung service or job from hanging the suite."""
import time


def wait_until(condition, limit_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``condition()`` every ``interval_s`` until it is true (-> True) or ``limit_s`` has passed
    (-> its last value, False)."""
    give_up = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() >= give_up:
            return bool(condition())
        time.sleep(interval_s)
    return True

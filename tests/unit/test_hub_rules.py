"""The Event Hubs fault rules (``beam_pipeline.eventhub``) on their own: what an error line says, and what
the idle probe decides (the end to end faults: tests/e2e/test_hub_faults.py)."""
import time

import pytest
from azure.eventhub.exceptions import ConnectError

from beam_pipeline import eventhub
from beam_pipeline.eventhub import (
    HubSettings,
    HubUnavailable,
    ReadPartitionsFn,
    hub_failure,
    unavailable_message,
)

CONN = "Endpoint=sb://127.0.0.1:5999/;SharedAccessKeyName=k;SharedAccessKey=SECRET-KEY;EntityPath=reviews"


def test_the_error_line_names_the_endpoint_and_what_failed_never_the_key(monkeypatch):
    monkeypatch.setenv("EH_TEST_CONN", CONN)
    settings = HubSettings(hub=None, connection_env="EH_TEST_CONN")
    err = hub_failure(settings, "reading its partition ids", ConnectError("Connection refused\nmore detail"))
    assert str(err) == ("event hub sb://127.0.0.1:5999/reviews: reading its partition ids failed after 3 attempts "
                        "(ConnectError: Connection refused)")
    assert "SECRET" not in str(err)
    namespace = HubSettings(hub="h", namespace="ns.servicebus.windows.net")
    assert namespace.endpoint == "sb://ns.servicebus.windows.net/h"


def test_the_step_beam_appends_is_cut_from_the_message():
    assert unavailable_message(HubUnavailable("event hub X: failed [while running 'ReadEventHub/ReadPartitions']")) \
        == "event hub X: failed"
    assert unavailable_message(HubUnavailable("event hub X: failed")) == "event hub X: failed"


class _Settings:
    """A hub whose partition ends at ``last`` (or that is gone: ``last`` an exception)."""

    def __init__(self, last):
        self.last = last

    def call(self, what, fn):
        if isinstance(self.last, Exception):
            raise self.last
        return {"is_empty": self.last < 0, "last_enqueued_sequence_number": self.last}


class _Receiver:
    def __init__(self, next_seq, age_s):
        self.next_seq, self.started, self.closed = next_seq, time.monotonic() - age_s, False

    def close(self):
        self.closed = True


def _reader(last, receiver):
    fn = ReadPartitionsFn(_Settings(last), None)
    fn.setup()
    fn._receivers["0"] = receiver
    return fn


@pytest.mark.parametrize("last, age_s, replaced", [
    (9, 60, False),                          # everything the hub holds was read: idle, keep the receiver
    (-1, 60, False),                         # an empty partition
    (15, 60, True),                          # the hub holds events that never arrived: a new receiver
    (15, eventhub.RECONNECT_AFTER_S - 5, False),   # ... but a young receiver may still be connecting
])
def test_the_probe_replaces_a_receiver_that_misses_what_the_hub_holds(last, age_s, replaced):
    receiver = _Receiver(next_seq=10, age_s=age_s)
    fn = _reader(last, receiver)
    fn._probe("0", receiver)
    assert receiver.closed is replaced
    assert ("0" not in fn._receivers) is replaced


def test_the_probe_of_a_gone_hub_raises():
    receiver = _Receiver(next_seq=10, age_s=60)
    fn = _reader(HubUnavailable("event hub X: probing partition 0 failed"), receiver)
    with pytest.raises(HubUnavailable, match="probing partition 0"):
        fn._probe("0", receiver)

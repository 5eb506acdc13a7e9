"""The bulk input's ack flow: an ack wakes the socket thread only while it waits in select(), and none is lost."""

from __future__ import annotations

import select

from ingest.mqtt_acks import AckFlow
from ingest.mqtt_codec import puback_packets


def _woken(flow: AckFlow) -> bool:
    ready, _, _ = select.select([flow.wake_r], [], [], 0)
    flow.drain_wake()
    return bool(ready)


def test_an_ack_wakes_the_socket_thread_only_while_it_waits_in_select() -> None:
    flow = AckFlow(max_unacked=100)
    flow.opened()
    acks = [flow.make_ack([pid], 1, flow.generation) for pid in (1, 2, 3)]
    flow.handed(3)
    acks[0]()  # the socket thread is busy (decoding): it flushes before it selects again, no wake-up needed
    assert not _woken(flow)
    assert not flow.begin_select(paused=False)  # a PUBACK waits: it must not block
    assert flow.take() == puback_packets([1])
    assert flow.begin_select(paused=False)
    acks[1]()
    acks[2]()  # one wake-up per select(), however many acks arrive
    assert _woken(flow) and not _woken(flow)
    flow.end_select()
    assert flow.take() == puback_packets([2, 3]) and flow.unacked == 0
    flow.close()


def test_a_paused_socket_thread_sees_room_it_missed_and_is_woken_for_room_while_it_waits() -> None:
    flow = AckFlow(max_unacked=2)
    flow.opened()
    first, second = (flow.make_ack([], 1, flow.generation) for _ in range(2))  # QoS 0: no PUBACK, only room
    flow.handed(2)
    assert flow.full()
    first()  # before it selects: begin_select sees the room instead of sleeping on it
    assert not _woken(flow) and not flow.begin_select(paused=True)
    flow.handed(1)
    assert flow.full() and flow.begin_select(paused=True)
    second()
    assert _woken(flow)
    flow.end_select()
    assert not flow.full()
    flow.close()

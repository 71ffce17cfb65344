"""core/latest, core/stats, and the core enums the messages and diagnostics mirror."""
from __future__ import annotations

import threading

from vln_ros.core.control import StopReason
from vln_ros.core.latest import LatestSlot
from vln_ros.core.stats import EventCounters, LatencyWindow, Throttle
from vln_ros.core.tasks import State


def test_latest_slot_keeps_only_the_newest_and_counts_the_rest():
    slot: LatestSlot[int] = LatestSlot()
    assert [slot.put(i) for i in range(10)] == [False] + [True] * 9
    assert slot.replaced == 9
    assert slot.take(0.0) == 9
    assert slot.take(0.01) is None  # nothing queued behind it


def test_latest_slot_wakes_a_waiting_taker_and_close_releases_it():
    slot: LatestSlot[str] = LatestSlot()
    got = []
    t = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    t.start()
    slot.put('frame')
    t.join(2.0)
    assert got == ['frame']
    t = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    t.start()
    slot.close()
    t.join(2.0)
    assert not t.is_alive() and got == ['frame', None] and slot.closed


def test_event_counters_rates_per_interval():
    c = EventCounters(start_s=10.0)
    c.add('frames', 30)
    assert c.rates(11.0) == {'frames': 30.0}
    c.add('frames', 5)
    c.add('errors')
    assert c.rates(11.5) == {'frames': 10.0, 'errors': 2.0}
    assert c.totals() == {'frames': 35, 'errors': 1}
    assert c.rates(12.5) == {'frames': 0.0, 'errors': 0.0}


def test_latency_window_percentiles():
    w = LatencyWindow(size=100)
    assert w.percentile_ms(50) != w.percentile_ms(50)  # NaN while empty
    for i in range(200):
        w.add(i / 1000)
    assert len(w) == 100 and w.percentile_ms(0) == 100.0 and w.percentile_ms(100) == 199.0


def test_throttle_says_yes_once_per_period_and_the_period_may_change():
    throttle = Throttle()
    assert [throttle.ready(t, 1.0) for t in (0.0, 0.5, 0.99, 1.0, 1.5)] == [True, False, False, True, False]
    assert throttle.ready(1.6, 0.0)      # 0: every time
    assert not throttle.ready(1.7, 5.0)  # a longer period, at once
    assert throttle.ready(1.0, 5.0)      # time went backwards: not stuck until the old stamp comes back


def test_task_states_are_the_task_status_message_constants():
    from vln_ros.msg import TaskStatus
    constants = {name.removeprefix('STATE_'): value for name, value in vars(TaskStatus).items()
                 if name.startswith('STATE_')}
    assert constants == {state.name: state.value for state in State}


def test_only_stops_that_are_not_as_planned_are_faults():
    assert {r for r in StopReason if not r.is_fault} == {
        StopReason.NONE, StopReason.NO_PLAN, StopReason.STOP_PLAN, StopReason.PLAN_DONE}


def test_annotated_text_and_its_outline_line_up():
    """The outline is drawn as thin as the text: OpenCV 5 spaces thicker text wider, and a thick shadow came
    apart from the text over a line's length (the debug image and make eval's video were unreadable)."""
    import numpy as np

    from vln_ros.core.annotate import annotate
    line = 'forward, plan 0.7 s old; t 12.5 s, v 0.45 m/s'
    image = annotate(np.full((200, 448, 3), 128, np.uint8), [line], [], False)[:30]
    white = np.where((image > 220).all(axis=2).any(axis=0))[0]
    dark = np.where((image < 40).all(axis=2).any(axis=0))[0]
    assert white.size and dark.size
    assert abs(int(dark.max()) - int(white.max())) <= 3 and abs(int(dark.min()) - int(white.min())) <= 3

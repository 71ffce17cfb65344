"""core/latest and core/stats."""
from __future__ import annotations

import threading

from vln_ros.core.latest import LatestSlot
from vln_ros.core.stats import EventCounters, LatencyWindow


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

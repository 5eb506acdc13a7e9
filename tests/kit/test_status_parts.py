"""The pieces behind the status page, alone: sink errors in words, index colour bands, backlog ages, the KPI
board's bound and chart history, the SVG chart, and the gauges that have a sample from the first scrape."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from prometheus_client import generate_latest

from aggregators.kpi import KpiPoint
from aggregators.windows import WindowSpec
from gateway.backlog_age import BacklogAges
from gateway.charts import device_chart
from gateway.kpi_board import DAY_NS, KpiBoard, chart_window
from gateway.metrics import Metrics
from gateway.sinks.influx import classify_status
from gateway.status_page import explain_error, index_band

S = 10**9
H = 3600 * S


class FakeClock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_sink_errors_in_words() -> None:
    # The sinks' own reasons (classify_status), as the status page receives them.
    e401 = classify_status(401, '{"error":"authorization failed"}', None).reason
    assert explain_error(e401).startswith("The server refused our credentials (HTTP 401)")
    assert "authorization failed" in explain_error(e401)
    e404 = classify_status(404, '{"code":"not found","message":"path not found"}', None).reason
    assert 'api = "v1"' in explain_error(e404) and "path not found" in explain_error(e404)
    e404db = classify_status(404, '{"error":"database not found: \\"citygw\\""}', None).reason
    assert "create_database = true" in explain_error(e404db)
    assert "batch_size" in explain_error(classify_status(413, "too large", None).reason)
    assert "retrying" in explain_error(classify_status(503, "", "1").reason)
    assert explain_error("cannot reach http://127.0.0.1:9/write: [Errno 111] Connection refused").startswith(
        "Cannot reach the server")
    assert explain_error("") == ""


def test_index_bands_use_the_official_colours() -> None:
    assert index_band("us_aqi", 42) == ("Good", "#00E400")
    assert index_band("us_aqi", 101) == ("Unhealthy for Sensitive Groups", "#FF7E00")
    assert index_band("us_aqi", 640)[0] == "Beyond the AQI"  # type: ignore[index]
    assert index_band("eaqi", 1) == ("Good", "#50F0E6") and index_band("eaqi", 6) == ("Extremely poor", "#7D2181")
    assert index_band("caqi", 25) == ("Very low", "#79BC6A") and index_band("caqi", 130)[0] == "Very high"  # type: ignore[index]
    assert index_band("pm2_5", 12) is None and index_band("us_aqi", float("nan")) is None


def test_backlog_age_is_the_wait_of_the_oldest_undelivered_entry() -> None:
    clock = FakeClock()
    ages = BacklogAges(mono=clock, max_marks=8)
    ages.note(10, [10])
    assert ages.age(10) == 0
    clock.now += 1
    ages.note(25, [10])  # entries 11..25 appended during that second
    clock.now += 30
    ages.note(25, [10])
    assert ages.age(10) == 30  # waiting since the mark that first saw them
    assert ages.age(25) == 0
    clock.now += 5
    ages.note(40, [20])
    assert ages.age(20) == 35
    for i in range(40):  # bounded: thinning keeps the list short and ages never read higher than the truth
        clock.now += 1
        ages.note(41 + i, [20])
    assert len(ages._marks) <= 9 and 0 < ages.age(20) <= 75


def _point(device: str, name: str, window: str, start: int, value: float = 1.0) -> KpiPoint:
    size = {"1m": 60 * S, "1h": H, "10s": 10 * S}[window]
    return KpiPoint(name, device, window, start, start + size, "ug/m3", value)


def test_kpi_board_keeps_of_a_point_what_the_status_page_shows() -> None:
    board = KpiBoard(None)
    stats = {"mean": 2.0, "min": 1.0, "max": 3.0, "count": 3, "coverage": 0.75}
    point = KpiPoint("pm10", "a", "1m", 0, 60 * S, "ug/m3", 2.0, stats, {"site": "north"}, valid=False)
    board.add([point, _point("b", "pm10", "1m", 0)])
    kept = {p.device_id: p for p in board.latest()}
    assert kept["a"].fields == {"coverage": 0.75}  # the other statistics are in InfluxDB, not on the page
    assert (kept["a"].value, kept["a"].tags, kept["a"].valid, kept["a"].end_ns) == (2.0, {"site": "north"}, False,
                                                                                   60 * S)
    assert kept["b"].fields == {}


def test_kpi_board_keeps_the_latest_of_every_series_within_its_bound() -> None:
    specs = [WindowSpec.parse(w) for w in ("10s", "1m", "1h")]
    chart = chart_window(specs)
    assert chart is not None and chart.label == "1m"
    board = KpiBoard(chart, max_series=4)
    board.add([_point("a", "pm10", "1m", i * 60 * S, float(i)) for i in range(3)])
    board.add([_point("a", "pm10", "1h", 0), _point("b", "us_aqi", "1h", 0), _point("b", "pm2_5", "10s", 0)])
    latest = board.latest()
    assert len(latest) == 4 and board.evicted == 0
    assert next(p for p in latest if p.window == "1m").value == 2.0  # the latest point of the series
    board.add([_point("c", "pm10", "1m", 0)])
    assert len(board.latest()) == 4 and board.evicted == 1  # bounded, and the drop counted
    history = board.history("a", since_ns=60 * S)
    assert history == {"pm10": ("ug/m3", [(60 * S, 1.0), (120 * S, 2.0)])}  # only the chart window, from since
    assert board.chart_points == 1440
    # A day of points at most: after two days of 1-minute windows the chart holds exactly the last 1,440.
    board.add([_point("d", "no2", "1m", i * 60 * S, float(i)) for i in range(2 * 1440 + 7)])
    ((_unit, points),) = board.history("d", since_ns=0).values()
    assert [v for _, v in points] == [float(i) for i in range(1440 + 7, 2 * 1440 + 7)]


def test_chart_is_valid_svg_with_gaps() -> None:
    start = 0
    points = [(i * 60 * S, float(i % 7)) for i in range(30)] + [(600 * 60 * S, 3.0), (601 * 60 * S, 4.0)]
    svg = device_chart("dev<1>", {"pm10": ("ug/m3", points), "noise_laeq": ("dB", [(5 * 60 * S, 55.0)])},
                       start, DAY_NS, 60 * S, "1m")
    root = ET.fromstring(svg)  # well-formed XML, names escaped
    assert root.tag.endswith("svg") and root.get("data-device") == "dev<1>"
    paths = [p.get("d") or "" for p in root.iter("path")]  # inline SVG in HTML needs no namespace
    assert len(paths) == 2
    assert paths[0].count("M") == 2  # the gap of 570 minutes starts a new line
    assert paths[1].count("L") == 1  # a lone point still draws a stroke
    assert device_chart("x", {}, 0, DAY_NS, 60 * S, "1m") == ""


def test_every_gauge_has_a_sample_from_start() -> None:
    metrics = Metrics()
    metrics.declare(sinks=["influx"], devices=["pm-1"], mqtt_clients=["in", "feed"])
    text = generate_latest(metrics.registry).decode()
    for line in ('citygw_mqtt_connected{client="in"} 0.0', 'citygw_mqtt_connected{client="feed"} 0.0',
                 'citygw_sink_lag{sink="influx"} 0.0', 'citygw_sink_oldest_undelivered_seconds{sink="influx"} 0.0',
                 'citygw_device_available{device="pm-1"} 0.0', "citygw_healthy 1.0", "citygw_queue_depth 0.0",
                 'citygw_device_last_seen_timestamp_seconds{device="pm-1"} 0.0'):
        assert line in text, line

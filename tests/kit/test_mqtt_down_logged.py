"""Finding: a broker that is down at start was never logged, and `citygw_mqtt_connected` had no sample until
the first connection, so an alert on `== 0` never fired.

Now the first failed connect of each outage is logged once — by the MQTT input and by the feed's connection —
with host:port and how to fix it; the gauge reads 0 from the first scrape; the connection is logged with the
number of failed attempts once the broker is there.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.reliability.support import GatewayProcess, StatusPage, kit_config, metric, wait_for
from tests.servers import MQTT_USER, Mosquitto, free_port


def test_broker_down_at_start_is_logged_once_and_the_gauge_reads_zero(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here until the test starts a broker on it
    gw_id = f"down{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=port, route_topic=f"{gw_id}/+/json")
    gateway = GatewayProcess(config, tmp_path / "gateway.log").start()
    broker = Mosquitto(tmp_path / "mosquitto")
    try:
        # The gauge has a sample from the first scrape, before any connection attempt could succeed.
        text = wait_for(status.metrics, 30, "the metrics page")
        assert 'citygw_mqtt_connected{client="in"} 0.0' in text
        assert 'citygw_mqtt_connected{client="feed"} 0.0' in text
        # reconnect_max = 1s: several attempts within a few seconds, and still one line per connection.
        wait_for(lambda: gateway.log().count("cannot connect to MQTT broker") >= 2, 30,
                 "the input's and the feed's failure lines")
        time.sleep(4.0)  # more failed attempts happen here; none may add a line
        log = gateway.log()
        input_lines = [line for line in log.splitlines() if "MQTT input: cannot connect to MQTT broker" in line]
        feed_lines = [line for line in log.splitlines() if "feed: cannot connect to MQTT broker" in line]
        assert len(input_lines) == 1, log
        assert len(feed_lines) == 1, log
        line = input_lines[0]
        assert f"127.0.0.1:{port}" in line and "ERROR" in line
        assert "Connection refused" in line and "Fix: check mqtt.host and mqtt.port" in line
        assert metric(status.metrics(), "citygw_mqtt_connected", client="in") == 0

        broker.port = port
        broker.start()
        wait_for(lambda: metric(status.metrics(), "citygw_mqtt_connected", client="in") == 1, 30,
                 "the input connected")
        wait_for(lambda: metric(status.metrics(), "citygw_mqtt_connected", client="feed") == 1, 30,
                 "the feed connected")
        wait_for(lambda: "failed attempt(s)" in gateway.log(), 10, "the connection logged with the attempts")
        assert status.status()["mqtt_connected"] is True
        # Several connects failed (one line said so), and the connection names how many.
        attempts = re.search(r"connected to MQTT broker [^ ]+ \(session present: \w+\) after (\d+) failed",
                             gateway.log())
        assert attempts is not None and int(attempts.group(1)) >= 3, gateway.log()
        assert gateway.log().count("MQTT input: cannot connect to MQTT broker") == 1
    finally:
        code = gateway.stop()
        broker.close()
    assert code == 0, gateway.log()


WRONG = "n0t-the-Pa55word"


def test_broker_refusing_our_credentials_is_logged_once_per_connection(tmp_path: Path,
                                                                     mosquitto_tls: Mosquitto) -> None:
    gw_id = f"refused{time.time_ns() % 10**8}"
    status = StatusPage()
    config = kit_config(tmp_path, gw_id, status, mqtt_port=mosquitto_tls.port, route_topic=f"{gw_id}/+/json")
    config.write_text(config.read_text().replace('reconnect_max = "1s"\n', f'reconnect_max = "1s"\nusername = '
                                                 f'"{MQTT_USER}"\npassword_env = "TEST_WRONG_MQTT_PASSWORD"\n'))
    def refusals() -> int:  # the broker's own count of refused CONNECTs (it logs the client as <unknown>)
        return mosquitto_tls.log_path.read_text(errors="replace").count("disconnected, not authorised")

    before = refusals()
    gateway = GatewayProcess(config, tmp_path / "gateway.log", env={"TEST_WRONG_MQTT_PASSWORD": WRONG}).start()
    try:
        wait_for(lambda: gateway.log().count("refused the connection") >= 2, 30, "the input's and the feed's line")
        # The broker refused both connections several times; the gateway's log has one line per connection.
        wait_for(lambda: refusals() - before >= 8, 30, "several refused attempts")
        log = gateway.log()
        assert log.count(f"MQTT broker 127.0.0.1:{mosquitto_tls.port} refused the connection") == 1, log
        assert log.count(f"feed: broker 127.0.0.1:{mosquitto_tls.port} refused the connection") == 1, log
        assert "check mqtt.username and password_env/password_file" in log
        assert WRONG not in log  # the secret itself is never logged
    finally:
        code = gateway.stop()
    assert code == 0, gateway.log()

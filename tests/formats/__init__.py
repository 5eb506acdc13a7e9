"""Tests of the MQTT payload formats (ttn_v3, tasmota, zigbee2mqtt, airrohr, telraam, line_protocol)."""

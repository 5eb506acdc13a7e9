"""The OGC SensorThings API v1.1 sink (`[[sensorthings]]`): KPI windows become Observations on a STA server.

Entities (Thing, Location, Sensor, ObservedProperty, Datastream; mapping in gateway/sinks/sta_model.py) are
found or created on first use: looked up by name and properties before anything is created, their ids kept in
the journal's meta table, so a restart or a second gateway process creates no duplicates. Observations go in
one CreateObservations (DataArray) request per batch when the server conforms to the DataArray extension,
else one POST each; with transport = "mqtt" they are published on `v1.1/Datastreams(<id>)/Observations`.

SensorThings has no upsert, so a re-sent window would duplicate its Observation. The sink knows, per Datastream,
the latest window the server holds (asked once per process, and again after any failed write); a window up to
that one (a replay: a stale or lost cursor, a retry after a timeout) is sent only if the server does not hold
it yet; newer windows go straight out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from gateway.journal import KIND_KPI, Entry, Journal
from gateway.sinks import sta_model as model
from gateway.sinks.base import Action, SinkError
from gateway.sinks.sta_http import StaHttp, entity_path, odata_string
from gateway.sinks.sta_mqtt import StaMqttPublisher

if TYPE_CHECKING:
    from gateway.settings import SensorThingsSection, Settings

__all__ = ["SensorThingsSink", "build_sensorthings_sinks", "sensorthings_sink_name"]

log = logging.getLogger("citygw.sensorthings")
S = 10**9


class EntityIds:
    """Found-or-created entity ids: memory, then the journal's meta table, then a look-up, then a create."""

    def __init__(self, http: StaHttp, journal: Journal, sink_name: str) -> None:
        self.http = http
        self.journal = journal
        self.prefix = f"sensorthings|{sink_name}|"
        self._ids: dict[str, Any] = {}
        self.created = 0

    def resolve(self, entity_set: str, key: str, filter_: str, body: dict[str, Any]) -> Any:
        """The id of the entity `key` of `entity_set`; looked up with `filter_`, else created from `body`."""
        meta_key = f"{self.prefix}{entity_set}|{key}"
        if meta_key in self._ids:
            return self._ids[meta_key]
        stored = self.journal.get_meta(meta_key)
        if stored:
            self._ids[meta_key] = orjson.loads(stored)
            return self._ids[meta_key]
        found = self.http.get(entity_set, filter_=filter_, select="id", top="2").get("value", [])
        if len(found) > 1:
            log.warning("sensorthings: %d %s match %s on the server; using the first", len(found), entity_set,
                        key)
        if found:
            iot_id = found[0]["@iot.id"]
        else:
            iot_id = self.http.create(entity_set, body)
            self.created += 1
            log.info("sensorthings: created %s %s", entity_path(entity_set, iot_id), key)
        self._ids[meta_key] = iot_id
        self.journal.append(meta={meta_key: orjson.dumps(iot_id).decode()})
        return iot_id

    def forget(self) -> None:
        """Drop every remembered id (the server lost them): the next use looks them up or creates them again."""
        for meta_key in self._ids:
            self.journal.append(meta={meta_key: ""})
        self._ids.clear()


class SensorThingsSink:
    """KPI points to a SensorThings server; one instance per `[[sensorthings]]` block."""

    only_kind: int | None = KIND_KPI

    def __init__(self, name: str, cfg: SensorThingsSection, settings: Settings, http: StaHttp,
                 journal: Journal, mqtt: StaMqttPublisher | None = None) -> None:
        self.name = name
        self.batch_size = cfg.batch_size
        self.flush_interval_s = cfg.flush_interval
        self.gateway = settings.gateway.id
        self._settings = settings
        self._kpis = set(cfg.kpis)
        self._windows = set(cfg.windows)
        self.http = http
        self.journal = journal
        self.ids = EntityIds(http, journal, name)
        self.mqtt = mqtt
        self._data_array: bool | None = None  # probed on the first write
        # Datastream (JSON of its id) -> start (epoch s) of the latest window the server holds; None: none.
        self._latest: dict[str, int | None] = {}
        self.skipped_present = 0  # windows not sent because the server already held them

    # -- the Sink contract -------------------------------------------------------------------------------

    def accepts(self, entry: Entry) -> bool:
        """Whether this sink sends the entry (a KPI point of a configured name and window)."""
        window = str((entry.extra or {}).get("window", ""))
        return (entry.kind == KIND_KPI and (not self._kpis or entry.quantity in self._kpis)
                and (not self._windows or window in self._windows))

    def body(self, entry: Entry) -> str:
        """The Observation as sent, with the name of its Datastream."""
        p = entry.as_kpi()
        obs = model.observation_body(p.start_ns, p.end_ns, p.value, p.valid, p.fields)
        obs["Datastream"] = {"name": f"{self.gateway}/{p.device_id}/{p.name}/{p.window}"}
        return orjson.dumps(obs).decode()

    def write(self, entries: Sequence[Entry]) -> None:
        """Deliver the batch's observations, or raise a classified SinkError (nothing sent twice on retry)."""
        try:
            self._write([e for e in entries if self.accepts(e)], len(entries))
        except BaseException:
            self._latest.clear()  # part of the batch may have been stored: ask the server again
            raise

    def start(self) -> None:
        """Open the MQTT connection, when Observations go over MQTT (Delivery calls this as it starts)."""
        if self.mqtt is not None:
            self.mqtt.start()

    def close(self) -> None:
        """Close the HTTP session, the MQTT connection and the journal connection."""
        self.http.close()
        if self.mqtt is not None:
            self.mqtt.close()
        self.journal.close()

    # -- internals ---------------------------------------------------------------------------------------

    def _refuse(self, reason: str, batch_len: int) -> SinkError:
        """A problem of one entry: isolate it first (SPLIT), dead-letter it once it is alone (DROP)."""
        return SinkError(Action.SPLIT if batch_len > 1 else Action.DROP, reason)

    def _write(self, entries: list[Entry], batch_len: int) -> None:
        if not entries:
            return
        items: list[tuple[Any, Entry]] = []
        for e in entries:
            if not math.isfinite(e.value):
                raise self._refuse(f"{e.device_id} {e.quantity} window at {model.iso_seconds(e.ts)}: result "
                                   f"{e.value} is not a number SensorThings can carry", batch_len)
            items.append((self._datastream(e, batch_len), e))
        items = self._not_on_server(items)
        if not items:
            return
        if self.mqtt is not None:
            self.mqtt.publish([(ds, self._observation(e)) for ds, e in items])
        elif len(items) > 1 and self._supports_data_array():
            self._create_data_array(items)
        else:
            for ds, e in items:
                self.http.create("Observations", {**self._observation(e), "Datastream": {"@iot.id": ds}})
        for ds, e in items:
            key = orjson.dumps(ds).decode()
            self._latest[key] = max(self._latest.get(key) or 0, e.ts // S)

    def _observation(self, e: Entry) -> dict[str, Any]:
        p = e.as_kpi()
        return model.observation_body(p.start_ns, p.end_ns, p.value, p.valid, p.fields)

    def _datastream(self, e: Entry, batch_len: int) -> Any:
        """The Datastream id of an entry's (device, KPI, window), creating what is missing on the way."""
        device = self._device(e.device_id)
        if device.position is None:
            raise self._refuse(
                f"device {e.device_id} has no coordinates; SensorThings needs a Location for its Observations: "
                f"set lat/lon on its [[devices]] or [[mqtt.routes]] entry, in [locations], or gateway.lat/lon",
                batch_len)
        window = str((e.extra or {}).get("window", ""))
        gw = odata_string(self.gateway)
        thing = model.thing_body(self.gateway, device)
        ids = {
            "thing": self.ids.resolve("Things", e.device_id, f"name eq {odata_string(thing['name'])} and "
                                      f"properties/gateway eq {gw}", thing),
            "sensor": self.ids.resolve("Sensors", device.kind, f"name eq {odata_string(device.kind)} and "
                                       "properties/source eq 'citygw'", model.sensor_body(device.kind)),
            "observed_property": self.ids.resolve(
                "ObservedProperties", e.quantity,
                f"name eq {odata_string(e.quantity)} and properties/source eq 'citygw'",
                model.observed_property_body(e.quantity)),
        }
        body = model.datastream_body(self.gateway, e.device_id, e.quantity, window, e.unit, e.tags, ids)
        return self.ids.resolve("Datastreams", f"{e.device_id}|{e.quantity}|{window}",
                                f"name eq {odata_string(body['name'])} and properties/gateway eq {gw}", body)

    def _device(self, device_id: str) -> model.DeviceInfo:
        s = self._settings
        configured = next((d for d in s.devices if d.id == device_id), None)
        if configured is not None:
            kind, tags = configured.kind, dict(configured.tags)
        elif device_id == s.kpis.aggregate_id:
            kind, tags = "citygw-aggregate", {}
        else:
            kind, tags = "mqtt", {}
        where = s.device_location(device_id)
        position: tuple[float, ...] | None = None
        if where is not None and where.point is not None:
            position = (*where.point, where.alt) if where.alt is not None else where.point
        return model.DeviceInfo(device_id, kind, tags, position)

    def _supports_data_array(self) -> bool:
        if self._data_array is None:
            self._data_array = any("data-array" in c for c in self.http.conformance())
            log.info("sensorthings %s: DataArray extension %s", self.http.root,
                     "available: batches go in one CreateObservations request" if self._data_array
                     else "not advertised: one POST per Observation")
        return self._data_array

    def _create_data_array(self, items: list[tuple[Any, Entry]]) -> None:
        components = ["phenomenonTime", "resultTime", "result", "resultQuality", "parameters"]
        groups: dict[str, tuple[Any, list[list[Any]]]] = {}
        for ds, e in items:
            obs = self._observation(e)
            row = [obs.get(c) for c in components]
            groups.setdefault(orjson.dumps(ds).decode(), (ds, []))[1].append(row)
        body = [{"Datastream": {"@iot.id": ds}, "components": components, "dataArray": rows}
                for ds, rows in groups.values()]
        answer = self.http.post_json("CreateObservations", body)
        if not isinstance(answer, list) or len(answer) != len(items):
            raise SinkError(Action.RETRY, f"CreateObservations answered {str(answer)[:200]!r}, expected "
                                          f"{len(items)} self links")
        refused = sum(1 for link in answer if not str(link).startswith(("http://", "https://")))
        if refused:
            # Created rows are not sent again: the next write checks the server first (_verify).
            raise SinkError(Action.SPLIT, f"the server refused {refused} of {len(items)} observations "
                                          "in CreateObservations")

    def _not_on_server(self, items: list[tuple[Any, Entry]]) -> list[tuple[Any, Entry]]:
        """The items whose window the server does not hold yet; only replayed windows cost a query."""
        by_ds: dict[str, list[tuple[Any, Entry]]] = {}
        for ds, e in items:
            by_ds.setdefault(orjson.dumps(ds).decode(), []).append((ds, e))
        keep: list[tuple[Any, Entry]] = []
        for key, group in by_ds.items():
            path = f"{entity_path('Datastreams', group[0][0])}/Observations"
            if key not in self._latest:
                newest = self._query(path, orderby="phenomenonTime desc", select="phenomenonTime", top="1")
                self._latest[key] = max((s for o in newest if (s := _start_s(o.get("phenomenonTime")))), default=None)
            latest = self._latest[key]
            replayed = [e.ts for _, e in group if latest is not None and e.ts // S <= latest]
            present: set[int | None] = set()
            if replayed:
                flt = (f"phenomenonTime ge {model.iso_seconds(min(replayed))} and "
                       f"phenomenonTime le {model.iso_seconds(max(replayed))}")
                present = {_start_s(o.get("phenomenonTime"))
                           for o in self._query(path, filter_=flt, select="phenomenonTime", top="100")}
            for ds, e in group:
                if e.ts // S in present:
                    self.skipped_present += 1
                else:
                    keep.append((ds, e))
        return keep

    def _query(self, path: str, **query: str) -> list[dict[str, Any]]:
        """Every entity a query on a Datastream's Observations answers; a vanished Datastream is found again."""
        try:
            return list(self.http.get_all(path, **query))
        except SinkError as exc:
            if "HTTP 404" in exc.reason:
                self.ids.forget()  # the server lost the Datastream: find or create everything again
                raise SinkError(Action.RETRY, f"{path.split('/')[0]} is gone from the server; its entities "
                                              "will be looked up or created again") from None
            raise


def _start_s(phenomenon_time: Any) -> int | None:
    """Epoch seconds of the start of an ISO 8601 instant or interval."""
    if not isinstance(phenomenon_time, str):
        return None
    try:
        return int(datetime.fromisoformat(phenomenon_time.split("/")[0].replace("Z", "+00:00")).timestamp())
    except ValueError:
        return None


def sensorthings_sink_name(cfg: SensorThingsSection) -> str:
    """A stable cursor name for a SensorThings sink."""
    return cfg.name or f"sensorthings:{cfg.url.rstrip('/')}"


def build_sensorthings_sinks(settings: Settings) -> list[SensorThingsSink]:
    """One sink per [[sensorthings]] block (secrets read from env or files here, never logged)."""
    from gateway.settings import read_secret

    sinks = []
    for cfg in settings.sensorthings:
        name = sensorthings_sink_name(cfg)
        password = read_secret(cfg.password_env, cfg.password_file, "sensorthings.password")
        token = read_secret(cfg.token_env, cfg.token_file, "sensorthings.token")
        http = StaHttp(cfg.url, cfg.username, password, token, cfg.ca_file, cfg.verify_tls, cfg.timeout)
        mqtt = None
        if cfg.transport == "mqtt":
            mqtt = StaMqttPublisher(cfg, settings.gateway.id, cfg.username, password)
        sinks.append(SensorThingsSink(name, cfg, settings, http, Journal(settings.journal_path, "normal"), mqtt))
    return sinks

"""Checks of a loaded config against this machine: secrets, overrides, inputs and sinks, the data directory.

`load_settings` checks the file itself; these checks need the environment and the filesystem, so they run
in `citygw check-config` (errors and warnings) and at the start of `citygw run` (errors stop it).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from gateway.settings import ConfigProblem, Settings, _apply_env_overrides, _line_index

__all__ = ["Finding", "check_environment"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found on this machine; `error` ones stop `run`, warnings are printed."""

    problem: ConfigProblem
    error: bool

    def __str__(self) -> str:
        return str(self.problem) if self.error else f"warning: {self.problem}"


def check_environment(settings: Settings, path: str | os.PathLike[str] | None,
                      env: Mapping[str, str] | None = None, *, for_run: bool = False) -> list[Finding]:
    """Every finding about secrets, CITYGW_* overrides, inputs/sinks and the data directories.

    `for_run`: a data directory this user cannot create is an error (check-config may run as another user
    than the service, so there it is a warning).
    """
    env = os.environ if env is None else env
    file = str(path) if path is not None else "<defaults>"
    text = Path(path).read_text(encoding="utf-8") if path is not None else ""
    index = _line_index(text)

    def at(*key: str | int) -> int:
        for cut in range(len(key), 0, -1):
            if key[:cut] in index:
                return index[key[:cut]]
        return 0

    findings: list[Finding] = []

    def add(error: bool, line: int, key: str, message: str) -> None:
        findings.append(Finding(ConfigProblem(file, line, key, message), error))

    # Every *_env (a secret's variable) and *_file (a secret, a CA, a client certificate) the config names: an
    # unset variable or an unreadable file fails at `run` only; say so now.
    refs = [(key, value) for key, value in _leaves(settings.model_dump(), ())
            if isinstance(key[-1], str) and ((key[-1].endswith("_env") and value)
                                             or (key[-1].endswith("_file") and value is not None))
            and (key[0] != "mqtt" or settings.mqtt.host)]  # without a broker the [mqtt] files are never read
    named_by_config = {str(value) for key, value in refs if str(key[-1]).endswith("_env")}
    for key, value in refs:
        dotted = ".".join(str(k) if not isinstance(k, int) else f"[{k}]" for k in key).replace(".[", "[")
        if str(key[-1]).endswith("_env"):
            if value not in env:
                # check-config may run in another environment than the service: there this is a warning.
                add(for_run, at(*key), dotted, f"environment variable {value} is not set here: `run` fails "
                    "without it; export it (or set it in the service's EnvironmentFile), or use a *_file secret")
            continue
        path = Path(value)
        if not os.access(path, os.R_OK):
            reason = "does not exist" if not path.exists() else "is not readable by this user"
            hint = ("create it (mode 0600, owned by the user the gateway runs as)" if dotted.endswith(
                ("password_file", "token_file")) else "check the path, and that the gateway's user may read it")
            add(for_run, at(*key), dotted, f"{path} {reason}: {hint}")  # the kit may not be this machine

    # CITYGW_* variables that override nothing are most likely misspelt.
    applied = set(_apply_env_overrides({}, env).values())
    for var in sorted(v for v in env if v.startswith("CITYGW_")):
        if var not in applied and var not in named_by_config:
            close = difflib.get_close_matches(var, _override_names(), n=1, cutoff=0.8)
            hint = f"did you mean {close[0]}?" if close else (
                "overrides are CITYGW_<SECTION>_<KEY> for a scalar of [gateway], [mqtt], [journal], "
                "[aggregation] or [local_store] (e.g. CITYGW_MQTT_HOST); check its spelling")
            add(False, 0, "", f"environment variable {var} overrides nothing: {hint}")

    # Something to read and somewhere to deliver.
    if not settings.devices and not settings.mqtt.routes and not settings.nats.routes:
        add(False, 0, "", "no input: no [[devices]], [[mqtt.routes]] or [[nats.routes]] — the gateway would record "
            "nothing")
    has_feed = bool(settings.mqtt.host and settings.mqtt.feed.enabled)
    city_feeds = bool(settings.ngsi_ld or settings.sensorthings)
    if not settings.influx and not settings.local_store_enabled and not has_feed and not city_feeds:
        add(True, at("local_store", "enabled"), "local_store.enabled",
            "no sink: no [[influx]], [[ngsi_ld]] or [[sensorthings]], no MQTT feed and the local store is off — "
            "readings would only pile up "
            "in the journal; configure a sink or remove `enabled = false`")

    # Directories the gateway writes.
    dirs: list[tuple[tuple[str, ...], Path]] = [(("gateway", "data_dir"), settings.gateway.data_dir)]
    if settings.journal.path is not None:
        dirs.append((("journal", "path"), settings.journal.path.parent))
    if settings.local_store_enabled and settings.local_store.path is not None:
        dirs.append((("local_store", "path"), settings.local_store.path))
    for key, directory in dirs:
        problem = _directory_problem(directory)
        if problem is not None:
            error, message = problem
            add(error or for_run, at(*key) or at("gateway", "data_dir"), ".".join(key), message)
    return findings


def _override_names() -> list[str]:
    """Every CITYGW_<SECTION>_<KEY> name that overrides something."""
    candidates = {}
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for key in model.model_fields:
                candidates[f"CITYGW_{section}_{key}".upper()] = "x"
    return sorted(set(_apply_env_overrides({}, candidates).values()))


def _leaves(data: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(key path, value) of every scalar in a model dump."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _leaves(v, (*path, i))
    else:
        yield path, data


def _directory_problem(directory: Path) -> tuple[bool, str] | None:
    """(is it an error, what is wrong and how to fix it) for a directory the gateway must write, or None."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == directory else f" ({directory} cannot be created under it)"
        return True, f"{probe} is a file, not a directory{where}: choose another path (e.g. /var/lib/citygw)"
    if probe == directory and not os.access(directory, os.W_OK | os.X_OK):
        return True, (f"directory {directory} is not writable by this user (uid {os.geteuid()}): run as its "
                      f"owner (sudo -u citygw …) or fix with: chown -R citygw: {directory}")
    if probe != directory and not os.access(probe, os.W_OK | os.X_OK):
        return False, (f"{directory} does not exist and this user cannot create it in {probe}: "
                       "`sudo citygw service install` creates /var/lib/citygw for the citygw user")
    return None

#!/usr/bin/env bash
# Rehearse docs/deploy.md on a fresh Debian 12 machine with systemd as PID 1.
#
# NOT run by CI and not by `scripts/dev.sh test`: it needs root on a Debian host, debootstrap and
# systemd-nspawn, the Debian mirror and PyPI, and takes about eight minutes. Run it by hand after changing
# docs/deploy.md, gateway/service.py or gateway/data/*:
#
#   sudo bash scripts/rehearse-deploy.sh [REV]     # REV: the commit whose wheel is installed (default HEAD)
#
# The machine: a Debian bookworm root file system made by debootstrap in /var/tmp/citygw-rehearsal, booted with
# `systemd-nspawn -b` (systemd is PID 1 inside; a `systemctl reboot` inside ends nspawn with status 133 and the
# loop below boots it again: a reboot-equivalent in which every process dies, /run and /tmp are emptied and only
# the disk stays). The technician: a user `pi` with sudo, as Raspberry Pi Imager makes one. The container shares
# the host's network, so the guest's Mosquitto takes 127.0.0.1:1883 and the gateway 127.0.0.1:8765 on the host
# while it runs: both must be free.
#
# What is run as written in docs/deploy.md: building the wheel (step 2, in an export of REV), the venv install,
# `citygw service install` (3), the time check (5), `check-config --connect` (6), `systemctl enable --now`
# and `systemctl status` (7), the field commands (7), journald's persistent storage (8) and the update (9).
# What stands in for the kit: no serial sensor (step 4 needs a Pi); a Mosquitto on the machine and a shell loop
# publishing two devices' readings every 2 s over MQTT. What it checks: the service is active as user citygw
# (and its process runs with citygw's uid, in dialout); /healthz and / answer on 127.0.0.1:8765; `citygw tail`
# shows readings; the journal's readings are the same before and after `systemctl restart citygw` and after a
# guest reboot, and its sequence continues; a SIGKILLed gateway is restarted; `citygw backlog` runs.
set -euo pipefail

REV=${1:-HEAD}
ROOT=/var/tmp/citygw-rehearsal
MIRROR=${MIRROR:-http://deb.debian.org/debian}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /var/tmp/citygw-rehearsal-src.XXXXXX)
FAILED=0

say() { printf '\n=== %s\n' "$*"; }
check() {  # check DESCRIPTION COMMAND...: run the command, report PASS or FAIL
    local what=$1; shift
    if "$@"; then echo "PASS: $what"; else echo "FAIL: $what"; FAILED=1; fi
}
nspawn_pid() { pgrep -f "^systemd-nspawn -b -D $ROOT" | head -1; }
guest() {  # run a command as root inside the booted machine
    local leader
    leader=$(pgrep -P "$(nspawn_pid)" | head -1)
    nsenter -t "$leader" -m -u -i -p -C -- /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
as_pi() { guest runuser -l pi -c "$*"; }  # the technician, in a login shell in /home/pi
wait_booted() {
    for _ in $(seq 120); do
        if [ -n "$(nspawn_pid)" ] && state=$(guest systemctl is-system-running 2>/dev/null) \
            && { [ "$state" = running ] || [ "$state" = degraded ]; }; then
            return 0
        fi
        sleep 1
    done
    echo "the machine did not boot"; tail -30 "$WORK/nspawn.log"; exit 1
}
stop_machine() {
    if [ -n "$(nspawn_pid)" ]; then
        guest systemctl poweroff || true
        for _ in $(seq 60); do [ -z "$(nspawn_pid)" ] && break; sleep 1; done
    fi
}
trap stop_machine EXIT

say "host tools"
apt-get install -y -qq debootstrap systemd-container >/dev/null

say "a fresh Debian bookworm in $ROOT"
stop_machine
rm -rf "$ROOT"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,sudo,iproute2,procps,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log"
echo kit-rehearsal >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkit-rehearsal\n' >"$ROOT/etc/hosts"
# Only where the host reaches HTTPS through an intercepting proxy: the guest must trust the same CAs for pip.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null
fi
# The rehearsal's own probe of the journal, run as citygw: readings stamped before a time, and the last seq.
cat >"$ROOT/usr/local/bin/rehearsal-count" <<'EOF'
#!/opt/citygw/bin/python3
import sys
from pathlib import Path
from gateway.fieldcmds import JournalReader
reader = JournalReader(Path("/var/lib/citygw/journal.sqlite"))
before = int(sys.argv[1]) if len(sys.argv) > 1 else 2**62
readings = sum(1 for row in reader.between(0, before) if row[1] == 0)
print(f"last_seq={reader.last_seq()} readings_before={readings}")
EOF
chmod 755 "$ROOT/usr/local/bin/rehearsal-count"

say "boot it (systemd-nspawn -b; a reboot inside boots it again)"
cat >"$WORK/boot.sh" <<EOF
#!/bin/sh
while :; do
    systemd-nspawn -b -D $ROOT --machine=kit-rehearsal --register=no --keep-unit --console=passive
    rc=\$?
    echo "nspawn exited \$rc"
    [ "\$rc" = 133 ] || break
done
EOF
setsid sh "$WORK/boot.sh" >"$WORK/nspawn.log" 2>&1 </dev/null &
wait_booted
check "systemd is PID 1 in the machine" test "$(guest cat /proc/1/comm)" = systemd
guest sh -c 'useradd -m -s /bin/bash -G sudo pi && echo "pi ALL=(ALL) NOPASSWD:ALL" >/etc/sudoers.d/010_pi-nopasswd'

say "step 2: build the wheel of $REV (on the development machine) and copy it over"
git -C "$REPO" archive "$REV" | tar -x -C "$WORK"
(cd "$WORK" && python3 -m pip wheel -q --no-deps -w dist . 2>/dev/null)
cp "$WORK"/dist/citygw-*-py3-none-any.whl "$ROOT/home/pi/"
guest chown pi:pi /home/pi/ -R
WHEEL=$(basename "$WORK"/dist/citygw-*-py3-none-any.whl)

say "steps 1-2 (plain Debian): python3-venv, the venv, the command on the PATH"
as_pi "sudo apt-get update -qq && sudo apt install -y -qq python3-venv >/dev/null 2>&1"
as_pi "sudo python3 -m venv /opt/citygw && sudo /opt/citygw/bin/pip install -q ./$WHEEL"
as_pi "/opt/citygw/bin/citygw --version && sudo ln -s /opt/citygw/bin/citygw /usr/local/bin/citygw"

say "step 3: sudo citygw service install"
as_pi "sudo citygw service install"
check "user citygw in dialout" guest sh -c 'id -nG citygw | grep -qw dialout'
check "config citygw 0600, env root 0600, data dir citygw 0750" guest sh -c \
    'test "$(stat -c %U:%a /etc/citygw/citygw.toml)" = citygw:600 && test "$(stat -c %U:%a /etc/citygw/citygw.env)" = root:600 && test "$(stat -c %U:%a /var/lib/citygw)" = citygw:750'

say "step 5: time"
as_pi "timedatectl | grep -E 'synchronized|NTP service'; sudo systemctl enable systemd-time-wait-sync.service"

say "step 6: configure (a broker on this machine stands in for the city's) and check"
as_pi "sudo apt install -y -qq mosquitto mosquitto-clients >/dev/null 2>&1"
as_pi 'sudo sed -i "s/^id = \"kit-01\"/id = \"kit-rehearsal\"/" /etc/citygw/citygw.toml && sudo tee -a /etc/citygw/citygw.toml >/dev/null <<EOF

# rehearsal: readings published to a broker on this machine (sensors/<device>/json)
[mqtt]
host = "127.0.0.1"
port = 1883

[[mqtt.routes]]
topic = "sensors/+/json"
format = "json"
device_id = "{1}"

# A daily window keeps the day'"'"'s readings in the journal (to rebuild it after a restart), so the counts
# below compare like with like whatever the hour.
[aggregation]
windows = ["1m", "1h", "1d"]
EOF'
check "check-config --connect as citygw" as_pi "sudo -u citygw citygw check-config --connect /etc/citygw/citygw.toml"
publisher() {
    guest systemd-run --quiet --unit=rehearsal-publisher /bin/sh -c 'i=0; while :; do i=$((i+1)); t=$(date +%s%N);
        mosquitto_pub -q 1 -t sensors/air-1/json -m "{\"device_id\":\"air-1\",\"ts\":$t,\"values\":{\"pm2_5\":$((i % 30 + 5)),\"pm10\":$((i % 40 + 10))}}";
        mosquitto_pub -q 1 -t sensors/noise-1/json -m "{\"device_id\":\"noise-1\",\"ts\":$t,\"values\":{\"noise_laeq\":$((i % 20 + 50))}}";
        sleep 2; done'
}
publisher

say "step 7: start it and look at it"
as_pi "sudo systemctl enable --now citygw && sleep 5 && systemctl status citygw --no-pager | head -8"
check "citygw active" as_pi "systemctl is-active --quiet citygw"
check "unit runs as User=citygw" test "$(as_pi 'systemctl show citygw -p User --value')" = citygw
check "its process has citygw's uid and dialout" as_pi \
    'pid=$(systemctl show citygw -p MainPID --value); grep -q "^Uid:\s*$(id -u citygw)\s" /proc/$pid/status && grep -q "^Groups:.*\b20\b" /proc/$pid/status'
status_get() { as_pi "python3 -c 'import urllib.request,sys; r=urllib.request.urlopen(\"http://127.0.0.1:8765$1\", timeout=5); sys.stdout.write(str(r.status) + \" \" + r.read(200).decode(errors=\"replace\"))'"; }
health=$(status_get /healthz | tr -d '\n')
page=$(status_get / | head -c 3)
check "/healthz answers 200 ok (got: $health)" test "$health" = "200 ok"
check "the status page answers 200 (got: $page)" test "$page" = 200
check "citygw tail shows readings" as_pi "sudo -u citygw citygw tail --count 2 --duration 30 | grep -q ' = '"
check "citygw backlog runs" as_pi "sudo -u citygw citygw backlog"

say "restart and reboot: the journal stays"
sleep 6
T=$(date +%s%N)
sleep 3
before=$(as_pi "sudo -u citygw rehearsal-count $T")
echo "before:          $before"
as_pi "sudo systemctl restart citygw" && sleep 6
after_restart=$(as_pi "sudo -u citygw rehearsal-count $T")
echo "after restart:   $after_restart"
check "systemctl restart keeps the journal's readings" test "${before#* }" = "${after_restart#* }"
check "and its sequence goes on" test "$(as_pi "sudo -u citygw rehearsal-count" | sed 's/last_seq=\([0-9]*\).*/\1/')" -gt \
    "$(echo "$before" | sed 's/last_seq=\([0-9]*\).*/\1/')"
as_pi "sudo systemctl reboot" || true
for _ in $(seq 60); do grep -q "nspawn exited 133" "$WORK/nspawn.log" && break; sleep 1; done
wait_booted
after_reboot=$(as_pi "sudo -u citygw rehearsal-count $T")
echo "after reboot:    $after_reboot"
check "the machine rebooted" grep -q "nspawn exited 133" "$WORK/nspawn.log"
booted=$(as_pi 'systemctl show citygw -p User -p ActiveState --value' | sort | tr '\n' ' ')
check "citygw started at boot, as citygw (got: $booted)" test "$booted" = "active citygw "
check "a reboot keeps the journal's readings" test "${before#* }" = "${after_reboot#* }"
publisher
as_pi "sudo systemctl kill -s KILL citygw" && sleep 8
check "Restart=always brings a SIGKILLed gateway back" test "$(as_pi 'systemctl show citygw -p NRestarts --value')" -ge 1
check "active again" as_pi "systemctl is-active --quiet citygw"

say "step 8: logs kept on disk"
as_pi 'sudo mkdir -p /var/log/journal /etc/systemd/journald.conf.d
echo -e "[Journal]\nSystemMaxUse=100M" | sudo tee /etc/systemd/journald.conf.d/size.conf
sudo systemctl restart systemd-journald'
check "sudo journalctl shows the gateway's start line" as_pi "sudo journalctl -u citygw -b | grep -q 'running: 0 device(s), 1 MQTT route(s)'"

say "step 9: update (the same wheel again: a same-version rebuild needs --force-reinstall)"
as_pi "sudo systemctl stop citygw
sudo /opt/citygw/bin/pip install -q --upgrade --force-reinstall ./$WHEEL
sudo citygw service install >/dev/null
sudo -u citygw citygw check-config --connect /etc/citygw/citygw.toml
sudo systemctl start citygw"
sleep 5
check "active after the update" as_pi "systemctl is-active --quiet citygw"
check "the update keeps the journal's readings" test "${before#* }" = "$(as_pi "sudo -u citygw rehearsal-count $T" | sed 's/^[^ ]* //')"

say "done: $( [ $FAILED = 0 ] && echo 'every check passed' || echo 'SOME CHECKS FAILED')"
rm -rf "$WORK"
exit $FAILED

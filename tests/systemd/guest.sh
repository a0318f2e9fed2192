# Guest side of tests/systemd/run: sourced by bash inside a real-systemd container.
#
# What the host binds read-only: the agent at /usr/local/bin/homelab-agent, the fake NixOS
# flake (agent/fixtures/fake-system) at $FIXTURE, this directory at /usr/local/share/hla-tests,
# and the unit files and config rendered from the NixOS module (units.nix) at $UNITS/<variant>/.
#
# The fake machine: /srv/homelab is the git repository the agent polls (host pi1);
# switch-to-configuration logs every call to $FAKE/stc.log, dumps its environment into
# $FAKE/env/, and moves $FAKE/run/current-system. probe.service is the unit the systemd
# health check watches; a file $FAKE/slow holding seconds makes the command check slow.
set -u
FAKE=/var/lib/fake-machine
REPO=/srv/homelab
FIXTURE=/usr/local/share/fake-system
UNITS=/usr/local/share/hla-units
SERVICE=homelab-agent.service

# setup VARIANT: installs the rendered units and config, the fake machine and its repository.
setup() {
  mkdir -p "$FAKE/run" "$FAKE/profiles" "$FAKE/env" "$FAKE/faults" /etc/homelab-agent "$REPO"
  install -m 0644 "$UNITS/$1/homelab-agent.service" "$UNITS/$1/homelab-agent.timer" /etc/systemd/system/
  install -m 0644 "$UNITS/$1/config.toml" /etc/homelab-agent/config.toml
  probe active
  git -C "$REPO" init -q -b main
  cp "$FIXTURE"/flake.nix "$FIXTURE"/flake.lock "$FIXTURE"/build.sh \
    "$FIXTURE"/switch-to-configuration.sh "$REPO"/
  homelab-agent --config /etc/homelab-agent/config.toml config check >/dev/null
}

# setup_extra VARIANT: installs and enables the module's other units (homelab-agent-*.service,
# e.g. the boot verification), as NixOS would at the next boot.
setup_extra() {
  local f
  for f in "$UNITS/$1"/extra/*.service; do
    [ -e "$f" ] || continue
    install -m 0644 "$f" /etc/systemd/system/
    systemctl enable "${f##*/}" 2>&1 | grep -v '^Created symlink' >&2
  done
  systemctl daemon-reload
}
# verify_unit: the installed unit that runs `homelab-agent verify-boot`.
verify_unit() { grep -l 'verify-boot' /etc/systemd/system/homelab-agent-*.service 2>/dev/null | head -n 1 | xargs -r basename; }

# probe STATE: makes probe.service active, failed, missing or flapping, as systemd sees it.
probe() {
  systemctl stop probe.service 2>/dev/null
  systemctl reset-failed probe.service 2>/dev/null
  rm -f /etc/systemd/system/probe.service
  case $1 in
  active) printf '[Service]\nExecStart=/bin/sleep infinity\n' ;;
  failed) printf '[Service]\nExecStart=/bin/false\n' ;;
  # Crash-looping on a program that cannot start (Type=exec: never active in between). A
  # Type=simple unit crash-looping on /bin/false is active for an instant every cycle, and a
  # single is-active sample can catch that instant.
  flapping) printf '[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=exec\nExecStart=/nonexistent/probe\nRestart=always\nRestartSec=300ms\n' ;;
  missing) ;;
  esac >"$FAKE/probe.service"
  [ "$1" = missing ] || cp "$FAKE/probe.service" /etc/systemd/system/probe.service
  systemctl daemon-reload
  case $1 in
  active | flapping) systemctl start probe.service ;;
  failed) systemctl start probe.service 2>/dev/null || true ;;
  esac
}

# commit NAME [MODE] [BUILD] [HEALTHY] [KERNEL]: a new commit for host pi1; prints its id.
# KERNEL (default k1) names the fake system's kernel and initrd: another one is a reboot deploy.
commit() {
  cat >"$REPO/hosts.nix" <<NIX
{ system = "$(uname -m)-linux"; fake = "$FAKE";
  hosts = { pi1 = { content = "$1"; mode = "${2:-ok}"; build = "${3:-ok}"; healthy = ${4:-true}; kernel = "${5:-k1}"; }; }; }
NIX
  git -C "$REPO" add -A
  git -C "$REPO" -c user.name=t -c user.email=t@example.org commit -q --allow-empty -m "pi1: $1"
  git -C "$REPO" rev-parse HEAD
}

agent() { homelab-agent --config /etc/homelab-agent/config.toml "$@"; }
current() { readlink "$FAKE/run/current-system"; }
prop() { systemctl show -P "$2" "${1:-$SERVICE}"; }

# settle [SECONDS]: waits until the agent's unit is inactive or failed (no restart pending).
settle() {
  local i state
  for ((i = 0; i < ${1:-60} * 10; i++)); do
    state=$(prop "$SERVICE" ActiveState)
    case $state in inactive | failed) return 0 ;; esac
    sleep 0.1
  done
  echo "settle: $SERVICE still $state/$(prop "$SERVICE" SubState) after ${1:-60}s" >&2
  return 1
}

# wait_status REGEX [SECONDS]: until the unit's STATUS= text matches.
wait_status() {
  local i
  for ((i = 0; i < ${2:-30} * 20; i++)); do
    prop "$SERVICE" StatusText | grep -Eq -- "$1" && return 0
    sleep 0.05
  done
  echo "wait_status: no STATUS= matching '$1' within ${2:-30}s (last: $(prop "$SERVICE" StatusText))" >&2
  return 1
}

# wait_restarts CURSOR N [SECONDS]: until systemd has scheduled N restarts of the unit
# since the journal CURSOR ("Scheduled restart job", SD_MESSAGE_UNIT_RESTART_SCHEDULED).
wait_restarts() {
  local i n
  for ((i = 0; i < ${3:-30} * 10; i++)); do
    n=$(restarts_since "$1") && [ "$n" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "wait_restarts: $n restarts scheduled, wanted $2 within ${3:-30}s" >&2
  return 1
}
restarts_since() { count_since "$1" UNIT=$SERVICE MESSAGE_ID=5eb03494b6584870a536b337290809b3; }

# count_since CURSOR KEY=VALUE...: how many journal entries after CURSOR have all these
# fields; "journal error" (never a count) when the cursor is unusable. No journalctl
# matches: with matches, journalctl 252 --after-cursor skips the first matching entry.
count_since() {
  local out kv
  out=$(journalctl --after-cursor="$1" -o json --no-pager) || { echo "journal error"; return 1; }
  shift
  for kv in "$@"; do out=$(printf '%s\n' "$out" | grep -F "\"${kv%%=*}\":\"${kv#*=}\""); done
  printf '%s' "$out" | grep -c .
}

# wait_killed [SECONDS]: until the unit's main process was killed by a signal.
wait_killed() {
  local i
  for ((i = 0; i < ${1:-30} * 20; i++)); do
    [ "$(prop "$SERVICE" ExecMainCode)" = 2 ] && return 0
    sleep 0.05
  done
  echo "wait_killed: the main process was not killed within ${1:-30}s" >&2
  return 1
}

# pids_of_unit UNIT: every process in the unit's cgroup (name=systemd hierarchy or v2).
pids_of_unit() {
  local d
  for d in /proc/[0-9]*; do
    grep -qs "/$1\$" "$d/cgroup" && echo "${d#/proc/}"
  done
}

# has_notify_socket PID: whether that process was started with NOTIFY_SOCKET.
has_notify_socket() { tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -q '^NOTIFY_SOCKET='; }

# A journal cursor before a step, so a check reads only what the step caused.
cursor() { journalctl -n 1 -o export --no-pager | sed -n 's/^__CURSOR=//p'; }
journal_since() { journalctl --after-cursor="$1" -o json --no-pager; }

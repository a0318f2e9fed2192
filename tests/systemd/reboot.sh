# shellcheck shell=bash disable=SC2154 # work, FAKE, SERVICE, BIN, root, here: set by ./run
# Reboot groups of tests/systemd/run (sourced there): machines that really reboot
# (machine.sh: the overlay kept on disk, the container started again when its systemd
# reboots, the bootloader and stage 2 modelled between boots).

# machine_boot NAME VARIANT: boots machine NAME with the agent, the fake flake and the
# rendered units bound in, then installs VARIANT's units and the fake machine (guest.sh
# setup). The group's other helpers (g, status_json...) then act on it.
machine_boot() {
  export REAL_SYSTEMD_NAME=$1
  own_cgroup 2>/dev/null || echo "# $GROUP: no cgroup of its own" >&2
  MACHINE_BIND_RO="$BIN:/usr/local/bin/homelab-agent
    $root/agent/fixtures/fake-system:/usr/local/share/fake-system
    $here:/usr/local/share/hla-tests $work/units:/usr/local/share/hla-units" \
    machine_up "$1" >"$work/$1.up" 2>&1 || {
    fail "$GROUP: machine $1 boots" "$(tail -n 20 "$work/$1.up")"
    return 1
  }
  local out
  if ! out=$(g "setup $2" 2>&1); then
    fail "$GROUP: agent installed from the rendered units" "$out"
    return 1
  fi
}

# reboot_now NAME: `systemctl reboot` inside, then waits until the next boot is up.
reboot_now() {
  local n
  n=$(machine_boots "$1")
  REAL_SYSTEMD_NAME=$1 g 'systemctl --no-block reboot' >/dev/null 2>&1
  machine_reboot_wait "$1" "$n"
}

# booted / default / bootlog: what the machine booted, the profile's default generation,
# and the bootloader's record of the last boot (JSON).
booted() { g "readlink $FAKE/run/booted-system"; }
profile_default() { g "readlink -f $FAKE/profiles/system"; }
bootlog_last() { g "tail -n 1 $FAKE/bootloader/log"; }

# ---- the harness itself -----------------------------------------------------------------------

group_reboot_harness() {
  local m=hla-$GROUP
  machine_boot "$m" run || return
  local sys1 sys2 id0 id1 mid0 mid1 out boots rc
  sys1=$(deploy_first v1)
  id0=$(g 'cat /proc/sys/kernel/random/boot_id')
  mid0=$(g 'cat /etc/machine-id')
  g 'echo kept > /root/across-reboots'
  reboot_now "$m"
  rc=$?
  id1=$(g 'cat /proc/sys/kernel/random/boot_id')
  mid1=$(g 'cat /etc/machine-id')
  out=$(g "cat /root/across-reboots; journalctl --list-boots --no-pager | tail -n +2 | wc -l
    echo \"booted: \$(readlink $FAKE/run/booted-system)\"; echo \"current: \$(readlink $FAKE/run/current-system)\"")
  boots=$(cat "$work/machines/$m/boots.log")
  [[ $rc == 0 ]] && [[ $(machine_boots "$m") == 2 ]] && grep -q '^[0-9:.]* boot 1: systemd-nspawn exited 133 (reboot)$' <<<"$boots" &&
    has kept "$out" && has 2 "$out" && [[ -n $id0 && $id0 != "$id1" && -n $mid0 && $mid0 == "$mid1" ]]
  check "reboot harness: 'systemctl reboot' inside ends systemd-nspawn with 133, the machine boots again: a file kept on its disk, a new boot id, the same machine id, journalctl --list-boots shows 2 boots" $? \
    "$(printf '%s\n' "$out" "boot id $id0 -> $id1, machine id $mid0 -> $mid1" "boots.log:" "$boots")"

  [[ -n $sys1 ]] && has "booted: $sys1" "$out" && has "current: $sys1" "$out" &&
    [[ $(profile_default) == "$sys1" ]] && [[ $(bootlog_last | q '[d["how"], d["entry"]]') == "[\"default\", \"$sys1\"]" ]]
  check "reboot harness: at boot, current-system and booted-system are the profile's default generation (v1), as NixOS' stage 2 sets them" $? \
    "$(printf '%s\n' "$out" "v1: $sys1" "profile: $(profile_default)" "bootloader: $(bootlog_last)")"

  # A second deployment switches live only; the next boot boots it.
  sys2=$(g "commit v2 >/dev/null; systemctl start $SERVICE && current")
  out="before: booted $(booted), current $(g current)"
  reboot_now "$m"
  out+=$'\n'"after: booted $(booted), current $(g current), default $(profile_default)"
  [[ -n $sys2 && $sys2 != "$sys1" ]] && has "before: booted $sys1, current $sys2" "$out" &&
    has "after: booted $sys2, current $sys2, default $sys2" "$out"
  check "reboot harness: a deployment is live at once and booted only after the next reboot (booted-system v1 until then, v2 after)" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2")"

  # The bootloader fell back: a one-shot entry boots v1 once; the default stays v2.
  g "echo $sys1 > $FAKE/bootloader/oneshot"
  reboot_now "$m"
  out="fell back: booted $(booted), current $(g current), default $(profile_default), $(bootlog_last)"
  reboot_now "$m"
  out+=$'\n'"next: booted $(booted), $(bootlog_last)"
  grep -qF "fell back: booted $sys1, current $sys1, default $sys2, " <<<"$out" &&
    grep -qF '"how": "oneshot"' <<<"$out" && grep -qF "next: booted $sys2, " <<<"$out" &&
    [[ $(bootlog_last | q 'd["how"]') == default ]]
  check "reboot harness: a fallback boot (a one-shot bootloader entry) boots v1 while the profile's default stays v2; the boot after it is v2 again" $? "$out"

  # Boot counting: v2 never reaches userspace; the bootloader boots the previous generation.
  g "touch $FAKE/bootloader/never-boots/${sys2##*/}"
  reboot_now "$m"
  out="booted $(booted), default $(profile_default), $(bootlog_last)"
  g "rm $FAKE/bootloader/never-boots/${sys2##*/}"
  grep -qF "booted $sys1, default $sys2, " <<<"$out" &&
    [[ $(bootlog_last | q '[d["how"], d["tried"]]') == "[\"fallback\", [\"$sys2\"]]" ]]
  check "reboot harness: a generation that never reaches userspace is tried, then the bootloader boots the previous generation (boot counting)" $? "$out"

  # A generation that breaks at boot: kernel-driver.service fails at each boot of it; a
  # next-boot break fails one boot only.
  g "touch $FAKE/bootloader/breaks/${sys2##*/}"
  reboot_now "$m"
  local driver='echo "$(readlink '$FAKE'/run/booted-system) $(systemctl is-system-running) $(systemctl show -P ActiveState kernel-driver.service)"'
  out="broken: $(g "$driver")"
  g "rm $FAKE/bootloader/breaks/${sys2##*/}; touch $FAKE/bootloader/breaks/next-boot"
  reboot_now "$m"
  out+=$'\n'"next-boot: $(g "$driver")"
  reboot_now "$m"
  out+=$'\n'"after: $(g "$driver")"
  has "broken: $sys2 degraded failed" "$out" && has "next-boot: $sys2 degraded failed" "$out" &&
    has "after: $sys2 running active" "$out"
  check "reboot harness: a generation marked broken boots with kernel-driver.service failed (systemd degraded); a next-boot break fails that boot only" $? "$out"

  # systemctl poweroff: the machine stays off.
  boots=$(machine_boots "$m")
  g 'systemctl --no-block poweroff' >/dev/null 2>&1
  for ((i = 0; i < 100; i++)); do [[ -e $work/machines/$m/exit ]] && break; sleep 0.2; done
  sleep 1
  [[ $(cat "$work/machines/$m/exit" 2>/dev/null) == 0 && $(machine_boots "$m") == "$boots" ]]
  check "reboot harness: 'systemctl poweroff' inside stops the machine for good (nspawn exit 0, no boot follows)" $? \
    "$(tail -n 4 "$work/machines/$m/boots.log")"
  echo "# $GROUP: $(grep -c 'exited 133' "$work/machines/$m/boots.log") reboots" >&2
  machine_down "$m"
}

# ---- reboot deploys under real systemd (issue 12) ------------------------------------------------
# The agent's side: `[reboot]` (policy, window, FleetLock), `homelab-agent verify-boot` in
# the module's unit ordered before boot-complete.target, status `reboot`, MESSAGE_IDs below.
ID_REBOOT_PENDING=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b41
ID_REBOOTING=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b42
ID_BOOTED=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b43
ID_BOOT_VERIFIED=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b44
ID_FELL_BACK=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b45
# systemd-logind: "System is rebooting (REASON)." (sd-messages.h SD_MESSAGE_SHUTDOWN).
SD_SHUTDOWN=98268866d1d54a499c4e98921d93bc40

# The FleetLock group's LAN: a host bridge, the server on the host's address there.
FLEET_NET=10.213.$(($$ % 200 + 20))
FLEET_URL=http://$FLEET_NET.1:4545

# reboot_variants: the variants the reboot groups install (appended to ./run's variants):
# the `run` options (base_options, without its closing brace) plus kernel-driver.service
# among the checks, and the module's services.homelab-agent.reboot options (policy
# when-required, which also installs its verify-boot unit) with a window around now
# (reboot), one that is closed now (reboot-closed), and the timer variant with a
# FleetLock server (fleet).
reboot_variants() {
  local h open closed
  h=$((10#$(date -u +%H)))
  open="\"start\": \"$(printf %02d $(((h + 23) % 24))):00\", \"end\": \"$(printf %02d $(((h + 2) % 24))):00\""
  closed="\"start\": \"$(printf %02d $(((h + 3) % 24))):00\", \"end\": \"$(printf %02d $(((h + 4) % 24))):00\""
  local -A win=([reboot]=$open [reboot-closed]=$closed [fleet]=$open)
  local v opts
  for v in reboot reboot-closed fleet; do
    opts=$({ base_options systemd-run; echo '}'; } | python3 -c '
import json, sys
o = json.load(sys.stdin)
o["health"]["checks"] = [
    {"systemd": {"units": ["sshd.service", "probe.service", "kernel-driver.service"]}},
    {"command": {"name": "marker", "command": ["/bin/sh", "-c", "test -e /var/lib/fake-machine/run/current-system/healthy"]}},
]
o["reboot"] = {"policy": "when-required", "delay": "0s",
    "window": dict({"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "timezone": "UTC"}, **json.loads("{" + sys.argv[1] + "}"))}
# The trial through the MODEL bootloader of machine.sh, with a short deadline.
o["settings"]["reboot"] = {"bootloader": "test-model", "trial_deadline": "1m",
    "uboot": {"boot_dir": "/var/lib/fake-machine/model-boot"}}
if sys.argv[2] == "fleet":
    o["reboot"]["fleetlock"] = {"url": sys.argv[3], "group": "pis"}
    o.update({"interval": "2s", "bootDelay": "1s", "randomizedDelay": "0s"})
print(json.dumps(o))' "${win[$v]}" "$v" "$FLEET_URL")
    printf ',\n  "%s": { "options": %s, "serviceConfig": { "RestartSec": "1s" } }' "$v" "$opts"
  done
}

# reboot_machine NAME VARIANT: a machine with the agent (VARIANT's units and the module's
# boot verification unit) that has deployed v1 (kernel k1) and rebooted into it. Sets
# SYS1 to v1's system (not printed: a failure's lines must reach the group's output).
reboot_machine() {
  SYS1=
  machine_boot "$1" "$2" || return
  local sys1
  sys1=$(REAL_SYSTEMD_NAME=$1 g "setup_extra $2; commit v1 >/dev/null; systemctl start $SERVICE && current" 2>&1)
  reboot_now "$1" || { fail "$GROUP: $1 rebooted into v1" "$(tail -n 5 "$work/machines/$1/boots.log")"; return 1; }
  [[ $(REAL_SYSTEMD_NAME=$1 booted) == "$sys1" ]] || { fail "$GROUP: $1 booted v1 ($sys1)" "booted: $(REAL_SYSTEMD_NAME=$1 booted)"; return 1; }
  SYS1=$sys1
}

# wait_boots NAME N SECONDS: until the machine has booted N times and is up.
wait_boots() { machine_wait "$1" "$2" "$3"; }

# stays_at NAME BOOTS SECONDS: the machine does not boot again within SECONDS.
stays_at() {
  sleep "$3"
  [[ $(machine_boots "$1") == "$2" ]]
}

# reboot_evidence NAME: the machine's boots, its status, and the agent's journal per boot.
reboot_evidence() {
  printf '%s\n' "boots.log:" "$(cat "$work/machines/$1/boots.log")" "status: $(status_json 2>&1)" \
    "bootloader log:" "$(g "cat $FAKE/bootloader/log")" "agent journal (all boots):" \
    "$(g "journalctl -o short-monotonic --no-pager -t homelab-agent -u 'homelab-agent*' | tail -n 60")"
}

# mids_in_boot BOOT: the agent's MESSAGE_IDs in boot BOOT (0 this one, -1 the one before),
# in order, each by its last two digits (all share the 5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b prefix).
mids_in_boot() {
  g "journalctl -b $1 -o json --no-pager" |
    q --lines "' '.join(e['MESSAGE_ID'][-2:] for e in d if e.get('MESSAGE_ID', '').startswith('5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b'))"
}

group_reboot_kernel() {
  local m=hla-$GROUP sys1 sys2 v2 st out n opens
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot-closed || return
  sys1=$SYS1
  # A kernel-changing commit with the default policy (never; the `run` variant's config):
  # deployed live, a reboot pending that only a person does.
  g "cp /etc/homelab-agent/config.toml /root/config.reboot-closed; install -m 0644 \$UNITS/run/config.toml /etc/homelab-agent/config.toml"
  v2=$(g "commit v2 ok ok true k2")
  n=$(machine_boots "$m")
  g "systemctl start $SERVICE" >/dev/null 2>&1
  sys2=$(g current)
  st=$(status_json)
  stays_at "$m" "$n" 2
  [[ $(machine_boots "$m") == "$n" && -n $sys2 && $sys2 != "$sys1" && $(booted) == "$sys1" ]] &&
    [[ $(q 'd["deployed"]["commit"]' <<<"$st") == "$v2" && $(q 'd["reboot_required"]' <<<"$st") == true ]] &&
    [[ $(q '(d.get("reboot") or {}).get("policy")' <<<"$st") == never ]] &&
    [[ $(q '((d.get("reboot") or {}).get("pending") or {}).get("waiting_for")' <<<"$st") == policy ]]
  check "reboot kernel: with policy never (the default) a kernel-changing commit is deployed live, status says reboot required and pending for a person (waiting_for policy), no reboot" $? \
    "$(reboot_evidence "$m")"

  # The same outside the window of policy when-required: the reboot pending until it opens.
  local c
  c=$(g cursor)
  g "cp /root/config.reboot-closed /etc/homelab-agent/config.toml; systemctl start $SERVICE" >/dev/null 2>&1
  st=$(status_json)
  opens=$(g "sed -n 's/^start *= *\"\\(.*\\)\"/\\1/p' /etc/homelab-agent/config.toml")
  stays_at "$m" "$n" 3
  [[ $(machine_boots "$m") == "$n" && -n $sys2 && $sys2 != "$sys1" && $(booted) == "$sys1" ]] &&
    [[ $(profile_default) == "$sys1" ]] &&
    [[ $(q 'd["deployed"]["commit"]' <<<"$st") == "$v2" ]] &&
    [[ $(q '(d.get("reboot") or {}).get("pending", {}).get("waiting_for")' <<<"$st") == window ]] &&
    [[ $(q '(d.get("reboot") or {}).get("pending", {}).get("until")' <<<"$st") == *T$opens:00Z ]] &&
    [[ $(q '(d.get("reboot") or {}).get("pending", {}).get("system")' <<<"$st") == "$sys2" ]] &&
    [[ $(g "count_since '$c' MESSAGE_ID=$ID_REBOOT_PENDING") == 1 ]]
  check "reboot kernel: with policy when-required, outside the window: live on the old kernel and not the boot default (the profile stays v1), status reboot.pending waits for the window until it opens (REBOOT_PENDING), no reboot" $? \
    "$(printf '%s\n' "window opens at $opens" "$(reboot_evidence "$m")")"

  # The window opens: the next run reboots into v2, and the boot is verified before boot-complete.target.
  g "install -m 0644 \$UNITS/reboot/config.toml /etc/homelab-agent/config.toml; systemctl start --no-block $SERVICE"
  wait_boots "$m" $((n + 1)) 60
  sleep 1
  st=$(status_json)
  out="booted $(booted), default $(profile_default); before: $(mids_in_boot -1); after: $(mids_in_boot 0)"
  out+=$'\n'"verification unit: $(g 'u=$(verify_unit); echo "$u"; systemctl show -p Before -p After -p Result -p ExecMainStatus "$u"')"
  stays_at "$m" $((n + 1)) 4
  [[ $(machine_boots "$m") == $((n + 1)) ]] && grep -qF "booted $sys2, default $sys2;" <<<"$out" &&
    [[ $(q '(d.get("reboot") or {}).get("booted", {}).get("verified")' <<<"$st") == true ]] &&
    [[ $(q '(d.get("reboot") or {}).get("booted", {}).get("system")' <<<"$st") == "$sys2" ]] &&
    [[ $(q '(d.get("reboot") or {}).get("pending")' <<<"$st") == "" ]] &&
    grep -q "before: [0-9a-f ]*${ID_REBOOTING: -2}" <<<"$out" && grep -q "after: .*${ID_BOOTED: -2}.*${ID_BOOT_VERIFIED: -2}" <<<"$out" &&
    grep -q '^Before=.*boot-complete.target' <<<"$out" && has Result=success "$out" && has ExecMainStatus=0 "$out"
  check "reboot kernel: in the window the agent reboots once into v2 as a trial (REBOOTING; the boot default stays v1 until then), the trial is verified by the module's unit ordered before boot-complete.target (BOOTED, BOOT_VERIFIED; status reboot.booted.verified) and only then becomes the boot default, and it reboots only once" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2" "$(reboot_evidence "$m")")"

  # The reboot went through systemd, with the agent's reason: logind's "System is
  # rebooting (REASON)." (SD_MESSAGE_SHUTDOWN) in the boot before.
  out=$(g "journalctl -b -1 -o json --no-pager" |
    q --lines "'\n'.join(e['MESSAGE'] for e in d if e.get('MESSAGE_ID') == '$SD_SHUTDOWN')")
  [[ $(grep -c . <<<"$out") == 1 ]] && grep -Eq '^System is rebooting \(homelab-agent: rebooting once into /nix/store/[^ ]+ as a trial .*\)\.$' <<<"$out"
  check "reboot kernel: the reboot went through systemd with the agent's reason (logind: 'System is rebooting (homelab-agent: ...)', SD_MESSAGE_SHUTDOWN)" $? "${out:-no SD_MESSAGE_SHUTDOWN entry in the boot before}"

  # Never twice for the same generation: more runs, no reboot.
  g "systemctl start $SERVICE; systemctl start $SERVICE" >/dev/null 2>&1
  stays_at "$m" $((n + 1)) 3
  check "reboot kernel: later runs with v2 booted do not reboot again" $? "$(reboot_evidence "$m")"
  machine_down "$m"
}

group_reboot_fallback() {
  local m=hla-$GROUP sys1 sys2 v2 st out n
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot || return
  sys1=$SYS1
  # v2's kernel passes every live check and breaks at boot (kernel-driver.service fails).
  v2=$(g "touch $FAKE/bootloader/breaks/kernel-k2; commit v2 ok ok true k2")
  n=$(machine_boots "$m")
  g "systemctl start --no-block $SERVICE"
  # Boot n+1 is v2 (fails its checks), boot n+2 is v1 again.
  wait_boots "$m" $((n + 2)) 90
  sys2=$(g "sed -n $((n + 1))p $FAKE/bootloader/log" | q 'd["entry"]')
  stays_at "$m" $((n + 2)) 6
  st=$(status_json)
  out="booted $(booted), default $(profile_default), live $(g current); boots: $(g "tail -n 2 $FAKE/bootloader/log" | q --lines '[e["entry"] for e in d]')"
  out+=$'\n'"journal of the failed boot: $(mids_in_boot -1); of this one: $(mids_in_boot 0)"
  [[ $(machine_boots "$m") == $((n + 2)) ]] && grep -qF "booted $sys1, default $sys1, live $sys1;" <<<"$out" &&
    grep -qF "boots: [\"$sys2\", \"$sys1\"]" <<<"$out" &&
    [[ $(q '(d.get("bad_commit") or {}).get("commit")' <<<"$st") == "$v2" ]] &&
    [[ $(q '(d.get("reboot") or {}).get("fell_back", {}).get("kind")' <<<"$st") == trial-failed ]] &&
    [[ $(q '(d.get("reboot") or {}).get("fell_back", {}).get("from_system")' <<<"$st") == "$sys2" ]] &&
    grep -q "failed boot: .*${ID_FELL_BACK: -2}" <<<"$out"
  check "reboot fallback: v2's trial boot fails its checks (kernel-driver.service): the machine reboots exactly once more into v1, the boot default that never moved, v2's commit is bad, status reboot.fell_back says why (trial-failed, FELL_BACK)" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2" "$(reboot_evidence "$m")")"
  machine_down "$m"
}

group_reboot_detect() {
  local m=hla-$GROUP sys1 sys2 v2 st out n
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot || return
  sys1=$SYS1
  # v2 never reaches userspace: the model bootloader clears the trial flag, tries v2 and
  # boots its default, v1 (the board reset by panic=N; QEMU: trial_panics).
  v2=$(g "touch $FAKE/bootloader/never-boots/kernel-k2; commit v2 ok ok true k2")
  n=$(machine_boots "$m")
  g "systemctl start --no-block $SERVICE"
  wait_boots "$m" $((n + 1)) 60
  sys2=$(bootlog_last | q 'd["tried"][0] if d["tried"] else ""')
  # The next run activates v2 live again, and does not reboot for it a second time.
  g "systemctl start $SERVICE" >/dev/null 2>&1
  stays_at "$m" $((n + 1)) 5
  st=$(status_json)
  out="booted $(booted), default $(profile_default); bootloader: $(bootlog_last); journal: $(mids_in_boot 0)"
  [[ $(machine_boots "$m") == $((n + 1)) ]] && grep -qF "booted $sys1, default $sys1;" <<<"$out" &&
    grep -qF '"how": "trial-reset"' <<<"$out" &&
    [[ $(q '(d.get("reboot") or {}).get("fell_back", {}).get("kind")' <<<"$st") == trial-reset ]] &&
    [[ $(q '(d.get("reboot") or {}).get("fell_back", {}).get("from_system")' <<<"$st") == "$sys2" ]] &&
    [[ $(q '((d.get("reboot") or {}).get("pending") or {}).get("waiting_for")' <<<"$st") == attention ]] &&
    [[ $(q '(d.get("bad_commit") or {}).get("commit")' <<<"$st") != "$v2" ]]
  check "reboot detect (model bootloader): v2's trial never reaches userspace, the model bootloader boots the default v1: recorded as a trial reset (status reboot.fell_back trial-reset, not blamed on v2), v1 stays the boot default, and no second reboot for v2 (waiting for attention)" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2" "$(reboot_evidence "$m")")"
  machine_down "$m"
}

# fleet_server_start EVENTS: the FleetLock test server (tests/fleetlock/server.py) on the
# host's address on the bridge, one slot per group; its pid in $work/fleet.pid.
fleet_server_start() {
  python3 "$root/tests/fleetlock/server.py" --host "$FLEET_NET.1" --port "${FLEET_URL##*:}" \
    --slots 1 --events "$1" >"$work/fleet.out" 2>&1 </dev/null &
  echo $! >"$work/fleet.pid"
  for ((i = 0; i < 50; i++)); do grep -q '^listening on' "$work/fleet.out" && return 0; sleep 0.1; done
  return 1
}
fleet_server_stop() { [[ -f $work/fleet.pid ]] && kill "$(cat "$work/fleet.pid")" 2>/dev/null; rm -f "$work/fleet.pid"; }

# on NAME FUNCTION ARG...: FUNCTION (g, status_json...) acting on machine NAME.
on() { REAL_SYSTEMD_NAME=$1 "${@:2}"; }

group_reboot_fleetlock() {
  local a=hla-$GROUP-a b=hla-$GROUP-b br=hlafl$$ m sys1 na nb st out i events=$work/fleet-events.jsonl
  if [[ ! -f $root/tests/fleetlock/server.py ]]; then
    fail "$GROUP: the FleetLock test server tests/fleetlock/server.py" "not in this checkout"
    return
  fi
  local why
  if ! command -v ip >/dev/null; then
    skip "fleetlock: needs iproute2's ip for the machines' bridge (tests/setup installs it)"
    return
  fi
  if ! why=$(bridge_up "$br" "$FLEET_NET.1/24" 2>&1); then
    skip "fleetlock: cannot create the machines' bridge (ip link add $br type bridge: $why)"
    return
  fi
  MACHINE_BRIDGE=$br MACHINE_ADDRESS=$FLEET_NET.2/24 reboot_machine "$a" fleet || return
  MACHINE_BRIDGE=$br MACHINE_ADDRESS=$FLEET_NET.3/24 reboot_machine "$b" fleet || return
  na=$(machine_boots "$a") nb=$(machine_boots "$b")

  # Both machines get a kernel-changing commit while the server is down: they wait.
  for m in $a $b; do on "$m" g "commit v2 ok ok true k2 >/dev/null; systemctl start homelab-agent.timer"; done
  # Up to 2 minutes: under load (CI's other suites) the first timer ticks come late.
  for ((i = 0; i < 240; i++)); do
    [[ $(on "$a" status_json | q '((d.get("reboot") or {}).get("pending") or {}).get("waiting_for")') == lock &&
      $(on "$b" status_json | q '((d.get("reboot") or {}).get("pending") or {}).get("waiting_for")') == lock ]] && break
    sleep 0.5
  done
  sleep 3
  out=$(for m in $a $b; do echo "$m: boots $(machine_boots "$m"), $(on "$m" status_json | q '(d.get("reboot") or {}).get("pending")')"; done)
  [[ $(machine_boots "$a") == "$na" && $(machine_boots "$b") == "$nb" ]] &&
    [[ $(grep -c '"waiting_for": "lock"' <<<"$out") == 2 ]] &&
    [[ $(grep -c "\"detail\": \"[^\"]*$FLEET_URL (group pis, id [0-9a-f]\{32\})" <<<"$out") == 2 ]]
  check "fleetlock: with the FleetLock server down, both machines keep the reboot pending (reboot.pending waiting for the lock, naming it: URL, group, machine id) and do not reboot" $? "$out"

  # The server comes up: one slot for the group; each machine reboots in turn.
  fleet_server_start "$events" || { fail "$GROUP: FleetLock server starts" "$(cat "$work/fleet.out")"; return; }
  # Both ask at once (not at their own timer ticks, where the first could reboot and be
  # verified before the second asks): the second must be refused while the first holds.
  for m in $a $b; do on "$m" g "systemctl start --no-block homelab-agent.service" >/dev/null; done
  local done_a=0 done_b=0
  for ((i = 0; i < 360; i++)); do
    ((done_a)) || [[ $(on "$a" status_json 2>/dev/null | q '((d.get("reboot") or {}).get("booted") or {}).get("verified")' 2>/dev/null) != true ]] || done_a=1
    ((done_b)) || [[ $(on "$b" status_json 2>/dev/null | q '((d.get("reboot") or {}).get("booted") or {}).get("verified")' 2>/dev/null) != true ]] || done_b=1
    ((done_a && done_b)) && break
    sleep 0.5
  done
  sleep 3 # a last steady-state, and no further reboot
  for m in $a $b; do on "$m" g 'systemctl stop homelab-agent.timer' >/dev/null 2>&1; done
  # Each machine's [REBOOTING, BOOT_VERIFIED] span, from its journal (one clock: the host's kernel).
  local spans
  spans=$(for m in $a $b; do
    on "$m" g 'journalctl -o json --no-pager' | q --lines "json.dumps(['$m', [int(e['__REALTIME_TIMESTAMP']) for e in d if e.get('MESSAGE_ID') == '$ID_REBOOTING'], [int(e['__REALTIME_TIMESTAMP']) for e in d if e.get('MESSAGE_ID') == '$ID_BOOT_VERIFIED']])"
  done)
  out=$(printf '%s\n' "boots: $a $na -> $(machine_boots "$a"), $b $nb -> $(machine_boots "$b")" \
    "booted: $a $(on "$a" booted), $b $(on "$b" booted)" "spans (REBOOTING, BOOT_VERIFIED; us): $spans" \
    "server events:" "$(cat "$events" 2>/dev/null)")
  local verdict
  verdict=$(python3 - "$events" "$spans" 2>&1 <<'PY'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
spans = [json.loads(l) for l in sys.argv[2].splitlines() if l.strip()]
problems = []
# The server never had two holders in the group.
if any(len(e["holders"].get("pis", [])) > 1 for e in events):
    problems.append("two slot holders at once")
granted = {e["id"] for e in events if e["endpoint"].endswith("pre-reboot") and e["status"] == 200}
if len(granted) != 2:
    problems.append(f"slots granted to {sorted(granted)}, expected both machines")
if not any(e["status"] == 409 for e in events):
    problems.append("nobody ever waited for the slot (no 409)")
if not events or events[-1]["holders"].get("pis", []) != []:
    problems.append("a slot still held at the end")
# Each machine rebooted once and verified; the spans do not overlap.
iv = []
for name, rebooting, verified in spans:
    if len(rebooting) != 1 or not verified:
        problems.append(f"{name}: {len(rebooting)} REBOOTING, {len(verified)} BOOT_VERIFIED")
    else:
        iv.append((rebooting[0], max(verified)))
if len(iv) == 2:
    (s1, e1), (s2, e2) = sorted(iv)
    if e1 >= s2:
        problems.append(f"the reboots overlap by {(e1 - s2) / 1e6:.1f}s: {iv}")
if problems:
    print("; ".join(problems))
    sys.exit(1)
PY
  )
  local ok=$?
  out+=$'\n'"verdict: ${verdict:-ok}"
  ((ok == 0)) && ((done_a && done_b)) && [[ $(machine_boots "$a") == $((na + 1)) && $(machine_boots "$b") == $((nb + 1)) ]] &&
    [[ $(on "$a" booted) == "$(on "$a" profile_default)" && $(on "$b" booted) == "$(on "$b" profile_default)" ]]
  check "fleetlock: two machines in one FleetLock group (the test server, one slot) reboot into v2 one after the other: never two slot holders, each [REBOOTING, BOOT_VERIFIED] span disjoint from the other's, both verified, slots released" $? "$out"
  fleet_server_stop
  machine_down "$a"
  machine_down "$b"
}

group_reboot_loop() {
  local m=hla-$GROUP sys1 sys2 st out n i unit
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot || return
  sys1=$SYS1
  # v2 breaks at boot, and the fallback does not take: the bootloader boots v2 once more
  # (a one-shot entry written, from the host, while v2's first boot runs), as if the new
  # boot default had not reached the bootloader.
  g "touch $FAKE/bootloader/breaks/kernel-k2; commit v2 ok ok true k2 >/dev/null; systemctl start --no-block $SERVICE"
  n=$(machine_boots "$m")
  for ((i = 0; i < 600; i++)); do
    (($(machine_boots "$m") > n)) && break
    sleep 0.1
  done
  sys2=$(tail -n 1 "$work/machines/$m/upper$FAKE/bootloader/log" 2>/dev/null | q 'd["entry"]')
  [[ -n $sys2 ]] && echo "$sys2" >"$work/machines/$m/merged$FAKE/bootloader/oneshot"
  wait_boots "$m" $((n + 2)) 90
  # Issue 23 item 15: the next `run --once` in the given-up system reboots nothing either.
  g "systemctl start $SERVICE" >/dev/null 2>&1
  stays_at "$m" $((n + 2)) 8
  st=$(status_json)
  unit=$(g verify_unit)
  out="boots: $(g "cat $FAKE/bootloader/log" | q --lines '[(e["how"], e["entry"]) for e in d]')"
  out+=$'\n'"booted $(booted), default $(profile_default); $unit: $(g "systemctl show -P Result -P ExecMainStatus $unit | tr '\n' ' '")"
  [[ $(machine_boots "$m") == $((n + 2)) ]] && grep -qF "booted $sys2, default $sys1;" <<<"$out" &&
    grep -qF "$unit: exit-code 1 " <<<"$out" &&
    [[ $(q '((d.get("reboot") or {}).get("fell_back") or {}).get("from_system")' <<<"$st") == "$sys2" ]] &&
    [[ $(q '(d.get("bad_commit") or {}).get("commit")' <<<"$st") != "" ]]
  check "reboot loop breaker: v2's trial fails its boot checks, the reboot lands in v2 again (a one-shot entry: the bootloader missed its default): nothing is rebooted a second time, by verify-boot (exits 1) nor by the next run (the machine stays up for a person)" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2" "$(reboot_evidence "$m")")"
  machine_down "$m"
}

# ---- issue 19: the three situations, on the model bootloader -----------------------------------
contains() { grep -qF -- "$1" <<<"$2"; }
# Each ends on a working generation. The bootloader is the harness's model (machine.sh);
# the same for real, with Debian's U-Boot and kernel, is the QEMU tier's: unplanned ->
# power_cut_during_trial, shared bad kernel -> trial_panics, emergency ->
# trial_hangs_watchdog (docs/reboots.md).

group_reboot_model_unplanned() {
  local m=hla-$GROUP sys1 sys2 st out n
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot-closed || return
  sys1=$SYS1
  # v2's kernel breaks at boot; it waits for its window, live on the old kernel.
  g "touch $FAKE/bootloader/breaks/kernel-k2; commit v2 ok ok true k2 >/dev/null; systemctl start $SERVICE" >/dev/null 2>&1
  sys2=$(g current)
  out="before: booted $(booted), current $sys2, default $(profile_default)"
  # A person (or a power cut) reboots meanwhile.
  n=$(machine_boots "$m")
  reboot_now "$m"
  local driver
  driver=$(g 'systemctl is-system-running; systemctl show -P ActiveState kernel-driver.service' | tr '\n' ' ')
  out+=$'\n'"after: booted $(booted), default $(profile_default), $driver; bootloader: $(bootlog_last)"
  # The next run activates v2 live again; still waiting for its window, no reboot.
  g "systemctl start $SERVICE" >/dev/null 2>&1
  stays_at "$m" $((n + 1)) 3
  st=$(status_json)
  out+=$'\n'"then: current $(g current), pending $(q '(d.get("reboot") or {}).get("pending")' <<<"$st")"
  [[ -n $sys2 && $sys2 != "$sys1" ]] && contains "before: booted $sys1, current $sys2, default $sys1" "$out" &&
    contains "after: booted $sys1, default $sys1, running active " "$out" && grep -qF '"how": "default"' <<<"$out" &&
    contains "then: current $sys2," "$out" &&
    [[ $(q '((d.get("reboot") or {}).get("pending") or {}).get("waiting_for")' <<<"$st") == window ]] &&
    [[ $(machine_boots "$m") == $((n + 1)) ]]
  check "reboot_model_unplanned_reboot_during_a_pending_kernel_deploy: a reboot while v2 (a kernel that breaks at boot) waits for its window boots the last verified v1, never the unchecked kernel; the next run activates v2 live again, still pending (model bootloader; QEMU: power_cut_during_trial)" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2" "$(reboot_evidence "$m")")"
  machine_down "$m"
}

group_reboot_model_shared_kernel() {
  local m=hla-$GROUP sys1 sys2 sys3 v3 st out n
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot-closed || return
  sys1=$SYS1
  # v2 and v3 share kernel k2, which breaks at boot; both deployed before any reboot.
  g "touch $FAKE/bootloader/breaks/kernel-k2; commit v2 ok ok true k2 >/dev/null; systemctl start $SERVICE" >/dev/null 2>&1
  sys2=$(g current)
  v3=$(g "commit v3 ok ok true k2")
  g "systemctl start $SERVICE" >/dev/null 2>&1
  sys3=$(g current)
  # The window opens: a trial of v3, which fails; the reboot lands in v1, never in v2.
  n=$(machine_boots "$m")
  g "install -m 0644 \$UNITS/reboot/config.toml /etc/homelab-agent/config.toml; systemctl start --no-block $SERVICE"
  wait_boots "$m" $((n + 2)) 90
  stays_at "$m" $((n + 2)) 5
  st=$(status_json)
  out="booted $(booted), default $(profile_default), $(g 'systemctl is-system-running'); boots: $(g "tail -n 2 $FAKE/bootloader/log" | q --lines '[(e["how"], e["entry"]) for e in d]')"
  [[ -n $sys2 && -n $sys3 && $sys2 != "$sys3" ]] && grep -qF "booted $sys1, default $sys1, running;" <<<"$out" &&
    grep -qF "[[\"trial\", \"$sys3\"], [\"default\", \"$sys1\"]]" <<<"$out" &&
    ! g "grep -qF '$sys2' $FAKE/bootloader/log" &&
    [[ $(q '(d.get("bad_commit") or {}).get("commit")' <<<"$st") == "$v3" ]] &&
    [[ $(q '(d.get("reboot") or {}).get("fell_back", {}).get("to_system")' <<<"$st") == "$sys1" ]] &&
    [[ $(machine_boots "$m") == $((n + 2)) ]]
  check "reboot_model_two_queued_generations_share_a_bad_kernel: v2 and v3 share a kernel that breaks at boot; v3's trial fails and the machine boots the last verified v1, never v2 (model bootloader; QEMU: trial_panics)" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2, v3 $sys3" "$(reboot_evidence "$m")")"
  machine_down "$m"
}

group_reboot_model_emergency() {
  local m=hla-$GROUP sys1 sys2 st out n t0
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot || return
  sys1=$SYS1
  # v2's trial ends in emergency mode: verify-boot never starts there.
  g "touch $FAKE/bootloader/emergency/kernel-k2; commit v2 ok ok true k2 >/dev/null; systemctl start --no-block $SERVICE"
  n=$(machine_boots "$m")
  machine_wait "$m" $((n + 1)) 60 maintenance || { fail "$GROUP: the trial boots into emergency mode" "$(reboot_evidence "$m")"; machine_down "$m"; return; }
  t0=$SECONDS
  sys2=$(booted)
  out="trial: booted $sys2, $(g 'systemctl is-system-running; systemctl is-active homelab-agent-trial-deadline.service; systemctl show -P ActiveState homelab-agent-verify-boot.service' | tr '\n' ' ')"
  # The deadline (1 minute in this variant) reboots it into the default, v1.
  wait_boots "$m" $((n + 2)) 150
  local took=$((SECONDS - t0))
  out+=$'\n'"after ${took}s: booted $(booted), default $(profile_default), $(g 'systemctl is-system-running')"
  g "systemctl start $SERVICE" >/dev/null 2>&1
  stays_at "$m" $((n + 2)) 5
  st=$(status_json)
  # Emergency mode keeps no journal here (journald is not started by emergency.target):
  # the evidence is the bootloader's log and the time the reboot took (the deadline, 1m).
  [[ $sys2 != "$sys1" ]] && contains "trial: booted $sys2, maintenance active inactive " "$out" &&
    contains "booted $sys1, default $sys1, running" "$out" && ((took >= 30 && took <= 150)) &&
    [[ $(g "sed -n $((n + 1))p $FAKE/bootloader/log" | q 'd["how"]') == trial-emergency ]] &&
    [[ $(q '(d.get("reboot") or {}).get("fell_back", {}).get("kind")' <<<"$st") == trial-reset ]] &&
    [[ $(machine_boots "$m") == $((n + 2)) ]]
  check "reboot_model_emergency_mode_is_rebooted_by_the_deadline: v2's trial ends in emergency mode (no verify-boot there); homelab-agent-trial-deadline.service, outside multi-user.target, reboots it at the deadline into the last verified v1 (model bootloader; QEMU: trial_hangs_watchdog)" $? \
    "$(printf '%s\n' "$out" "v1 $sys1" "$(reboot_evidence "$m")")"
  machine_down "$m"
}

# Issue 20 item 2: a deployment whose switch starts verify-boot (switch-to-configuration
# test starts every wanted unit that is not running: turning reboots on does that once).
# The fake's hook does what the real switch does in that order: the new system is made
# current, then the unit is started and waited for.
group_reboot_same_boot() {
  local m=hla-$GROUP sys1 sys2 v2 st out unit
  export REAL_SYSTEMD_NAME=$m
  reboot_machine "$m" reboot || return
  sys1=$SYS1
  unit=$(g verify_unit)
  # Written from the host into the machine's root (no quoting through g).
  cat >"$work/machines/$m/merged$FAKE/start-verify.sh" <<SH
tr '\\0' '\\n' </proc/\$PPID/cmdline | grep -qx test || exit 0
out=\$(tr '\\0' '\\n' </proc/\$PPID/cmdline | sed -n 's|/bin/switch-to-configuration\$||p')
ln -sfn "\$out" $FAKE/run/current-system
systemctl start $unit
echo "verify-boot started: \$?" >>$FAKE/start-verify.log
SH
  g "echo hook:$FAKE/start-verify.sh > $FAKE/faults/all; systemctl stop $unit; rm -f /run/homelab-agent/boot-verified"
  local c
  c=$(g cursor)
  v2=$(g "commit v2")
  g "timeout 120 systemctl start $SERVICE" >/dev/null 2>&1
  g "rm -f $FAKE/faults/all"
  sys2=$(g current)
  st=$(status_json)
  out="hook: $(g "cat $FAKE/start-verify.log" 2>&1); current $sys2, booted $(booted), default $(profile_default)"
  out+=$'\n'"$unit: $(g "systemctl show -P Result -P ExecMainStatus $unit | tr '\n' ' '")"
  out+=$'\n'"said: $(g "journalctl --after-cursor='$c' -o cat --no-pager -u $unit | grep -c 'started by an activation in this boot'")"
  [[ $sys2 != "$sys1" ]] && grep -qF "hook: verify-boot started: 0; current $sys2, booted $sys1, default $sys2" <<<"$out" &&
    grep -qF "$unit: success 0 " <<<"$out" && grep -q '^said: [1-9]' <<<"$out" &&
    [[ $(q 'd["deployed"]["commit"]' <<<"$st") == "$v2" ]] &&
    [[ $(q '(d.get("bad_commit") or {}).get("commit")' <<<"$st") == "" ]] &&
    [[ $(q '((d.get("reboot") or {}).get("fell_back") or {}).get("kind")' <<<"$st") == "" ]] &&
    [[ $(q 'd["last_run"]["outcome"]' <<<"$st") == deployed ]]
  check "issue 20: verify-boot started by the deployment's own switch-to-configuration test (the new system current, the unit started and waited for) does nothing and returns at once: the deployment succeeds, no fallback, nothing marked bad" $? \
    "$(printf '%s\n' "$out" "v1 $sys1, v2 $sys2" "status: $st")"
  machine_down "$m"
}

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

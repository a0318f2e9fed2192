# shellcheck shell=bash disable=SC2154 # RS, BIN, root, here, work, GROUP: set by ./run
# Machines that reboot, for tests/systemd/run (sourced there). A machine is a real-systemd
# container (../shared/real-systemd: its cached Debian root, systemd as PID 1) whose root
# is an overlay kept on disk ($work/machines/NAME/upper) across boots, started again by a
# supervisor each time its systemd reboots (`systemd-nspawn --boot` exits 133 then).
#
# Between two boots the supervisor plays the machine's firmware, bootloader and NixOS
# stage 2 (`bootloader` below), on the stopped machine's root:
#   - the bootloader boots its default entry: what the last `switch-to-configuration boot`
#     installed (the fake writes it to $FAKE/boot-default), or, before there is one, the
#     generation the system profile points at;
#   - a one-shot entry ($FAKE/bootloader/oneshot, as systemd-boot's LoaderEntryOneShot)
#     is booted once instead: what the harness uses to model "the bootloader fell back";
#   - the agent's one-shot trial (`[reboot] bootloader = "test-model"`, a MODEL of the
#     U-Boot door: $FAKE/model-boot/trial-model.flag and trial-model.system): the flag is
#     cleared first, then the trial system boots once (how "trial"), as the U-Boot boot
#     command provisioned by the module does; a trial entry marked never-boots (below) is
#     tried and the default boots instead (how "trial-reset"): the board reset by
#     `panic=N`. The QEMU tier proves this with real U-Boot (trial_panics, trial_verifies);
#   - a generation marked $FAKE/bootloader/emergency/<store name> (or emergency/kernel-<its
#     kernel>) boots into emergency mode (`systemd.unit=emergency.target` to PID 1), where
#     the emergency shell waits for a person who never comes (emergency.service's shell is
#     replaced by a sleep: nobody types a root password in a test);
#   - boot counting: a generation marked $FAKE/bootloader/never-boots/<store name> (or
#     never-boots/kernel-<its kernel>) never reaches userspace; the bootloader tries it
#     (logged, no container is started for it) and boots the profile's previous
#     generation instead, as systemd-boot boot counting or U-Boot's altbootcmd would;
#   - stage 2: /run is a fresh tmpfs at every boot on NixOS, so $FAKE/run (the fake's /run)
#     is emptied and current-system and booted-system both point at the booted entry.
# Each boot is one JSON line in $FAKE/bootloader/log (inside: boot, entry, default, how,
# tried) and one line in $work/machines/NAME/boots.log on the host.
#
# Inside, the machine also has kernel-driver.service (ordered before sysinit.target,
# enabled): what the booted kernel brings up. It fails at every boot of a generation
# marked $FAKE/bootloader/breaks/<store name> (or breaks/kernel-<its kernel>: every
# generation with that kernel), and at the next boot only after
# $FAKE/bootloader/breaks/next-boot: a kernel that passed every live check and breaks at
# boot. probe.service (guest.sh) is enabled too, so it is active after each boot.
#
# The instance is driven with ../shared/real-systemd's own `exec` and `g` (the supervisor
# keeps its /run/real-systemd/NAME/nspawn.pid current). Networking: only `lo`, or with
# MACHINE_BRIDGE=BRIDGE MACHINE_ADDRESS=IP/PREFIX a veth on that host bridge (the address
# is set at every boot by hla-net.service).

MACHINE_FAKE=/var/lib/fake-machine

# machine_root: the cached real-systemd root (built once by ../shared/real-systemd/up).
machine_root() {
  local r
  r=$( (source "$RS/lib.sh" && echo "$ROOT")) || return 1
  if [[ ! -d $r ]]; then
    REAL_SYSTEMD_NAME=hla-root-build "$RS/up" >&2 || return 1
    REAL_SYSTEMD_NAME=hla-root-build "$RS/down" >&2
  fi
  [[ -d $r ]] && echo "$r"
}

# bootloader MERGED BOOT-NUMBER: picks the entry and prepares stage 2 on a stopped
# machine's root (see the top). Prints one line for boots.log.
bootloader() {
  local m=$1 n=$2 fake=$1$MACHINE_FAKE default='' entry how tried=()
  inside() { chroot "$m" /usr/bin/readlink -f "$1" 2>/dev/null; }
  mkdir -p "$fake/bootloader/never-boots" "$fake/bootloader/breaks"
  if [[ -s $fake/boot-default ]]; then
    default=$(<"$fake/boot-default")
  elif [[ -L $fake/profiles/system ]]; then
    default=$(inside "$MACHINE_FAKE/profiles/system")
  fi
  entry=$default how=default
  marked() { [[ -e $fake/bootloader/$1/${2##*/} ]] || [[ -e $fake/bootloader/$1/kernel-$(cat "$m$2/kernel" 2>/dev/null) ]]; }
  if [[ -s $fake/bootloader/oneshot ]]; then
    entry=$(<"$fake/bootloader/oneshot") how=oneshot
    rm -f "$fake/bootloader/oneshot"
  elif [[ -e $fake/model-boot/trial-model.flag ]]; then
    rm -f "$fake/model-boot/trial-model.flag"
    entry=$(<"$fake/model-boot/trial-model.system") how=trial
    if marked never-boots "$entry"; then
      tried+=("$entry")
      entry=$default how=trial-reset
    fi
  fi
  while [[ -n $entry ]] && marked never-boots "$entry"; do
    tried+=("$entry")
    entry=$(previous_generation "$m" "$entry") how=fallback
  done
  rm -f "${m%/merged}/boot-args"
  if [[ -n $entry ]] && marked emergency "$entry"; then
    echo systemd.unit=emergency.target >"${m%/merged}/boot-args"
    how+=-emergency
  fi
  rm -rf "$fake/run"
  mkdir -p "$fake/run"
  if [[ -n $entry ]]; then
    ln -s "$entry" "$fake/run/current-system"
    ln -s "$entry" "$fake/run/booted-system"
  fi
  python3 -c 'import json, sys
print(json.dumps({"boot": int(sys.argv[1]), "entry": sys.argv[2], "default": sys.argv[3],
                  "how": sys.argv[4], "tried": sys.argv[5:]}))' \
    "$n" "$entry" "$default" "$how" "${tried[@]}" >>"$fake/bootloader/log"
  echo "boot $n: $how entry ${entry:-none} (default ${default:-none}${tried[*]:+; never reached userspace: ${tried[*]}})"
}

# previous_generation MERGED ENTRY: the system of the newest profile generation older than
# ENTRY's that is another system (if ENTRY is no generation: the newest other system).
previous_generation() {
  local m=$1 entry=$2 link target past=0
  local -a targets=()
  for link in $(cd "$m$MACHINE_FAKE/profiles" 2>/dev/null && ls -d system-*-link 2>/dev/null | sort -t- -k2,2nr); do
    targets+=("$(chroot "$m" /usr/bin/readlink -f "$MACHINE_FAKE/profiles/$link")")
  done
  printf '%s\n' "${targets[@]}" | grep -qxF -- "$entry" || past=1
  for target in "${targets[@]}"; do
    if [[ $target == "$entry" ]]; then
      past=1
    elif ((past)); then
      echo "$target"
      return 0
    fi
  done
}

# provision MERGED: what the machine has before its first boot (see the top).
provision() {
  local m=$1
  mkdir -p "$m/etc/systemd/system/sysinit.target.wants" "$m/etc/systemd/system/multi-user.target.wants" \
    "$m$MACHINE_FAKE/bootloader/never-boots" "$m$MACHINE_FAKE/bootloader/breaks" \
    "$m$MACHINE_FAKE/bootloader/emergency" "$m$MACHINE_FAKE/model-boot" \
    "$m/etc/systemd/system/emergency.service.d"
  # Emergency mode's shell waits for a person who never comes (see the top).
  printf '[Service]\nExecStart=\nExecStart=/bin/sleep infinity\nExecStopPost=\n' \
    >"$m/etc/systemd/system/emergency.service.d/hla-model.conf"
  cat >"$m/etc/systemd/system/kernel-driver.service" <<UNIT
[Unit]
Description=What the booted kernel brings up (fails on a generation marked broken)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'b=\$\$(readlink $MACHINE_FAKE/run/booted-system); d=$MACHINE_FAKE/bootloader/breaks; \\
  if [ -e "\$\$d/next-boot" ]; then rm -f "\$\$d/next-boot"; echo "driver failed (next-boot)"; exit 1; fi; \\
  k=kernel-\$\$(cat "\$\$b/kernel" 2>/dev/null); \\
  if [ -n "\$\$b" ] && { [ -e "\$\$d/\$\${b##*/}" ] || [ -e "\$\$d/\$\$k" ]; }; then echo "driver failed on \$\$b (\$\$k)"; exit 1; fi; \\
  echo "driver up on \$\${b:-no system}"'

[Install]
WantedBy=sysinit.target
UNIT
  ln -sfn ../kernel-driver.service "$m/etc/systemd/system/sysinit.target.wants/kernel-driver.service"
  # guest.sh's probe.service has no [Install]: started at every boot all the same.
  ln -sfn ../probe.service "$m/etc/systemd/system/multi-user.target.wants/probe.service"
  if [[ -n ${MACHINE_ADDRESS:-} ]]; then
    cat >"$m/etc/systemd/system/hla-net.service" <<UNIT
[Unit]
Description=The machine's address on the test bridge
DefaultDependencies=no
Before=network.target network-online.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/ip link set host0 up
ExecStart=/usr/sbin/ip addr add $MACHINE_ADDRESS dev host0

[Install]
WantedBy=sysinit.target network-online.target
UNIT
    ln -sfn ../hla-net.service "$m/etc/systemd/system/sysinit.target.wants/hla-net.service"
  fi
}

# supervise NAME DIR NSPAWN-ARG...: boots the machine until it stops for any reason but
# a reboot (or $DIR/stop exists). Runs in the background; $DIR/boots counts the boots.
supervise() {
  local name=$1 dir=$2 n=0 rc=0 pid line
  shift 2
  while [[ ! -e $dir/stop ]]; do
    n=$((n + 1))
    line=$(bootloader "$dir/merged" "$n" 2>&1)
    echo "$(date -u +%T.%N | cut -c1-12) $line" >>"$dir/boots.log"
    mkdir -p "/run/real-systemd/$name"
    # shellcheck disable=SC2046 # the bootloader's arguments to PID 1, one word each
    systemd-nspawn "$@" $(cat "$dir/boot-args" 2>/dev/null) </dev/null >>"$dir/console.log" 2>&1 &
    pid=$!
    echo "$pid" >"/run/real-systemd/$name/nspawn.pid"
    echo "$n" >"$dir/boots"
    wait "$pid"
    rc=$?
    echo "$(date -u +%T.%N | cut -c1-12) boot $n: systemd-nspawn exited $rc$([[ $rc == 133 ]] && echo ' (reboot)')" >>"$dir/boots.log"
    [[ $rc == 133 ]] || break
  done
  echo "$rc" >"$dir/exit"
}

# machine_up NAME: creates and boots machine NAME (its binds: $MACHINE_BIND_RO, "SRC:DST ...");
# exit 0 once its systemd is running (or degraded).
machine_up() {
  local name=$1 dir=$work/machines/$1 lower b args
  lower=$(machine_root) || { echo "machine $name: no real-systemd root" >&2; return 1; }
  mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$dir/merged" || return 1
  provision "$dir/merged"
  args=(--quiet --boot "--machine=$name" "--directory=$dir/merged" --register=no --link-journal=no
    --console=read-only)
  [[ -d /run/systemd/system ]] || args+=(--keep-unit)
  if [[ -n ${MACHINE_BRIDGE:-} ]]; then args+=("--network-bridge=$MACHINE_BRIDGE"); else args+=(--private-network); fi
  for b in ${MACHINE_BIND_RO:-}; do args+=("--bind-ro=$b"); done
  # Every descriptor but 0-2 closed: bash keeps a caller's stdout in a saved descriptor
  # while a function's redirections apply, and a caller's $(...) would wait for the
  # supervisor to close it.
  (
    exec </dev/null >/dev/null 2>&1
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    supervise "$name" "$dir" "${args[@]}"
  ) &
  echo $! >"$dir/supervisor.pid"
  machine_wait "$name" 1
}

# machine_boots NAME: how many times the machine has booted (0 before the first).
machine_boots() { cat "$work/machines/$1/boots" 2>/dev/null || echo 0; }

# machine_wait NAME N [SECONDS] [STATES]: until boot N (or a later one) of the machine is
# up: its systemd says running or degraded (or one of STATES, e.g. "maintenance": emergency
# mode).
machine_wait() {
  local name=$1 want=$2 secs=${3:-90} states=${4:-running degraded} dir=$work/machines/$1 i state=
  for ((i = 0; i < secs * 5; i++)); do
    if [[ -e $dir/exit ]]; then
      echo "machine $name stopped (nspawn exit $(<"$dir/exit")) while waiting for boot $want" >&2
      tail -n 20 "$dir/console.log" >&2
      return 1
    fi
    if (($(machine_boots "$name") >= want)); then
      state=$(REAL_SYSTEMD_NAME=$name timeout 10 "$RS/exec" systemctl is-system-running 2>/dev/null </dev/null)
      [[ -n $state && " $states " == *" $state "* ]] && return 0
    fi
    sleep 0.2
  done
  echo "machine $name: boot $want not up after ${secs}s (boots: $(machine_boots "$name"), state: ${state:-none})" >&2
  tail -n 20 "$dir/console.log" >&2
  return 1
}

# machine_reboot_wait NAME BOOTS-BEFORE [SECONDS]: until the machine has rebooted since
# BOOTS-BEFORE and is up again.
machine_reboot_wait() { machine_wait "$1" $(($2 + 1)) "${3:-90}"; }

# machine_down NAME: powers the machine off (no reboot follows) and unmounts its root.
machine_down() {
  local name=$1 dir=$work/machines/$1 sup i
  [[ -d $dir ]] || return 0
  : >"$dir/stop"
  REAL_SYSTEMD_NAME=$name "$RS/down" >/dev/null 2>&1
  sup=$(cat "$dir/supervisor.pid" 2>/dev/null)
  for ((i = 0; i < 100; i++)); do
    [[ -n $sup ]] && kill -0 "$sup" 2>/dev/null || break
    # A reboot raced with the stop: power off the boot that followed.
    ((i % 10 == 9)) && REAL_SYSTEMD_NAME=$name "$RS/down" >/dev/null 2>&1
    sleep 0.2
  done
  mountpoint -q "$dir/merged" && umount "$dir/merged"
  return 0
}

# bridge_up NAME ADDRESS/PREFIX: a host bridge (the machines' LAN) with that host address.
# Machines started with MACHINE_BRIDGE=NAME get a veth on it at every boot.
bridge_up() {
  ip link add "$1" type bridge && echo "$1" >>"$work/bridges" &&
    ip addr add "$2" dev "$1" && ip link set "$1" up
}

# machines_cleanup: every machine and bridge of this run down (the run's EXIT trap).
machines_cleanup() {
  local d b
  for d in "$work"/machines/*/; do
    [[ -d $d ]] && machine_down "$(basename "$d")"
  done
  if [[ -f $work/bridges ]]; then
    while read -r b; do ip link del "$b" 2>/dev/null; done <"$work/bridges"
  fi
}

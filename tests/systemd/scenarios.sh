# shellcheck shell=bash disable=SC2154 # work, FAKE, SERVICE, BIN, FAILPOINTS: set by ./run
# Scenario groups of tests/systemd/run (sourced there). Each group_X boots its own
# container (`boot VARIANT`), drives the agent through systemd inside it (`g SCRIPT` runs
# SCRIPT there with guest.sh's helpers), and reports one line per scenario with `check`.
# Assertions read what systemd reports (systemctl show, journalctl -o json) and the
# agent's status; q.py evaluates a Python expression over JSON.

# systemd's MESSAGE_IDs (sd-messages.h) and the agent's (agent/src/logging.rs).
SD_JOB_DONE=39f53479d3a045ac8e11786248231fbf
SD_PROCESS_EXIT=98e322203f7a4ed290d09fe03c09fe15
SD_RESTART_SCHEDULED=5eb03494b6584870a536b337290809b3
SD_UNIT_SUCCESS=7ad2d189f7e94e70a38c781354912448
ID_DEPLOYED=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b31
ID_FAILED=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b32
ID_ROLLED_BACK=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b33
ID_ROLLBACK_FAILED=5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b34

# unit_props: the agent unit's result as systemd reports it, one KEY=VALUE a line.
unit_props() {
  g "systemctl show -p ActiveState -p SubState -p Result -p ExecMainCode -p ExecMainStatus $SERVICE"
}
# has LINE TEXT: TEXT holds the exact line LINE.
has() { grep -qxF -- "$1" <<<"$2"; }

# ---- the unit files ----------------------------------------------------------------------

group_units_timer() {
  boot timer || return
  local shown verify props out c v1 j
  shown=$(g "systemctl cat --no-pager $SERVICE homelab-agent.timer | grep -v '^# /'")
  verify=$(g 'systemd-analyze verify /etc/systemd/system/homelab-agent.service /etc/systemd/system/homelab-agent.timer 2>&1; echo "exit $?"')
  props=$(g "systemctl show -p Type -p NotifyAccess -p Restart -p RestartPreventExitStatus -p RestartUSec -p Environment -p StateDirectory -p StateDirectoryMode -p RuntimeDirectory -p RuntimeDirectoryPreserve -p ExecStart -p After -p Wants $SERVICE")
  [[ $shown == "$(cat "$work/units/timer/homelab-agent.service"; echo; cat "$work/units/timer/homelab-agent.timer")" ]] &&
    [[ $verify == "exit 0" ]] && has Type=oneshot "$props" && has NotifyAccess=main "$props" &&
    has Restart=on-failure "$props" && has "RestartPreventExitStatus=1 2 4 78" "$props" &&
    has StateDirectory=homelab-agent "$props" && has StateDirectoryMode=0755 "$props" &&
    has RuntimeDirectory=homelab-agent "$props" &&
    has RuntimeDirectoryPreserve=yes "$props" &&
    grep -q '^Environment=HOME=/root PATH=/usr/bin:' <<<"$props" &&
    grep -qF 'argv[]=/usr/local/bin/homelab-agent --config /etc/homelab-agent/config.toml run --once ;' <<<"$props" &&
    grep -q '^After=.*network-online.target' <<<"$props"
  check "units: systemd loads the service and timer rendered from the module as written (systemctl cat, systemd-analyze verify, systemctl show)" $? \
    "$(printf '%s\n' "$props" "verify: $verify" "systemctl cat:" "$shown")"

  # The timer alone starts the service: no systemctl start in this scenario.
  c=$(g cursor)
  v1=$(g 'commit v1')
  out=$(g "systemctl enable --now homelab-agent.timer 2>&1
    for i in \$(seq 300); do
      n=\$(count_since '$c' UNIT=$SERVICE MESSAGE_ID=$SD_JOB_DONE JOB_TYPE=start JOB_RESULT=done)
      [ \$n -ge 3 ] && break; sleep 0.1; done
    systemctl stop homelab-agent.timer; settle
    # journald takes PID 1's job messages and the agent's own through different sockets:
    # under load the agent's last lines can land after the job's; wait for them (10 s).
    for i in \$(seq 100); do
      u=\$(journalctl --after-cursor='$c' -o cat --no-pager SYSLOG_IDENTIFIER=homelab-agent | grep -c '^up to date at')
      [ \$u -ge 2 ] && break; sleep 0.1; done
    systemctl show -p Triggers -p LastTriggerUSec -p UnitFileState homelab-agent.timer
    echo switches: \$(grep -c '\"action\":\"test\"' $FAKE/stc.log)")
  j=$(journal_after "$c")
  local runs deployed_in uptodate_in
  runs=$(q --lines "len([e for e in d if e.get('UNIT') == '$SERVICE' and e.get('MESSAGE_ID') == '$SD_JOB_DONE' and e.get('JOB_TYPE') == 'start' and e.get('JOB_RESULT') == 'done'])" <<<"$j")
  deployed_in=$(q --lines "sorted({e['_SYSTEMD_INVOCATION_ID'] for e in d if e.get('MESSAGE_ID') == '$ID_DEPLOYED' and e.get('COMMIT') == '$v1'})" <<<"$j")
  uptodate_in=$(q --lines "sorted({e['_SYSTEMD_INVOCATION_ID'] for e in d if e.get('SYSLOG_IDENTIFIER') == 'homelab-agent' and e.get('MESSAGE', '').startswith('up to date at ${v1:0:8}')})" <<<"$j")
  [[ $runs -ge 3 ]] && has "Triggers=$SERVICE" "$out" && has UnitFileState=enabled "$out" &&
    [[ $(q 'len(d)' <<<"$deployed_in") == 1 ]] && [[ $(q 'len(d)' <<<"$uptodate_in") -ge 2 ]] &&
    [[ $(q --lines "len(set(json.loads('$deployed_in')) & set(json.loads('$uptodate_in')))" <<<"{}") == 0 ]] &&
    has "switches: 1" "$out"
  check "timer: the timer starts the oneshot service; the first run deploys, the next ones find it up to date (one activation)" $? \
    "$(printf '%s\n' "$out" "finished start jobs: $runs" "deployed in invocations: $deployed_in" "up to date in: $uptodate_in" "the agent's messages:" "$(messages "$j" "e.get('SYSLOG_IDENTIFIER') == 'homelab-agent'")")"

  # Status for everyone (issue 21): a user who is not root reads the whole status over
  # ssh, while the git cache (a mirror of a repository that may be private) stays root's.
  out=$(g "runuser -u nobody -- homelab-agent --config /etc/homelab-agent/config.toml status --json; echo \"exit \$?\"
    stat -c 'state dir %a' /var/lib/homelab-agent
    stat -c 'cache %a' /var/lib/homelab-agent/cache.git
    runuser -u nobody -- ls /var/lib/homelab-agent/cache.git >/dev/null 2>&1 && echo 'cache readable by nobody'" 2>&1)
  grep -q '"commit": "'"$v1"'"' <<<"$out" && grep -qx 'exit 0' <<<"$out" &&
    grep -qx 'state dir 755' <<<"$out" && grep -qx 'cache 700' <<<"$out" &&
    ! grep -q 'cache readable by nobody' <<<"$out" && ! grep -q 'state unknown' <<<"$out"
  check "status for everyone: user nobody reads the whole status (exit 0, the deployed commit); the state dir is 0755, the git cache 0700 and unreadable to nobody" $? "$out"
}

# ---- activation in the transient unit ------------------------------------------------------

group_activation() {
  boot run || return
  local c out sys j stc envdump
  c=$(g cursor)
  out=$(g "commit v1 >/dev/null; systemctl start $SERVICE; echo \"start exit \$?\"
    echo \"switch unit after the run: \$(prop homelab-agent-switch.service LoadState)\"" 2>&1)
  sys=$(g current)
  stc=$(g "cat $FAKE/stc.log")
  j=$(journal_after "$c")
  envdump=$(g "tr '\0' '\n' < \$(ls $FAKE/env/stc-test-* | head -n 1)")
  local props
  props=$(unit_props)
  has "start exit 0" "$out" && has Result=success "$props" && has ExecMainStatus=0 "$props"
  check "activation: a deployment run by systemd exits 0 (Result=success, ExecMainStatus=0)" $? "$out"$'\n'"$props"
  [[ -n $sys ]] &&
    [[ $(q --lines "[(e['action'], e['ppid']) for e in d]" <<<"$stc") == '[["test", 1], ["boot", 1]]' ]] &&
    [[ $(q --lines "sorted(e['MESSAGE'] for e in d if e.get('_SYSTEMD_UNIT') == 'homelab-agent-switch.service' and e.get('_SYSTEMD_CGROUP') == '/system.slice/homelab-agent-switch.service')" <<<"$j") == "[\"fake switch-to-configuration boot $sys\", \"fake switch-to-configuration test $sys\"]" ]] &&
    [[ $(q --lines "len([e for e in d if e.get('UNIT') == 'homelab-agent-switch.service' and e.get('MESSAGE_ID') == '$SD_UNIT_SUCCESS'])" <<<"$j") == 2 ]] &&
    has "switch unit after the run: not-found" "$out" &&
    has "NIXOS_INSTALL_BOOTLOADER=" "$envdump" && ! grep -q '^NOTIFY_SOCKET=' <<<"$envdump"
  check "activation: switch-to-configuration test and boot run in the transient unit homelab-agent-switch.service (child of PID 1, its own cgroup and journal stream), which is collected" $? \
    "$(printf '%s\n' "stc.log:" "$stc" "$out" "environment of the test activation:" "$envdump")"
}

# ---- STATUS= ---------------------------------------------------------------------------------

group_notify() {
  boot run || return
  local v2 out
  deploy_first v1 >/dev/null
  # Each phase made slow enough to be seen: the build, the activation, the health check.
  v2=$(g "echo 3 > $FAKE/slow; commit v2 sleep:3 build-sleep:3")
  out=$(g "systemctl start --no-block $SERVICE; last=
    for i in \$(seq 800); do
      s=\$(prop '' StatusText)
      [ \"\$s\" != \"\$last\" ] && echo \"status: \$s\" && last=\$s
      case \$(prop '' ActiveState) in inactive | failed) break ;; esac
      sleep 0.03
    done; rm -f $FAKE/slow; prop '' Result")
  local seq
  seq=$(grep '^status: .' <<<"$out" | sed 's/^status: //' | tr '\n' '|')
  grep -Eq "building ${v2:0:8} for pi1\|(.*\|)?activating ${v2:0:8}\|(.*\|)?checking health of ${v2:0:8}\|" <<<"$seq" &&
    has success "$out"
  check "notify: STATUS= (systemctl show -p StatusText) names each phase in turn: building, activating, checking health" $? "$out"
  # nix's progress during the build (issue 21), added to the phase at most once a second.
  grep -Eq "^status: building ${v2:0:8} for pi1: building 0/1 derivations, now: nixos-system-pi1$" <<<"$out"
  check "notify: STATUS= adds nix's progress to the building phase (derivations built of total, the one now built)" $? "$out"

  # An unhealthy system: the health rounds that fail show in STATUS= too.
  g "commit v3 ok ok false" >/dev/null
  out=$(g "systemctl start --no-block $SERVICE; last=
    for i in \$(seq 800); do
      s=\$(prop '' StatusText)
      [ \"\$s\" != \"\$last\" ] && echo \"status: \$s\" && last=\$s
      case \$(prop '' ActiveState) in inactive | failed) break ;; esac
      sleep 0.03
    done; prop '' Result")
  # (The activation and "checking health of" may last less than a sample here: a fast
  # switch, and a first round that fails at once.)
  [[ $(grep -c '^status: health: round [0-9]* not yet healthy, retrying' <<<"$out") -ge 2 ]] && has exit-code "$out"
  check "notify: STATUS= shows the failing health rounds of an unhealthy system before it is rolled back" $? "$out"
}

# ---- MESSAGE_IDs and exit codes 0, 1 and 3 --------------------------------------------------

group_journal() {
  boot run || return
  local c0 c1 c2 v1 v2 sys1 out1 out3 j props
  c0=$(g cursor)
  v1=$(g 'commit v1')
  g "systemctl start $SERVICE"
  sys1=$(g current)
  # An unhealthy commit: rolled back, exit 1, which RestartPreventExitStatus= keeps from
  # being restarted.
  c1=$(g cursor)
  v2=$(g 'commit v2 ok ok false')
  out1=$(g "systemctl start $SERVICE; echo \"start exit \$?\"; sleep 2.5
    echo \"restarts: \$(restarts_since '$c1')\"; echo \"live: \$(current)\"")
  props=$(unit_props)
  has "start exit 1" "$out1" && has Result=exit-code "$props" && has ExecMainStatus=1 "$props" &&
    has ActiveState=failed "$props" && has "restarts: 0" "$out1" && has "live: $sys1" "$out1"
  check "exit codes: a rolled-back deployment exits 1: unit failed (Result=exit-code, ExecMainStatus=1), not restarted (RestartPreventExitStatus)" $? "$out1"$'\n'"$props"

  # An unhealthy commit whose rollback fails too: exit 3, restarted by systemd; the
  # restart retries the rollback, which then succeeds.
  c2=$(g cursor)
  g "echo exit:1 > $FAKE/faults/\$(basename $sys1); commit v3 ok ok false" >/dev/null
  out3=$(g "systemctl start --no-block $SERVICE
    for i in \$(seq 300); do [ \"\$(prop '' ExecMainStatus)\" = 3 ] && break; sleep 0.05; done
    rm -f $FAKE/faults/\$(basename $sys1)
    wait_restarts '$c2' 1 && settle
    echo \"live: \$(current)\"")
  props=$(unit_props)
  j=$(journal_after "$c2" | q --lines "'\n'.join(json.dumps(e) for e in d if e.get('UNIT') == '$SERVICE')")
  # (If the restart came before the fault was removed, it failed the same way: one more 3.)
  [[ $(q --lines "(lambda s: len(s) >= 1 and set(s) == {'3'})([e['EXIT_STATUS'] for e in d if e.get('MESSAGE_ID') == '$SD_PROCESS_EXIT'])" <<<"$j") == true ]] &&
    [[ $(q --lines "len([e for e in d if e.get('MESSAGE_ID') == '$SD_RESTART_SCHEDULED'])" <<<"$j") -ge 1 ]] &&
    has Result=success "$props" && has "live: $sys1" "$out3" &&
    [[ $(status_json | q 'd["needs_attention"]') == "" ]]
  check "exit codes: a failed rollback exits 3 and systemd restarts the agent (Restart=on-failure); the restart completes the rollback and exits 0" $? \
    "$(printf '%s\n' "$out3" "$props" "systemd about the unit:" "$(q --lines "'\n'.join(e['MESSAGE'] for e in d)" <<<"$j")")"

  # Every MESSAGE_ID the agent sends, with its fields, as journald stored them.
  j=$(journal_after "$c0")
  local common="e.get('_SYSTEMD_UNIT') == '$SERVICE' and e.get('_TRANSPORT') == 'journal'"
  local n
  n=$(q --lines "len([e for e in d if e.get('MESSAGE_ID') == '$ID_DEPLOYED' and $common and e.get('PRIORITY') in ('5', '6') and e.get('COMMIT') == '$v1' and e.get('SYSTEM') == '$sys1' and e.get('GENERATION') == '1' and e['MESSAGE'].startswith('deployed ${v1:0:8}')])" <<<"$j")
  check "journal: DEPLOYED $ID_DEPLOYED with COMMIT, SYSTEM, GENERATION, PRIORITY=5 (info)" "$([[ $n == 1 ]]; echo $?)" "$(journal_of "$j" "$ID_DEPLOYED")"
  n=$(q --lines "len([e for e in d if e.get('MESSAGE_ID') == '$ID_FAILED' and $common and e.get('PRIORITY') == '3' and e.get('COMMIT') == '$v2' and 'health check failed' in e['MESSAGE']])" <<<"$j")
  check "journal: FAILED $ID_FAILED with COMMIT and the reason, PRIORITY=3" "$([[ $n -ge 1 ]]; echo $?)" "$(journal_of "$j" "$ID_FAILED")"
  n=$(q --lines "len([e for e in d if e.get('MESSAGE_ID') == '$ID_ROLLED_BACK' and $common and e.get('PRIORITY') in ('4', '5') and '$sys1' in e['MESSAGE']])" <<<"$j")
  check "journal: ROLLED_BACK $ID_ROLLED_BACK naming the system rolled back to" "$([[ $n -ge 1 ]]; echo $?)" "$(journal_of "$j" "$ID_ROLLED_BACK")"
  n=$(q --lines "len([e for e in d if e.get('MESSAGE_ID') == '$ID_ROLLBACK_FAILED' and $common and e.get('PRIORITY') == '3' and 'switch-to-configuration test of $sys1' in e['MESSAGE']])" <<<"$j")
  check "journal: ROLLBACK_FAILED $ID_ROLLBACK_FAILED with the failed switch, PRIORITY=3" "$([[ $n -ge 1 ]]; echo $?)" "$(journal_of "$j" "$ID_ROLLBACK_FAILED")"
}

# journal_after CURSOR: the container's journal after CURSOR, as JSON lines (no journalctl
# matches: with matches, journalctl 252 --after-cursor skips the first matching entry).
journal_after() { g "journalctl --after-cursor='$1' -o json --no-pager"; }
# messages JSON-LINES CONDITION: MESSAGE of each entry `e` for which the Python CONDITION holds.
messages() { q --lines "'\n'.join(str(e.get('MESSAGE', '')) for e in d if $2)" <<<"$1"; }

# journal_of JSON-LINES ID: the entries with that MESSAGE_ID, for evidence.
journal_of() {
  q --lines "'\n'.join(json.dumps({k: v for k, v in e.items() if not k.startswith('_') or k in ('_SYSTEMD_UNIT', '_TRANSPORT')}, sort_keys=True) for e in d if e.get('MESSAGE_ID') == '$2') or 'no entry with MESSAGE_ID $2; all: ' + json.dumps([(e.get('MESSAGE_ID'), e.get('MESSAGE')) for e in d])" <<<"$1"
}

# ---- exit codes 78 and 75 ------------------------------------------------------------------

group_exit_codes() {
  boot run || return
  local out props c v2
  deploy_first v1 >/dev/null
  c=$(g cursor)
  out=$(g "cp /etc/homelab-agent/config.toml /root/config.good
    sed -i '1i bogus_key = 1' /etc/homelab-agent/config.toml
    systemctl start $SERVICE; echo \"start exit \$?\"; sleep 2.5
    echo \"restarts: \$(restarts_since '$c')\"
    cp /root/config.good /etc/homelab-agent/config.toml")
  out+=$'\n'$(messages "$(journal_after "$c")" "e.get('SYSLOG_IDENTIFIER') == 'homelab-agent'")
  props=$(unit_props)
  has "start exit 1" "$out" && has ExecMainStatus=78 "$props" && has Result=exit-code "$props" &&
    has ActiveState=failed "$props" && has "restarts: 0" "$out" && grep -q 'bogus_key: unknown field' <<<"$out"
  check "exit codes: an invalid config exits 78 (EX_CONFIG) with the key in the journal, not restarted (RestartPreventExitStatus)" $? "$out"$'\n'"$props"

  c=$(g cursor)
  v2=$(g 'commit v2')
  out=$(g "sed -i 's|file:///srv/homelab|git://127.0.0.1:9/homelab|' /etc/homelab-agent/config.toml
    systemctl start --no-block $SERVICE
    for i in \$(seq 300); do [ \"\$(prop '' ExecMainStatus)\" = 75 ] && break; sleep 0.05; done
    cp /root/config.good /etc/homelab-agent/config.toml
    wait_restarts '$c' 1 && settle; echo \"live: \$(current)\"")
  props=$(unit_props)
  local j
  j=$(journal_after "$c" | q --lines "'\n'.join(json.dumps(e) for e in d if e.get('UNIT') == '$SERVICE')")
  [[ $(q --lines "(lambda s: len(s) >= 1 and set(s) == {'75'})([e['EXIT_STATUS'] for e in d if e.get('MESSAGE_ID') == '$SD_PROCESS_EXIT'])" <<<"$j") == true ]] &&
    has Result=success "$props" && [[ $(status_json | q 'd["deployed"]["commit"]') == "$v2" ]]
  check "exit codes: an unreachable remote exits 75 (EX_TEMPFAIL) and systemd restarts the agent, which then deploys" $? \
    "$out"$'\n'"$props"$'\n'"$(q --lines "'\n'.join(e['MESSAGE'] for e in d)" <<<"$j")"
}

# ---- systemd health checks ------------------------------------------------------------------

group_checks() {
  boot run || return
  local sys1 state v out detail props expect outcome
  sys1=$(deploy_first v1)
  for state in failed missing flapping active; do
    outcome="rolled back"
    case $state in
    failed) expect="probe.service is failed" ;;
    missing) expect="probe.service is inactive" ;;
    flapping) expect="probe.service is activating" ;;
    active) expect="sshd.service, probe.service active" outcome=deployed ;;
    esac
    v=$(g "probe $state; sleep 1; commit $state")
    out=$(g "systemctl start $SERVICE; echo \"start exit \$?\"; echo \"live: \$(current)\"")
    props=$(g 'systemctl show -p LoadState -p ActiveState -p SubState -p Result -p NRestarts probe.service')
    detail=$(history_json | q "[c.get('detail') for c in d[0].get('checks', []) if c['name'].startswith('systemd')]")
    case $state in
    failed) has ActiveState=failed "$props" && has Result=exit-code "$props" ;;
    missing) has LoadState=not-found "$props" ;;
    flapping) has ActiveState=activating "$props" && grep -Eqx 'SubState=(auto-restart|start)' <<<"$props" &&
      [[ $(sed -n 's/^NRestarts=//p' <<<"$props") -ge 3 ]] ;;
    active) has ActiveState=active "$props" ;;
    esac && if [[ $state == active ]]; then
      has "start exit 0" "$out" && [[ $(status_json | q 'd["deployed"]["commit"]') == "$v" ]]
    else
      has "start exit 1" "$out" && has "live: $sys1" "$out"
    fi && grep -qF "$expect" <<<"$detail"
    check "systemd check: probe.service $state as systemd reports it -> $outcome ($expect)" $? \
      "$(printf '%s\n' "$out" "probe.service: $props" "check detail: $detail")"
  done
}

# ---- NOTIFY_SOCKET ---------------------------------------------------------------------------

group_notify_socket() {
  boot run || return
  local out dumps
  deploy_first v1 >/dev/null
  # While the agent runs: its own environment has NOTIFY_SOCKET, its children's must not.
  # listing: "main PID yes|no" and "child PID COMMAND: clean|LEAK" for the unit's processes.
  local listing='main=$(prop "" MainPID); for p in $(pids_of_unit homelab-agent.service); do
      if [ "$p" = "$main" ]; then echo "main $p $(has_notify_socket $p && echo yes || echo no)"
      else echo "child $p $(tr "\0" " " </proc/$p/cmdline | cut -c1-120): $(has_notify_socket $p && echo LEAK || echo clean)"; fi; done'
  out=$(g "commit v2 sleep:2 >/dev/null; systemctl start --no-block $SERVICE
    wait_status '^activating' && { echo '-- activating (systemd-run)'; $listing; }; settle
    install -m 0644 \$UNITS/direct/config.toml /etc/homelab-agent/config.toml
    commit v3 sleep:2 build-sleep:2 >/dev/null; systemctl start --no-block $SERVICE
    wait_status '^building' && { echo '-- building (direct)'; $listing; }
    wait_status '^activating' && { echo '-- activating (direct)'; $listing; }; settle
    echo \"result: \$(prop '' Result)\"")
  dumps=$(g "cd $FAKE/env && for f in *; do echo \"\$f: \$(tr '\0' '\n' <\$f | grep -c -e '^NOTIFY_SOCKET=') NOTIFY_SOCKET, \$(tr '\0' '\n' <\$f | grep -c -e '^INVOCATION_ID=') INVOCATION_ID\"; done")
  [[ $(grep -c '^main [0-9]* yes$' <<<"$out") == 3 ]] && ! grep -q LEAK <<<"$out" &&
    grep -A20 -- '-- activating (systemd-run)' <<<"$out" | grep -q '^child .*systemd-run.*: clean' &&
    grep -A20 -- '-- building (direct)' <<<"$out" | grep -q '^child .*nix.*: clean' &&
    grep -A20 -- '-- activating (direct)' <<<"$out" | grep -q '^child .*switch-to-configuration.*: clean' &&
    has "result: success" "$out"
  check "notify socket: the agent has NOTIFY_SOCKET, none of its running children (systemd-run, nix, switch-to-configuration) inherit it (B2)" $? "$out"
  # Direct-mode activations and the command checks inherit the agent's environment
  # (INVOCATION_ID shows it), without NOTIFY_SOCKET.
  ! grep -q ': [1-9] NOTIFY_SOCKET' <<<"$dumps" && grep -q '^stc-test-.*: 0 NOTIFY_SOCKET, 1 INVOCATION_ID' <<<"$dumps" &&
    grep -q '^check-.*: 0 NOTIFY_SOCKET, 1 INVOCATION_ID' <<<"$dumps"
  check "notify socket: activations and health-check commands ran without NOTIFY_SOCKET (their saved environments)" $? "$dumps"
}

# ---- the run lock -----------------------------------------------------------------------------

group_lock() {
  boot run || return
  local out props c
  deploy_first v1 >/dev/null
  # systemctl start while the service runs: systemd merges the job, one run only.
  c=$(g cursor)
  out=$(g "commit v2 ok build-sleep:3 >/dev/null; systemctl start --no-block $SERVICE; wait_status '^building'
    id=\$(prop '' InvocationID); systemctl start $SERVICE; echo \"second start exit \$?\"
    echo \"state after it returned: \$(prop '' ActiveState)\"")
  local runs invocations
  runs=$(journal_after "$c" | q --lines "len([e for e in d if e.get('UNIT') == '$SERVICE' and e.get('MESSAGE_ID') == '$SD_JOB_DONE' and e.get('JOB_TYPE') == 'start'])")
  invocations=$(journal_after "$c" | q --lines "len({e.get('_SYSTEMD_INVOCATION_ID') for e in d if e.get('SYSLOG_IDENTIFIER') == 'homelab-agent'})")
  has "second start exit 0" "$out" && has "state after it returned: inactive" "$out" &&
    [[ $runs == 1 && $invocations == 1 ]]
  check "lock: systemctl start while the service runs joins that run (one start job, one invocation)" $? "$out"$'\n'"start jobs: $runs, agent invocations: $invocations"

  # A run started by hand holds the lock: the service exits 4, not restarted.
  c=$(g cursor)
  # The start waits (up to 30 s) until status says the manual run holds the lock (a
  # `pgrep -f 'nix.*build'` used here before matched this script's own command line, so
  # it did not wait at all); the manual run's build sleeps 8 s, long after that.
  out=$(g "commit v3 ok build-sleep:8 >/dev/null
    setsid homelab-agent --config /etc/homelab-agent/config.toml run --once >/root/manual.log 2>&1 </dev/null &
    for i in \$(seq 300); do homelab-agent --config /etc/homelab-agent/config.toml status --json 2>/dev/null | grep -q '\"state\": \"running\"' && break; sleep 0.1; done
    systemctl start $SERVICE; echo \"start exit \$?\"; sleep 2.5
    echo \"restarts: \$(restarts_since '$c')\"
    wait; echo \"manual run: \$(tail -n 1 /root/manual.log)\"")
  out+=$'\n'$(messages "$(journal_after "$c")" "e.get('SYSLOG_IDENTIFIER') == 'homelab-agent'")
  props=$(unit_props)
  has "start exit 1" "$out" && has ExecMainStatus=4 "$props" && has Result=exit-code "$props" &&
    has "restarts: 0" "$out" && grep -q 'lock' <<<"$out"
  check "lock: systemctl start while a manual run holds the lock exits 4, not restarted (RestartPreventExitStatus)" $? "$out"$'\n'"$props"
}

# ---- the agent killed at each step -----------------------------------------------------------

# after_kill LABEL COMMIT PREVIOUS-SYSTEM EXPECT CURSOR: the checks once a killed run was
# restarted by systemd and settled. EXPECT: deployed (the commit is live and recorded) or
# rolled-back (the previous system is live and the commit is remembered bad).
after_kill() {
  local label=$1 commit=$2 prev=$3 expect=$4 c=$5 st j live restarts killed problems=()
  st=$(status_json)
  j=$(journal_after "$c")
  live=$(g current)
  killed=$(q --lines "len([e for e in d if e.get('UNIT') == '$SERVICE' and e.get('MESSAGE_ID') == '$SD_PROCESS_EXIT' and e.get('EXIT_CODE') == 'killed' and e.get('EXIT_STATUS') == '9'])" <<<"$j")
  restarts=$(q --lines "len([e for e in d if e.get('UNIT') == '$SERVICE' and e.get('MESSAGE_ID') == '$SD_RESTART_SCHEDULED'])" <<<"$j")
  [[ $killed == 1 ]] || problems+=("systemd saw $killed SIGKILLed main processes, expected 1")
  [[ $restarts -ge 1 ]] || problems+=("systemd scheduled no restart")
  [[ $(q 'd["in_progress"]' <<<"$st") == "" ]] || problems+=("an intent is left")
  [[ $(q 'd["needs_attention"]' <<<"$st") == "" ]] || problems+=("needs attention")
  [[ $(q --lines "len([e for e in d if e.get('MESSAGE_ID') == '$ID_ROLLBACK_FAILED'])" <<<"$j") == 0 ]] ||
    problems+=("a ROLLBACK_FAILED alert was raised")
  [[ $live == "$(g "readlink -f $FAKE/profiles/system")" ]] || problems+=("the live system is not the profile's")
  case $expect in
  deployed)
    [[ $(q 'd["deployed"]["commit"]' <<<"$st") == "$commit" ]] || problems+=("$commit is not the deployed commit")
    [[ $live != "$prev" ]] || problems+=("still on the previous system") ;;
  rolled-back)
    [[ $live == "$prev" ]] || problems+=("not back on the previous system")
    [[ $(q '(d["bad_commit"] or {}).get("commit")' <<<"$st") == "$commit" ]] || problems+=("$commit not remembered bad") ;;
  esac
  if ((${#problems[@]} == 0)); then ok "$label"; else
    fail "$label" "$(printf '%s\n' "${problems[@]}" "status: $st" "journal:" \
      "$(q --lines "'\n'.join(e.get('SYSLOG_IDENTIFIER', '') + ': ' + e['MESSAGE'] for e in d if e.get('SYSLOG_IDENTIFIER') in ('systemd', 'homelab-agent'))" <<<"$j")")"
  fi
}

# kill_points POINT...: one deployment per point (agent/src/lib.rs failpoint()), each run
# SIGKILLing itself there, then restarted by systemd.
kill_points() {
  if [[ $FAILPOINTS == 0 ]]; then
    skip "kill points $*: $BIN was built without --features failpoints"
    return
  fi
  boot run || return
  local point prev v c healthy expect
  prev=$(deploy_first v0)
  for point in "$@"; do
    healthy=true expect=deployed
    [[ $point == mid_rollback ]] && healthy=false expect=rolled-back
    c=$(g cursor)
    v=$(g "commit kill-$point ok ok $healthy")
    # The kill point is set for one run only: systemd's environment is reset right after the
    # kill, a second before the restart (RestartSec=1s).
    g "systemctl set-environment HOMELAB_AGENT_FAILPOINTS=$point; systemctl start --no-block $SERVICE
      wait_killed; systemctl unset-environment HOMELAB_AGENT_FAILPOINTS
      wait_restarts '$c' 1 && settle" >/dev/null 2>&1
    after_kill "kill points: SIGKILL at $point, restarted by systemd -> $expect" "$v" "$prev" "$expect" "$c"
    [[ $expect == deployed ]] && prev=$(g current)
  done
}

group_kill_points_1() { kill_points before_build after_intent before_switch after_activate mid_health; }
group_kill_points_2() { kill_points after_health before_profile_set after_profile_set after_boot mid_rollback; }

# kill_external HOW: the agent killed from outside while a phase is slow. HOW is
# systemctl-kill (`systemctl kill --signal=SIGKILL`: every process of the unit) or oom (an
# OOM-style SIGKILL of the main process alone, a marker logged first).
kill_external() {
  boot run || return
  local how=$1 phase prev v c wait_for mode build before after want
  prev=$(deploy_first v0)
  for phase in building activating checking; do
    mode=ok build=ok
    case $phase in
    building) build=build-sleep:3 wait_for='^building' ;;
    activating) mode=sleep:3 wait_for='^activating' ;;
    checking) g "echo 3 > $FAKE/slow"; wait_for='^checking health' ;;
    esac
    c=$(g cursor)
    before=$(interrupted_entries)
    v=$(g "commit $how-$phase $mode $build")
    g "systemctl start --no-block $SERVICE; wait_status '$wait_for' || exit
      if [ $how = oom ]; then pid=\$(prop '' MainPID)
        logger -t hla-test \"OOM-style kill of the main process \$pid while $phase\"; kill -KILL \$pid
      else systemctl kill --signal=SIGKILL $SERVICE; fi
      wait_killed; rm -f $FAKE/slow; wait_restarts '$c' 1 && settle 90" >/dev/null 2>&1
    after_kill "kill: $how while $phase, restarted by systemd -> deployed$([[ $phase == activating ]] && echo ' (B1: the killed run'"'"'s switch unit is still running)')" \
      "$v" "$prev" deployed "$c"
    # One kill, one event: one `interrupted` entry when an activation was under way, none
    # for a build (nothing had been touched).
    after=$(interrupted_entries) want=1
    [[ $phase == building ]] && want=0
    [[ $((after - before)) == "$want" ]]
    check "kill: $how while $phase: $want interrupted history entr$([[ $want == 1 ]] && echo y || echo ies) for the one kill" $? \
      "interrupted entries before: $before, after: $after"
    prev=$(g current)
  done
}

# How many `interrupted` runs history holds.
interrupted_entries() { g 'agent history --json' | q "len([r for r in d if r['outcome'] == 'interrupted'])"; }
group_kill_systemctl() { kill_external systemctl-kill; }
group_kill_oom() {
  kill_external oom || return
  local c v prev
  prev=$(g current)
  # The activation itself SIGKILLs the agent that started it (the fake's kill-agent-once,
  # which finds the agent behind systemd-run): restarted, recovered, deployed.
  c=$(g cursor)
  v=$(g "commit kill-agent-once kill-agent-once")
  g "systemctl start --no-block $SERVICE; wait_killed; wait_restarts '$c' 1 && settle 90" >/dev/null 2>&1
  after_kill "kill: the activation SIGKILLs the agent (not PID 1) behind systemd-run, restarted by systemd -> deployed" \
    "$v" "$prev" deployed "$c"
  # Activation as the agent's child ([activation] mode = "direct"): the main process
  # killed mid-activation; systemd stops the rest of the unit (the orphaned switch) before
  # it restarts the agent.
  prev=$(g current)
  c=$(g cursor)
  v=$(g "install -m 0644 \$UNITS/direct/config.toml /etc/homelab-agent/config.toml; commit oom-direct sleep:3")
  g "systemctl start --no-block $SERVICE; wait_status '^activating' || exit
    logger -t hla-test \"OOM-style kill of the main process while activating directly\"; kill -KILL \$(prop '' MainPID)
    wait_killed; wait_restarts '$c' 1 && settle 90" >/dev/null 2>&1
  after_kill "kill: oom while activating in direct mode, the orphaned switch stopped by systemd, restarted -> deployed" \
    "$v" "$prev" deployed "$c"
}

# ---- B1: an activation that restarts, stops or kills the agent's unit --------------------------

# b1 VERB: the new configuration's `switch-to-configuration test` runs `systemctl VERB
# homelab-agent.service`. The timer keeps polling (every 2s) as on a real machine. It must
# settle within 2 switches to the bad system, remembered as bad, the previous system live,
# the status saying why, and no false ROLLBACK FAILED alert.
b1() {
  boot timer || return
  local verb=$1 prev v2 c st switches out i settled=0
  prev=$(deploy_first v1)
  c=$(g cursor)
  v2=$(g "commit v2 $verb-unit:$SERVICE")
  g 'systemctl start homelab-agent.timer'
  for ((i = 0; i < 45; i++)); do
    sleep 1
    st=$(status_json 2>/dev/null)
    if [[ $(q '(d.get("bad_commit") or {}).get("commit")' <<<"$st" 2>/dev/null) == "$v2" &&
      $(g current) == "$prev" ]]; then
      settled=1
      break
    fi
  done
  # Settled means it stays so: two more polls, no new switch.
  switches=$(g "grep '\"action\":\"test\"' $FAKE/stc.log | grep -vc '\"out\":\"$prev\"'")
  ((settled)) && sleep 5
  out=$(g "systemctl stop homelab-agent.timer; settle 30; echo \"switches to v2: \$(grep '\"action\":\"test\"' $FAKE/stc.log | grep -vc '\"out\":\"$prev\"')\"
    echo \"live: \$(current)\"; agent status | grep -e '^bad' -e '^last' -e 'ATTENTION' -e 'error'")
  st=$(status_json)
  local j alerts hist entries
  j=$(journal_after "$c")
  alerts=$(q --lines "len([e for e in d if e.get('MESSAGE_ID') == '$ID_ROLLBACK_FAILED'])" <<<"$j")
  # One history entry per event (issue 22): one `interrupted` entry per switch to v2, the
  # last one saying it gave v2 up.
  hist=$(g 'agent history --json')
  entries=$(q "len([r for r in d if r['outcome'] == 'interrupted' and r.get('commit') == '$v2'])" <<<"$hist")
  ((settled)) && [[ $switches -le 2 ]] && has "switches to v2: $switches" "$out" &&
    has "live: $prev" "$out" && [[ $alerts == 0 ]] &&
    q 'any(w in d["bad_commit"]["error"] for w in ("interrupt", "stop", "restart", "kill"))' <<<"$st" | grep -qx true &&
    [[ $entries == "$switches" ]] &&
    q "'remembered as bad' in [r for r in d if r['outcome'] == 'interrupted'][0]['error']" <<<"$hist" | grep -qx true
  check "B1: the activation runs 'systemctl $verb $SERVICE': at most 2 switches, one interrupted entry per switch, remembered bad with the reason, previous system live, no ROLLBACK FAILED" $? \
    "$(printf '%s\n' "settled: $settled, switches to v2: $switches, interrupted entries for v2: $entries, ROLLBACK_FAILED alerts: $alerts" "$out" "status: $st" "history: $(q "[(r['outcome'], (r.get('error') or '')[:160]) for r in d[:4]]" <<<"$hist")" "journal:" \
      "$(q --lines "'\n'.join(e.get('SYSLOG_IDENTIFIER', '') + ': ' + e['MESSAGE'] for e in d if e.get('SYSLOG_IDENTIFIER') in ('systemd', 'homelab-agent') and 'homelab-agent' in e.get('UNIT', e.get('_SYSTEMD_UNIT', '')))" <<<"$j" | tail -n 40)")"
}
group_b1_restart() { b1 restart; }
group_b1_stop() { b1 stop; }
group_b1_kill() { b1 kill; }

# systemd tier: the Debian package (scenarios 20-26). Sourced by run.sh after its own
# scenarios; `deb_scenarios` runs them with the helpers of lib.sh (scenario, check, note,
# end_scenario, start_ffmpeg, cg_of, prop, main_pid, wait_for, ...).
# shellcheck shell=bash
#
# Needs in the payload: repo/target/debian/ffrtmp_<V1>_amd64.deb and ffrtmp_<V2>_amd64.deb,
# V2 sorting after V1 (`cargo xtask deb` and `cargo xtask deb --version <V1>+test2`;
# xtask/src/deb.rs vm_packages), and repo/deployment/install-edge.sh for scenarios 25-26.
#
# 20 dpkg -i: files in place, the package's unit loaded, neither enabled nor started
# 21 systemctl enable --now: the package's daemon places a real ffmpeg with its limits
# 22 dpkg -i of the newer build: service restarted (new MainPID), ffmpeg re-adopted in the
#    same cgroup (same inode), "Re-adopted PID" in the journal, edited config kept
# 23 dpkg -r: daemon stopped, ffmpeg keeps running in its cgroup and held to its quota;
#    binary and unit gone; conffiles and state kept
# 24 dpkg -P: /etc/ffrtmp, /var/lib/ffrtmp, /run/ffrtmp and the enablement gone; ffmpeg untouched
# 25 over an install by install-edge.sh: dpkg -i refuses, names each file and the command
#    that removes it; nothing changes (the old daemon and its ffmpeg keep running)
# 26 the migration it prescribes: install-edge.sh --uninstall, dpkg -i --force-confold,
#    systemctl enable --now: edited config kept, the ffmpeg re-adopted where it is

DEB_CONFIG=/etc/ffrtmp/watch-config.yaml
DEB_QUOTA=50
DEB_MEM_MIB=256

# An operator's edit of the package's conffile: short intervals, the VM tier's limits.
deb_config() {
    cat <<YAML
# ffrtmp VM-tier config for the Debian package scenarios (an edit of the conffile)
target_commands: [ffmpeg]
scan_interval: 2s
reconcile_interval: 5s
default_limits:
  cpu_quota: $DEB_QUOTA
  memory_limit: $DEB_MEM_MIB
  pids_max: 64
# ffmpeg is started in a systemd-run service: placed in a job cgroup, as these scenarios
# check (services: limit_unit, the default, is scenario 13's).
services: move
YAML
}
deb_placed() { [[ $(cg_of "$1") == "$2" ]]; }
deb_status() { dpkg-query -W -f='${Status} ${Version}' ffrtmp 2>/dev/null; }
# deb_dpkg NAME ARGS...: dpkg without a terminal (as apt runs it); output in out/deb-NAME.txt
# and $DEB_OUT, exit status in $DEB_RC, seconds in $DEB_SECS.
deb_dpkg() {
    local name=$1 t0; shift
    t0=$(now)
    DEB_RC=0
    DEB_OUT=$(dpkg "$@" </dev/null 2>&1) || DEB_RC=$?
    DEB_SECS=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
    echo "$DEB_OUT" >"$OUT/deb-$name.txt"
    awk '{print "    | " $0}' <<<"$DEB_OUT"
}
deb_said() { grep -qF -- "$1" <<<"$DEB_OUT"; }
deb_exe() { readlink "/proc/$1/exe" 2>/dev/null; }
deb_cpu_ok() { # deb_cpu_ok CGROUP: held to DEB_QUOTA (+-15 %) over 3 s
    local share; share=$(cpu_share "$1" 3)
    DEB_SHARE=$share
    in_range "$share" "$(awk -v q=$DEB_QUOTA 'BEGIN {print q / 100 * 0.85}')" "$(awk -v q=$DEB_QUOTA 'BEGIN {print q / 100 * 1.15}')"
}

deb_scenarios() {
    local install=$REPO/deployment/install-edge.sh
    local debs=() d v1 v2 deb1 deb2 out rc main old new ff job ino scg cfgsum wants ver fp va st t0 secs
    wants=/etc/systemd/system/multi-user.target.wants/$UNIT

    # ---------------------------------------------------------------------------------------
    scenario 20 "dpkg -i of the package: files in place, neither enabled nor started"
    # A node without the install-edge.sh install of the scenarios before (and without their
    # workloads, the WatchdogSec drop-in and the state): the package is tested as shipped.
    systemctl stop 'ffrtmp-test-ff*.service' 'stream@*.service' 'stream-kids@*.service' 'stream-wrap@*.service' 2>/dev/null
    "$install" --uninstall --purge >"$OUT/deb-pre-uninstall.txt" 2>&1
    rm -rf /etc/ffrtmp /etc/systemd/system/"$UNIT".d /run/ffrtmp /var/lib/ffrtmp
    systemctl daemon-reload
    systemctl reset-failed "$UNIT" 2>/dev/null
    # The rootfs drops docs and man pages (dpkg path-exclude, as slim images do); let this
    # package's through, as an operator of such a node would, so that they can be checked.
    printf 'path-include=/usr/share/doc/ffrtmp/*\npath-include=/usr/share/man/man1/ffrtmp.1.gz\n' \
        >/etc/dpkg/dpkg.cfg.d/02-ffrtmp-docs
    check "no ffrtmp install left (no /usr/local/bin/ffrtmp, no unit in /etc/systemd/system)" \
        test ! -e /usr/local/bin/ffrtmp -a ! -e /etc/systemd/system/"$UNIT"
    check "no governed process left from earlier scenarios ($SCOPE gone)" \
        wait_for 15 bash -c "! systemctl is-active --quiet $SCOPE"
    for d in "$REPO"/target/debian/ffrtmp_*_amd64.deb; do [[ -f $d ]] && debs+=("$d"); done
    check "two packages in the payload (${#debs[@]}: ${debs[*]##*/})" test "${#debs[@]}" -eq 2
    deb1=${debs[0]:-/missing.deb} deb2=${debs[1]:-/missing.deb}
    v1=$(dpkg-deb -f "$deb1" Version 2>/dev/null) v2=$(dpkg-deb -f "$deb2" Version 2>/dev/null)
    if dpkg --compare-versions "${v1:-0}" gt "${v2:-0}"; then
        d=$deb1 deb1=$deb2 deb2=$d d=$v1 v1=$v2 v2=$d
    fi
    deb_dpkg install-1 -i "$deb1"
    check "dpkg -i ${deb1##*/} exits 0" test "$DEB_RC" = 0
    check "dpkg-query: install ok installed $v1" test "$(deb_status)" = "install ok installed $v1"
    ver=$(/usr/bin/ffrtmp --version 2>&1)
    check "/usr/bin/ffrtmp --version names its kernel object ($ver)" \
        bash -c "[[ '$ver' == *'(kernel object '[0-9a-f]*', '* ]]"
    fp=$(prop "$UNIT" FragmentPath)
    check "systemd loads the package's unit ($fp), nothing shadows it" \
        bash -c "[[ '$fp' == /usr/lib/systemd/system/$UNIT || '$fp' == /lib/systemd/system/$UNIT ]]"
    check "its ExecStart runs /usr/bin/ffrtmp" bash -c "[[ \$(systemctl show -P ExecStart $UNIT) == *'path=/usr/bin/ffrtmp '* ]]"
    check "not enabled ($(systemctl is-enabled "$UNIT" 2>&1))" test "$(systemctl is-enabled "$UNIT" 2>&1)" = disabled
    check "not started ($(prop "$UNIT" ActiveState))" test "$(prop "$UNIT" ActiveState)" = inactive
    check "dpkg's output says so and how to enable it" \
        bash -c "grep -q 'neither enabled nor started' '$OUT/deb-install-1.txt' && grep -q 'systemctl enable --now $UNIT' '$OUT/deb-install-1.txt'"
    check "conffiles: watch-config.yaml and watch.env, the examples" \
        bash -c "[[ \$(dpkg-query -W -f='\${Conffiles}' ffrtmp | awk '{print \$1}' | sort | paste -sd' ') == '$DEB_CONFIG /etc/ffrtmp/watch.env' ]] && cmp -s '$REPO/examples/watch-config.yaml' $DEB_CONFIG"
    check "/var/lib/ffrtmp not made by the package (the unit's StateDirectory= makes it)" test ! -e /var/lib/ffrtmp
    check "docs and man page installed" test -f /usr/share/doc/ffrtmp/copyright -a -f /usr/share/man/man1/ffrtmp.1.gz
    va=$(systemd-analyze verify --man=no /usr/lib/systemd/system/"$UNIT" 2>&1)
    check "systemd-analyze verify of the unit is clean${va:+ ($va)}" bash -c "! grep -q '$UNIT' <<<'$va'"
    note "$v1 installed in ${DEB_SECS}s; Depends: $(dpkg-query -W -f='${Depends}' ffrtmp)"
    end_scenario

    # ---------------------------------------------------------------------------------------
    scenario 21 "systemctl enable --now: the package's daemon governs a real ffmpeg"
    deb_config >"$DEB_CONFIG"
    cfgsum=$(sha256sum "$DEB_CONFIG")
    t0=$(now)
    systemctl enable --now "$UNIT" 2>/dev/null; rc=$?
    secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
    check "systemctl enable --now exits 0 (READY)" test "$rc" = 0
    check "enabled and active" test "$(systemctl is-enabled "$UNIT" 2>&1) $(prop "$UNIT" ActiveState)" = "enabled active"
    main=$(main_pid); scg=$(scope_cg)
    check "MainPID $main runs /usr/bin/ffrtmp ($(deb_exe "$main"))" test "$(deb_exe "$main")" = /usr/bin/ffrtmp
    check "MainPID in $scg/supervisor" test "$(cg_of "$main")" = "$scg/supervisor"
    check "the unit made /var/lib/ffrtmp, mode 750" test "$(stat -c %a /var/lib/ffrtmp 2>/dev/null)" = 750
    ff=$(start_ffmpeg ffrtmp-test-deb1) || fail "ffmpeg did not start"
    ff=${ff:-0}; job=$(job_cg "$ff" ffmpeg)
    check "ffmpeg $ff placed in $job" wait_for 10 deb_placed "$ff" "$job"
    check "cpu.max $((DEB_QUOTA * 1000)) 100000, memory.max $((DEB_MEM_MIB * 1048576))" \
        test "$(cg_file "$job" cpu.max) $(cg_file "$job" memory.max)" = "$((DEB_QUOTA * 1000)) 100000 $((DEB_MEM_MIB * 1048576))"
    check "the state file has it" wait_for 10 grep -q "\"auto-ffmpeg-$ff\"" /var/lib/ffrtmp/watch-state.json
    st=$(/usr/bin/ffrtmp status --json 2>&1)
    check "ffrtmp status --json: $ff alive in $job" \
        test "$(jq -r --argjson p "$ff" '.processes[] | select(.pid == $p) | "\(.alive) \(.cgroup)"' <<<"$st" 2>/dev/null)" = "true $job"
    ino=$(cg_inode "$job")
    note "enable --now ${secs}s; ffmpeg $ff in $job (inode $ino), cpu.max $(cg_file "$job" cpu.max)"
    end_scenario

    # ---------------------------------------------------------------------------------------
    scenario 22 "upgrade (dpkg -i of the newer build): restarted, the ffmpeg re-adopted, not moved"
    check "$v2 sorts after $v1 (dpkg --compare-versions)" dpkg --compare-versions "$v2" gt "$v1"
    old=$(main_pid)
    deb_dpkg upgrade -i "$deb2"
    check "dpkg -i ${deb2##*/} exits 0" test "$DEB_RC" = 0
    check "dpkg-query: install ok installed $v2" test "$(deb_status)" = "install ok installed $v2"
    check "postinst said it restarts the service" deb_said "restarting $UNIT"
    check "active again" wait_for 20 is_active
    new=$(main_pid)
    check "a new main process ($old -> $new), running /usr/bin/ffrtmp" \
        bash -c "[[ $new -gt 0 && $new != $old && \$(readlink /proc/$new/exe) == /usr/bin/ffrtmp ]]"
    check "the old daemon $old exited" bash -c "! kill -0 $old 2>/dev/null"
    check "new daemon in $scg/supervisor" test "$(cg_of "$new")" = "$scg/supervisor"
    check "ffmpeg $ff still in $job, same inode $ino" test "$(cg_of "$ff") $(cg_inode "$job")" = "$job $ino"
    check "exactly one auto-ffmpeg-$ff cgroup" test "$(find_cgroups "auto-ffmpeg-$ff" | wc -l)" = 1
    check "journal: State loaded" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'State loaded from'"
    check "journal: Re-adopted PID $ff" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'Re-adopted PID $ff'"
    check "journal: not attached again" bash -c "! journalctl -q -o cat _PID=$new | grep -q 'Attaching to PID $ff '"
    check "cpu.max unchanged" test "$(cg_file "$job" cpu.max)" = "$((DEB_QUOTA * 1000)) 100000"
    check "the edited config is kept, without a question" test "$(sha256sum "$DEB_CONFIG")" = "$cfgsum"
    check "still enabled" test "$(systemctl is-enabled "$UNIT" 2>&1)" = enabled
    check "the ffmpeg's own unit is still active" test "$(prop ffrtmp-test-deb1.service ActiveState)" = active
    note "dpkg -i $v1 -> $v2 ${DEB_SECS}s; main $old -> $new; inode $ino kept"
    end_scenario

    # ---------------------------------------------------------------------------------------
    scenario 23 "dpkg -r: the daemon stops, the ffmpeg keeps running in its cgroup"
    old=$(main_pid)
    deb_dpkg remove -r ffrtmp
    check "dpkg -r exits 0" test "$DEB_RC" = 0
    check "dpkg-query: deinstall ok config-files $v2" test "$(deb_status)" = "deinstall ok config-files $v2"
    check "the daemon $old exited" wait_for 10 bash -c "! kill -0 $old 2>/dev/null"
    check "the service is not active ($(prop "$UNIT" ActiveState))" bash -c "[[ \$(systemctl show -P ActiveState $UNIT) != active ]]"
    check "ffmpeg $ff still running" alive "$ff"
    check "...in $job, same inode" test "$(cg_of "$ff") $(cg_inode "$job")" = "$job $ino"
    check "...with cpu.max and memory.max as placed" \
        test "$(cg_file "$job" cpu.max) $(cg_file "$job" memory.max)" = "$((DEB_QUOTA * 1000)) 100000 $((DEB_MEM_MIB * 1048576))"
    check "...held to its quota with the package removed" deb_cpu_ok "$job"
    check "$SCOPE stays while it holds the job" test "$(prop "$SCOPE" ActiveState)" = active
    check "/usr/bin/ffrtmp removed" test ! -e /usr/bin/ffrtmp
    check "the unit removed" test ! -e /usr/lib/systemd/system/"$UNIT" -a ! -e /lib/systemd/system/"$UNIT"
    check "conffiles kept (the edited config unchanged, watch.env)" \
        bash -c "[[ \$(sha256sum $DEB_CONFIG) == '$cfgsum' && -f /etc/ffrtmp/watch.env ]]"
    check "the state file kept" test -f /var/lib/ffrtmp/watch-state.json
    note "CPU share with the package removed $DEB_SHARE"
    end_scenario

    # ---------------------------------------------------------------------------------------
    scenario 24 "dpkg -P: /etc/ffrtmp, /var/lib/ffrtmp, /run/ffrtmp removed; the ffmpeg untouched"
    deb_dpkg purge -P ffrtmp
    check "dpkg -P exits 0" test "$DEB_RC" = 0
    check "not installed ($(deb_status))" bash -c "[[ -z '$(deb_status)' || '$(deb_status)' == *not-installed* ]]"
    for d in /etc/ffrtmp /var/lib/ffrtmp /run/ffrtmp; do check "$d removed" test ! -e "$d"; done
    check "the enablement symlink removed" test ! -L "$wants"
    check "ffmpeg $ff still in $job, same inode" test "$(cg_of "$ff") $(cg_inode "$job")" = "$job $ino"
    systemctl stop ffrtmp-test-deb1.service
    check "with the ffmpeg gone, its cgroup and $SCOPE go" wait_for 15 bash -c "[[ ! -d $CG$job ]] && ! systemctl is-active --quiet $SCOPE"
    end_scenario

    # ---------------------------------------------------------------------------------------
    scenario 25 "over an install by install-edge.sh: dpkg -i refuses and says how to remove it"
    # The operator's config first: install-edge.sh keeps an existing one.
    mkdir -p /etc/ffrtmp; deb_config >"$DEB_CONFIG"
    cfgsum=$(sha256sum "$DEB_CONFIG")
    out=$("$install" --enable 2>&1); rc=$?
    echo "$out" >"$OUT/deb-install-edge.txt"
    check "install-edge.sh --enable exits 0" test "$rc" = 0
    main=$(main_pid); scg=$(scope_cg)
    check "its daemon $main runs /usr/local/bin/ffrtmp" test "$(deb_exe "$main")" = /usr/local/bin/ffrtmp
    ff=$(start_ffmpeg ffrtmp-test-deb2) || fail "ffmpeg 2 did not start"
    ff=${ff:-0}; job=$(job_cg "$ff" ffmpeg)
    check "it governs ffmpeg $ff ($job)" wait_for 10 deb_placed "$ff" "$job"
    ino=$(cg_inode "$job")
    deb_dpkg refused -i "$deb1"
    check "dpkg -i fails (exit $DEB_RC)" test "$DEB_RC" != 0
    check "nothing installed ($(deb_status))" bash -c "[[ -z '$(deb_status)' || '$(deb_status)' == *not-installed* ]] && [[ ! -e /usr/bin/ffrtmp ]]"
    for d in /etc/systemd/system/$UNIT /usr/local/bin/ffrtmp /etc/ffrtmp/.installed; do
        check "names $d" deb_said "$d"
    done
    check "says systemd would go on running the old binary" deb_said "systemd would go on running /usr/local/bin/ffrtmp"
    check "gives the command that removes it" deb_said "deployment/install-edge.sh --uninstall"
    check "names the override" deb_said "FFRTMP_DEB_ALLOW_LOCAL_INSTALL=1"
    check "the old daemon still runs (MainPID $main)" test "$(main_pid) $(prop "$UNIT" ActiveState)" = "$main active"
    check "the edited config is untouched" test "$(sha256sum "$DEB_CONFIG")" = "$cfgsum"
    check "ffmpeg $ff untouched (same cgroup, same inode)" test "$(cg_of "$ff") $(cg_inode "$job")" = "$job $ino"
    note "refused in ${DEB_SECS}s: $(grep -m1 'error:' <<<"$DEB_OUT" | sed 's/^ffrtmp: //')"
    end_scenario

    # ---------------------------------------------------------------------------------------
    scenario 26 "migration: install-edge.sh --uninstall, dpkg -i --force-confold, enable --now"
    out=$("$install" --uninstall 2>&1); rc=$?
    echo "$out" >"$OUT/deb-migrate-uninstall.txt"
    check "install-edge.sh --uninstall exits 0 and keeps the edited config" \
        test "$rc $(sha256sum "$DEB_CONFIG" 2>/dev/null)" = "0 $cfgsum"
    check "ffmpeg $ff keeps running in $job" test "$(cg_of "$ff") $(cg_inode "$job")" = "$job $ino"
    deb_dpkg migrate -i --force-confold "$deb2"
    check "dpkg -i --force-confold exits 0" test "$DEB_RC" = 0
    check "nothing reported as left over from install-edge.sh" bash -c "! grep -q 'found an install' '$OUT/deb-migrate.txt'"
    check "the edited config is kept" test "$(sha256sum "$DEB_CONFIG")" = "$cfgsum"
    check "watch.env (removed by --uninstall, unedited) is the package's" cmp -s "$REPO/examples/watch.env" /etc/ffrtmp/watch.env
    systemctl enable --now "$UNIT" 2>/dev/null
    new=$(main_pid)
    check "enabled and active, MainPID $new runs /usr/bin/ffrtmp" \
        test "$(systemctl is-enabled "$UNIT" 2>&1) $(prop "$UNIT" ActiveState) $(deb_exe "$new")" = "enabled active /usr/bin/ffrtmp"
    check "journal: the state install-edge.sh's daemon wrote is loaded" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'State loaded from'"
    check "journal: Re-adopted PID $ff" wait_for 5 bash -c "journalctl -q -o cat _PID=$new | grep -q 'Re-adopted PID $ff'"
    check "ffmpeg $ff in the same cgroup (inode $ino)" test "$(cg_of "$ff") $(cg_inode "$job")" = "$job $ino"
    deb_dpkg cleanup -P ffrtmp
    systemctl stop ffrtmp-test-deb2.service
    check "purged; its cgroup goes with the ffmpeg" wait_for 15 bash -c "[[ ! -e /usr/bin/ffrtmp && ! -d /etc/ffrtmp && ! -d $CG$job ]]"
    note "ffmpeg $ff: install-edge.sh's daemon $main -> the package's $new, same cgroup"
    end_scenario
}

#!/usr/bin/env bash
# The maintainer scripts of the ffrtmp package in a throw-away Debian chroot, without
# systemd and without touching this host's packages or services:
#
#   deployment/debian/chroot-test.sh OLD.deb NEW.deb      (root; NEW must sort after OLD)
#
# e.g. after `cargo xtask deb && cargo xtask deb --version 0.1.0+test2`:
#   deployment/debian/chroot-test.sh target/debian/ffrtmp_0.1.0{,+test2}_amd64.deb
#
# What it proves: the file layout, conffile handling (an edited config survives upgrade,
# removal and a reinstall; purge removes /etc/ffrtmp, /var/lib/ffrtmp, /run/ffrtmp and the
# enablement symlinks), the enabled state across upgrade, remove and reinstall (real
# systemctl, offline in the chroot), which systemctl actions each script asks for when
# systemd runs (a logging systemctl stands in for it), and the refusal over an install by
# install-edge.sh. The service itself runs only in the systemd VM tier
# (xtask/vm/scenarios/systemd/deb.sh).
#
# The chroot is a Debian 12 root with systemd and procps: $FFRTMP_DEB_CHROOT (`cargo xtask
# deb --chroot-test` passes the systemd VM tier's bookworm root, xtask/vm/build-rootfs.sh's
# tree/), else a debootstrap'd bookworm (minbase + systemd + procps, 30 s; packages from
# apt's archive when an earlier run fetched them) made in $FFRTMP_CI_CACHE/deb-chroot
# (default /var/cache/ffrtmp-ci). Each run works on a copy in /var/tmp and removes it; the
# base is never changed. No mounts are made; policy-rc.d forbids every start.
# Exit 0 when every check passed.
set -euo pipefail

[[ $# -eq 2 ]] || { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "chroot-test: must run as root (chroot, dpkg inside it)" >&2; exit 1; }
DEB1=$(realpath "$1") DEB2=$(realpath "$2")
V1=$(dpkg-deb -f "$DEB1" Version) V2=$(dpkg-deb -f "$DEB2" Version)
dpkg --compare-versions "$V2" gt "$V1" || { echo "chroot-test: $V2 does not sort after $V1" >&2; exit 1; }
HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(cd "$HERE/../.." && pwd)
BASE=${FFRTMP_DEB_CHROOT:-${FFRTMP_CI_CACHE:-/var/cache/ffrtmp-ci}/deb-chroot}
UNIT=ffrtmp-watch.service

if [[ ! -x $BASE/usr/bin/systemctl || ! -x $BASE/bin/kill ]]; then
    # A root the caller gave is theirs (the VM tier's tree): never replaced here.
    if [[ -n ${FFRTMP_DEB_CHROOT:-} ]]; then
        echo "chroot-test: FFRTMP_DEB_CHROOT=$BASE has no usr/bin/systemctl or bin/kill: not a Debian 12 root with systemd and procps (rebuild it with xtask/vm/build-rootfs.sh, or unset FFRTMP_DEB_CHROOT for a debootstrap'd one)" >&2
        exit 1
    fi
    echo "chroot-test: debootstrap bookworm into $BASE" >&2
    ARCHIVE=$(eval "$(apt-config shell A Dir::Cache::archives/d)"; echo "${A:-/var/cache/apt/archives/}")
    mkdir -p "$(dirname "$BASE")" "$ARCHIVE"
    rm -rf --one-file-system "$BASE" "$BASE.tmp"
    debootstrap --variant=minbase --include=systemd,procps \
        --cache-dir="${ARCHIVE%/}" bookworm "$BASE.tmp" http://deb.debian.org/debian \
        >"$BASE.debootstrap.log" 2>&1 || { tail -n 20 "$BASE.debootstrap.log" >&2; exit 1; }
    mv "$BASE.tmp" "$BASE"
fi
WORK=$(mktemp -d /var/tmp/ffrtmp-deb-chroot.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
R=$WORK/root
cp -a "$BASE" "$R"
cp "$DEB1" "$R/tmp/old.deb"; cp "$DEB2" "$R/tmp/new.deb"
# The package's files are checked as a default dpkg installs them: a root trimmed for size
# (the VM images exclude /usr/share/man and docs) gets its path-excludes dropped in the copy.
grep -l '^path-exclude' "$R"/etc/dpkg/dpkg.cfg.d/* 2>/dev/null | xargs -r rm -f
printf '#!/bin/sh\nexit 101\n' >"$R/usr/sbin/policy-rc.d"; chmod 755 "$R/usr/sbin/policy-rc.d"

FAILS=0 N=0
ok() { N=$((N + 1)); echo "  ok: $1"; }
bad() { N=$((N + 1)); FAILS=$((FAILS + 1)); echo "  FAILED: $1"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
step() { echo; echo "=== $*"; }
# c CMD...: CMD inside the chroot, with a clean environment and no stdin (like an
# unattended apt run: a conffile prompt would fail rather than wait).
c() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@" </dev/null; }
# dpkg_out ARGS...: dpkg inside the chroot; its output in $OUT (shown indented), status in $RC.
dpkg_out() { RC=0; OUT=$(c dpkg "$@" 2>&1) || RC=$?; awk '{print "    | " $0}' <<<"$OUT"; }
# dpkg_out_env VAR=VALUE ARGS...: the same with a variable in dpkg's environment.
dpkg_out_env() { local e=$1; shift; RC=0; OUT=$(c env "$e" dpkg "$@" 2>&1) || RC=$?; awk '{print "    | " $0}' <<<"$OUT"; }
# shellcheck disable=SC2016  # a dpkg-query format, not a shell expansion
status() { c dpkg-query -W -f='${db:Status-Abbrev}${Version}' ffrtmp 2>/dev/null || true; }
has() { grep -qF -- "$1" <<<"$OUT"; }
hasnt() { ! has "$1"; }
wants=$R/etc/systemd/system/multi-user.target.wants/$UNIT
dsh_state=$R/var/lib/systemd/deb-systemd-helper-enabled/$UNIT.dsh-also

# ------------------------------------------------------------------------------------------
step "install $V1 (no systemd running)"
dpkg_out -i /tmp/old.deb
check "dpkg -i exits 0" test "$RC" = 0
check "installed: $(status)" test "$(status)" = "ii $V1"
check "says it is neither enabled nor started, and how to enable it" \
    bash -c "grep -q 'neither enabled nor started' <<<'$OUT' && grep -q 'systemctl enable --now $UNIT' <<<'$OUT'"
for f in /usr/bin/ffrtmp /usr/lib/systemd/system/$UNIT /etc/ffrtmp/watch-config.yaml /etc/ffrtmp/watch.env \
    /usr/share/doc/ffrtmp/copyright /usr/share/man/man1/ffrtmp.1.gz; do
    check "$f installed" test -f "$R$f"
done
check "conffiles: watch-config.yaml and watch.env" \
    bash -c "[[ \$(chroot '$R' dpkg-query -W -f='\${Conffiles}' ffrtmp | awk '{print \$1}' | sort | paste -sd' ') == '/etc/ffrtmp/watch-config.yaml /etc/ffrtmp/watch.env' ]]"
check "the conffiles are the examples" bash -c "cmp -s '$CHECKOUT/examples/watch-config.yaml' '$R/etc/ffrtmp/watch-config.yaml' && cmp -s '$CHECKOUT/examples/watch.env' '$R/etc/ffrtmp/watch.env'"
ver=$(c /usr/bin/ffrtmp --version 2>&1 || true)
check "/usr/bin/ffrtmp runs in the chroot and names its kernel object ($ver)" \
    bash -c "[[ '$ver' == 'ffrtmp '*'(kernel object '[0-9a-f]*', '* ]]"
check "ExecStart=/usr/bin/ffrtmp in the package's unit" grep -qx 'ExecStart=/usr/bin/ffrtmp watch --config /etc/ffrtmp/watch-config.yaml' "$R/usr/lib/systemd/system/$UNIT"
check "no /usr/local in the package's unit" bash -c "! grep -q /usr/local '$R/usr/lib/systemd/system/$UNIT'"
check "/var/lib/ffrtmp is not created by the package (StateDirectory= does it)" test ! -e "$R/var/lib/ffrtmp"
check "not enabled (systemctl is-enabled: $(c systemctl is-enabled $UNIT 2>&1 || true))" bash -c "[[ \$(chroot '$R' systemctl is-enabled $UNIT 2>&1) == disabled ]]"
check "no enablement symlink" test ! -L "$wants"
va=$(c systemd-analyze verify --man=no /usr/lib/systemd/system/$UNIT 2>&1 | grep -v -e 'Failed to connect' -e 'bus' || true)
check "systemd-analyze verify of the unit: no complaint about it${va:+ ($va)}" bash -c "! grep -q '$UNIT' <<<'$va'"

step "the admin enables it, edits the config; the daemon has written its state"
c systemctl enable $UNIT >/dev/null 2>&1
check "enabled (symlink $(readlink "$wants" || echo none))" test -L "$wants"
echo "# edited by the operator" >>"$R/etc/ffrtmp/watch-config.yaml"
cfgsum=$(sha256sum <"$R/etc/ffrtmp/watch-config.yaml")
mkdir -p "$R/var/lib/ffrtmp" "$R/run/ffrtmp"
echo '{"version": 1, "processes": {}}' >"$R/var/lib/ffrtmp/watch-state.json"
echo x >"$R/run/ffrtmp/cgroup-root"

step "upgrade to $V2"
dpkg_out -i /tmp/new.deb
check "dpkg -i exits 0 without a conffile prompt" test "$RC" = 0
check "installed: $(status)" test "$(status)" = "ii $V2"
check "the edited config is kept" test "$(sha256sum <"$R/etc/ffrtmp/watch-config.yaml")" = "$cfgsum"
check "still enabled" test -L "$wants"
check "the state file is kept" test -f "$R/var/lib/ffrtmp/watch-state.json"
check "no 'installed; ... neither enabled' message on an upgrade" bash -c "! grep -q 'neither enabled' <<<'$OUT'"

step "dpkg -r"
dpkg_out -r ffrtmp
check "dpkg -r exits 0" test "$RC" = 0
check "status config-files ($(status))" test "$(status)" = "rc $V2"
check "/usr/bin/ffrtmp removed" test ! -e "$R/usr/bin/ffrtmp"
check "the unit removed" test ! -e "$R/usr/lib/systemd/system/$UNIT"
check "conffiles kept (the edited one unchanged)" bash -c "[[ -f '$R/etc/ffrtmp/watch.env' && \$(sha256sum <'$R/etc/ffrtmp/watch-config.yaml') == '$cfgsum' ]]"
check "state kept" test -f "$R/var/lib/ffrtmp/watch-state.json"
check "the enabled state is kept for a reinstall (symlink)" test -L "$wants"
check "says what it kept" has "kept /etc/ffrtmp and /var/lib/ffrtmp"

step "reinstall $V2 after the removal"
dpkg_out -i /tmp/new.deb
check "dpkg -i exits 0" test "$RC" = 0
check "enabled again" test -L "$wants"
check "the edited config is still there" test "$(sha256sum <"$R/etc/ffrtmp/watch-config.yaml")" = "$cfgsum"

step "dpkg -P"
echo "leftover" >"$R/etc/ffrtmp/watch-config.yaml.dpkg-old"
dpkg_out -P ffrtmp
check "dpkg -P exits 0" test "$RC" = 0
check "not installed ($(status))" test -z "$(status)"
for d in /etc/ffrtmp /var/lib/ffrtmp /run/ffrtmp; do check "$d removed" test ! -e "$R$d"; done
check "the enablement symlink removed" test ! -L "$wants"
check "deb-systemd-helper's state removed" test ! -e "$dsh_state"

# ------------------------------------------------------------------------------------------
# systemd "running": /run/systemd/system exists and systemctl logs what it is asked.
mv "$R/usr/bin/systemctl" "$R/usr/bin/systemctl.real"
cat >"$R/usr/bin/systemctl" <<'STUB'
#!/bin/sh
# chroot-test stand-in: log, and answer is-active / is-enabled from /tmp/active, /tmp/enabled.
echo "$*" >>/tmp/systemctl.log
case " $* " in
*" is-active "*) [ -e /tmp/active ] ;;
*" is-enabled "*) if [ -e /tmp/enabled ]; then echo enabled; else echo disabled; exit 1; fi ;;
*) exit 0 ;;
esac
STUB
chmod 755 "$R/usr/bin/systemctl"
mkdir -p "$R/run/systemd/system"
rm -f "$R/usr/sbin/policy-rc.d"
calls() { grep -v -e ' is-active ' -e ' is-enabled ' -e '^is-' "$R/tmp/systemctl.log" 2>/dev/null | paste -sd';' - || true; }
reset_log() { : >"$R/tmp/systemctl.log"; }

step "with systemd running: install $V1"
reset_log; rm -f "$R/tmp/active" "$R/tmp/enabled"
dpkg_out -i /tmp/old.deb
check "exits 0" test "$RC" = 0
check "systemctl calls: only daemon-reload ($(calls))" test "$(calls)" = "--system daemon-reload"

step "with systemd running: upgrade to $V2 while the service runs"
reset_log; touch "$R/tmp/active" "$R/tmp/enabled"
dpkg_out -i /tmp/new.deb
check "exits 0" test "$RC" = 0
check "daemon-reload, then try-restart of the unit ($(calls))" test "$(calls)" = "--system daemon-reload;try-restart $UNIT"
check "says it restarts it" has "restarting $UNIT"

step "with systemd running: reinstall of $V2 while stopped but enabled"
reset_log; rm -f "$R/tmp/active"
dpkg_out -i /tmp/new.deb
check "no start or restart ($(calls))" test "$(calls)" = "--system daemon-reload"
check "says it is enabled but not running" has "enabled but not running"

step "with systemd running: dpkg -r while it runs"
reset_log; touch "$R/tmp/active"
dpkg_out -r ffrtmp
check "exits 0" test "$RC" = 0
check "stop, then daemon-reload ($(calls))" test "$(calls)" = "stop $UNIT;--system daemon-reload"
check "says governed processes keep running" has "governed processes keep running"
reset_log
dpkg_out -P ffrtmp
check "purge: no systemctl action ($(calls))" test -z "$(calls)"

step "with systemd running, no init-system-helpers: upgrade while running, remove (systemctl fallback)"
mkdir -p "$WORK/dsh"; mv "$R/usr/bin/deb-systemd-invoke" "$R/usr/bin/deb-systemd-helper" "$WORK/dsh/"
dpkg_out -i /tmp/old.deb
reset_log; touch "$R/tmp/active"
dpkg_out -i /tmp/new.deb
check "upgrade: daemon-reload, try-restart ($(calls))" test "$(calls)" = "--system daemon-reload;try-restart $UNIT"
reset_log
dpkg_out -r ffrtmp
check "remove: stop, daemon-reload ($(calls))" test "$(calls)" = "stop $UNIT;--system daemon-reload"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -s /usr/lib/systemd/system/$UNIT "$wants"
dpkg_out -P ffrtmp
check "purge removes the enablement symlink without deb-systemd-helper" test ! -L "$wants"
mv "$WORK/dsh/"* "$R/usr/bin/"

# ------------------------------------------------------------------------------------------
step "over an install by install-edge.sh: refused, nothing changed"
mkdir -p "$R/usr/local/bin" "$R/etc/ffrtmp" "$R/usr/local/share/doc/ffrtmp"
cp "$R/usr/bin/true" "$R/usr/local/bin/ffrtmp"
cp "$CHECKOUT/deployment/systemd/$UNIT" "$R/etc/systemd/system/$UNIT"
mkdir -p "$R/etc/systemd/system/$UNIT.d"
printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/ffrtmp watch --config /etc/ffrtmp/watch-config.yaml --fallback-scan\n' \
    >"$R/etc/systemd/system/$UNIT.d/fallback-scan.conf"
{ cat "$CHECKOUT/examples/watch-config.yaml"; echo "# edited by the operator"; } >"$R/etc/ffrtmp/watch-config.yaml"
echo "0000  /usr/local/bin/ffrtmp" >"$R/etc/ffrtmp/.installed"
cfgsum=$(sha256sum <"$R/etc/ffrtmp/watch-config.yaml")
reset_log
dpkg_out -i /tmp/old.deb
check "dpkg -i fails" test "$RC" != 0
# shellcheck disable=SC2016  # a dpkg-query format
st=$(c dpkg-query -W -f='${db:Status-Status}' ffrtmp 2>/dev/null || echo unknown)
check "not installed (dpkg-query: ${st:-no record})" bash -c "[[ '$st' == not-installed || '$st' == unknown ]]"
check "/usr/bin/ffrtmp not unpacked" test ! -e "$R/usr/bin/ffrtmp"
for f in /etc/systemd/system/$UNIT /etc/systemd/system/$UNIT.d/fallback-scan.conf /usr/local/bin/ffrtmp /etc/ffrtmp/.installed; do
    check "names $f" has "$f"
done
check "says systemd would run the old binary" has "systemd would go on running /usr/local/bin/ffrtmp"
check "gives the removal command (install-edge.sh --uninstall)" has "deployment/install-edge.sh --uninstall"
check "gives the by-hand removal" has "rm -f /etc/systemd/system/$UNIT /etc/systemd/system/$UNIT.d/fallback-scan.conf /usr/local/bin/ffrtmp /etc/ffrtmp/.installed"
check "names the override" has "FFRTMP_DEB_ALLOW_LOCAL_INSTALL=1"
check "the old install is untouched (config, manifest, unit)" \
    bash -c "[[ \$(sha256sum <'$R/etc/ffrtmp/watch-config.yaml') == '$cfgsum' && -f '$R/etc/ffrtmp/.installed' && -f '$R/etc/systemd/system/$UNIT' ]]"
check "no systemctl action ($(calls))" test -z "$(calls)"
echo "$OUT" >"$WORK/refusal.txt"

step "over an install by install-edge.sh with FFRTMP_DEB_ALLOW_LOCAL_INSTALL=1 --force-confold"
dpkg_out_env FFRTMP_DEB_ALLOW_LOCAL_INSTALL=1 -i --force-confold /tmp/old.deb
check "exits 0" test "$RC" = 0
check "warns that the unit runs /usr/local/bin/ffrtmp" has "WARNING: ffrtmp-watch.service runs /usr/local/bin/ffrtmp"
check "the edited config is kept (--force-confold)" test "$(sha256sum <"$R/etc/ffrtmp/watch-config.yaml")" = "$cfgsum"
check "the package's version of it is beside it" test -f "$R/etc/ffrtmp/watch-config.yaml.dpkg-dist"
reset_log; touch "$R/tmp/active"
dpkg_out_env FFRTMP_DEB_ALLOW_LOCAL_INSTALL=1 -i /tmp/new.deb
check "upgrade: no restart of the old daemon ($(calls))" test "$(calls)" = "--system daemon-reload"
reset_log
dpkg_out -r ffrtmp
check "remove: the old install's daemon is not stopped ($(calls))" test "$(calls)" = "--system daemon-reload"
check "...and says why" has "not stopping $UNIT"
dpkg_out -P ffrtmp
check "purge keeps /etc/ffrtmp for the old install (its .installed)" test -f "$R/etc/ffrtmp/.installed"
# dpkg deletes a package's conffiles on purge, edited or not, before postrm runs: with the
# override, the old install's watch-config.yaml was the package's.
note_cfg=$([[ -e $R/etc/ffrtmp/watch-config.yaml ]] && echo kept || echo "deleted by dpkg (a conffile of the package)")
echo "    (its watch-config.yaml: $note_cfg)"
check "...and says so" has "kept /etc/ffrtmp and /var/lib/ffrtmp"

step "only /usr/local/bin/ffrtmp left: installs, with a warning"
rm -rf "$R/etc/systemd/system/$UNIT" "$R/etc/systemd/system/$UNIT.d" "$R/etc/ffrtmp"
dpkg_out -i /tmp/old.deb
check "exits 0" test "$RC" = 0
check "names /usr/local/bin/ffrtmp and that it comes first on PATH" has "/usr/local/bin comes before /usr/bin on PATH"
check "gives the by-hand removal (rm -f /usr/local/bin/ffrtmp)" has "rm -f /usr/local/bin/ffrtmp"
dpkg_out -P ffrtmp
rm -f "$R/usr/local/bin/ffrtmp"

step "an upgrade over a unit that install-edge.sh wrote after the package: refused, $V1 stays"
dpkg_out -i /tmp/old.deb
cp "$CHECKOUT/deployment/systemd/$UNIT" "$R/etc/systemd/system/$UNIT"
reset_log; touch "$R/tmp/active"
dpkg_out -i /tmp/new.deb
check "dpkg -i fails" test "$RC" != 0
check "$V1 is still installed and configured ($(status))" test "$(status)" = "ii $V1"
check "advises the removal by hand" has "remove it by hand (not with install-edge.sh --uninstall now"
check "...not install-edge.sh --uninstall" hasnt "ffrtmp:   deployment/install-edge.sh --uninstall"
rm -f "$R/etc/systemd/system/$UNIT"
dpkg_out -P ffrtmp

step "an edited config left by install-edge.sh --uninstall, then dpkg -i without a terminal"
mkdir -p "$R/etc/ffrtmp"
{ cat "$CHECKOUT/examples/watch-config.yaml"; echo "# edited by the operator"; } >"$R/etc/ffrtmp/watch-config.yaml"
dpkg_out -i /tmp/old.deb
PROMPT_RC=$RC
check "dpkg -i with no answer to the conffile question: exit $RC, config $(cmp -s "$CHECKOUT/examples/watch-config.yaml" "$R/etc/ffrtmp/watch-config.yaml" && echo replaced || echo kept)" \
    bash -c "! cmp -s '$CHECKOUT/examples/watch-config.yaml' '$R/etc/ffrtmp/watch-config.yaml'"
echo "    (without --force-confold: dpkg -i exit $PROMPT_RC; $(grep -m1 -o 'end of file on stdin at conffile prompt\|Configuration file .*' <<<"$OUT" || echo no prompt))"
[[ $PROMPT_RC == 0 ]] || dpkg_out -i --force-confold /tmp/old.deb
check "with --force-confold: installed, the edited config kept" \
    bash -c "[[ '$(status)' == 'ii $V1' ]] && grep -q 'edited by the operator' '$R/etc/ffrtmp/watch-config.yaml'"

echo
if [[ $FAILS -eq 0 ]]; then
    echo "chroot-test: all $N checks passed ($V1 -> $V2)"
else
    echo "chroot-test: $FAILS of $N checks FAILED"
    exit 1
fi

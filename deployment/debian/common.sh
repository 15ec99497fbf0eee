# The code the maintainer scripts share: starting and stopping the unit, and what an install
# by deployment/install-edge.sh left on this node. Not a maintainer script itself: `cargo
# xtask deb` inserts this file at the line "#FFRTMP_COMMON#" of preinst, postinst, prerm and
# postrm (as debhelper inserts its snippets), so that all report the same findings in the
# same words.
# shellcheck shell=sh

UNIT=ffrtmp-watch.service

# systemd is the running init (and dpkg is not installing into another root).
ffrtmp_systemd_running() { [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; }

# ffrtmp_invoke ACTION: systemctl ACTION of the unit, through deb-systemd-invoke (which asks
# policy-rc.d first) as debhelper's snippets do; systemctl itself only where
# init-system-helpers is not installed.
ffrtmp_invoke() {
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke "$1" "$UNIT"
	else
		systemctl "$1" "$UNIT"
	fi
}

ffrtmp_say() { printf 'ffrtmp: %s\n' "$*"; }
ffrtmp_warn() { printf 'ffrtmp: %s\n' "$*" >&2; }

# ffrtmp_note TEXT: one finding (a line of $ffrtmp_found); ffrtmp_rm PATH: a file the manual
# removal command must delete.
ffrtmp_note() {
	ffrtmp_found="$ffrtmp_found$1
"
}
ffrtmp_rm() { ffrtmp_rmlist="${ffrtmp_rmlist:+$ffrtmp_rmlist }$1"; }

# ffrtmp_find_local_install: sets
#   ffrtmp_found   the files of an install-edge.sh install, one explained line each ("" if none)
#   ffrtmp_shadow  1 if systemd would run /usr/local/bin/ffrtmp instead of this package's
#                  /usr/bin/ffrtmp: a unit file in /etc/systemd/system (it takes precedence
#                  over /usr/lib/systemd/system) or a drop-in whose ExecStart= names it
#   ffrtmp_shadow_by  the file that does it
#   ffrtmp_rmlist  the files a removal by hand deletes
ffrtmp_find_local_install() {
	ffrtmp_found=
	ffrtmp_shadow=0
	ffrtmp_shadow_by=
	ffrtmp_rmlist=
	_root=${DPKG_ROOT:-}
	_unit=$_root/etc/systemd/system/ffrtmp-watch.service
	if [ -L "$_unit" ] && [ "$(readlink "$_unit")" = /dev/null ]; then
		ffrtmp_note "$_unit -> /dev/null: the unit is masked, systemd will not start it (systemctl unmask ffrtmp-watch.service)"
	elif [ -e "$_unit" ] || [ -L "$_unit" ]; then
		_exec=$(sed -n 's/^ExecStart=//p' "$_unit" 2>/dev/null | tail -n 1)
		ffrtmp_note "$_unit: a unit file in /etc/systemd/system, which takes precedence over this package's /usr/lib/systemd/system/ffrtmp-watch.service; it runs ${_exec:-(no ExecStart= found)}"
		ffrtmp_rm "$_unit"
		ffrtmp_shadow=1
		ffrtmp_shadow_by=$_unit
	fi
	for _dropin in "$_root"/etc/systemd/system/ffrtmp-watch.service.d/*.conf; do
		[ -f "$_dropin" ] || continue
		if grep -q '^ExecStart=.*/usr/local/bin/ffrtmp' "$_dropin"; then
			ffrtmp_note "$_dropin: a drop-in whose ExecStart= runs /usr/local/bin/ffrtmp (install-edge.sh --fallback-scan writes it)"
			ffrtmp_rm "$_dropin"
			ffrtmp_shadow=1
			ffrtmp_shadow_by=${ffrtmp_shadow_by:-$_dropin}
		fi
	done
	if [ -e "$_root/usr/local/bin/ffrtmp" ]; then
		ffrtmp_note "$_root/usr/local/bin/ffrtmp: the binary of that install; /usr/local/bin comes before /usr/bin on PATH, so 'ffrtmp' in a shell runs it, not this package's /usr/bin/ffrtmp"
		ffrtmp_rm "$_root/usr/local/bin/ffrtmp"
	fi
	if [ -f "$_root/etc/ffrtmp/.installed" ]; then
		ffrtmp_note "$_root/etc/ffrtmp/.installed: install-edge.sh's record of its files; an 'install-edge.sh --uninstall' run after this package is installed would delete the config files in /etc/ffrtmp that this package owns, if unedited"
		ffrtmp_rm "$_root/etc/ffrtmp/.installed"
	fi
	if [ -f "$_root/usr/local/share/doc/ffrtmp/deployment.md" ]; then
		ffrtmp_note "$_root/usr/local/share/doc/ffrtmp/deployment.md: that install's copy of the documentation"
		ffrtmp_rm "$_root/usr/local/share/doc/ffrtmp/deployment.md"
	fi
	if [ -f "$_root/etc/systemd/system/ffrtmp-cgroup-favordynmods.service" ]; then
		ffrtmp_note "$_root/etc/systemd/system/ffrtmp-cgroup-favordynmods.service: install-edge.sh --favordynmods (works with this package too; install-edge.sh --uninstall removes it)"
	fi
	return 0
}

# ffrtmp_report_local_install before|installed|list: print the findings and how to remove
# that install: "before" the package was ever installed (preinst of a first install), or
# with the package "installed" (or its conffiles left by a removal), when install-edge.sh
# --uninstall is no longer the way: it would stop and disable the package's service and
# delete the conffiles dpkg owns, where unedited (and dpkg does not bring back a conffile
# the admin deleted); "list": only the findings.
ffrtmp_report_local_install() {
	ffrtmp_warn "found an install of ffrtmp outside this package (deployment/install-edge.sh) on this node:"
	printf '%s' "$ffrtmp_found" | while IFS= read -r _line; do ffrtmp_warn "  $_line"; done
	if [ -z "$ffrtmp_rmlist" ] || [ "$1" = list ]; then
		return 0
	fi
	if [ "$1" = before ]; then
		ffrtmp_warn "remove it first, from the checkout it was installed from (edited config files and the state in"
		ffrtmp_warn "/var/lib/ffrtmp are kept; governed processes keep running and this package's daemon re-adopts them):"
		ffrtmp_warn "  deployment/install-edge.sh --uninstall"
		if [ "$ffrtmp_shadow" = 1 ]; then
			ffrtmp_warn "or by hand: systemctl disable --now ffrtmp-watch.service && rm -f $ffrtmp_rmlist && systemctl daemon-reload"
		else
			ffrtmp_warn "or by hand: rm -f $ffrtmp_rmlist"
		fi
	elif [ "$ffrtmp_shadow" = 1 ]; then
		ffrtmp_warn "remove it by hand (not with install-edge.sh --uninstall now: it would also delete config files this package"
		ffrtmp_warn "owns); governed processes keep running and this package's daemon re-adopts them:"
		ffrtmp_warn "  systemctl disable ffrtmp-watch.service && rm -f $ffrtmp_rmlist && systemctl daemon-reload"
		ffrtmp_warn "  systemctl enable ffrtmp-watch.service && systemctl restart ffrtmp-watch.service"
	else
		ffrtmp_warn "remove it by hand (not with install-edge.sh --uninstall now: it would stop and disable this package's"
		ffrtmp_warn "service and delete config files this package owns): rm -f $ffrtmp_rmlist"
	fi
}

#!/usr/bin/env bash
# Offline checks of the fleet deployment files (issue 10, "Prometheus and Grafana" and
# "Kubernetes"):
#
#   deployment/prometheus/   promtool check rules, promtool test rules, promtool check config,
#                            every alert tested firing and not firing, every recording rule
#                            tested, every runbook link has its section in docs/fleet.md
#   deployment/grafana/      the dashboard is JSON, its panels use the datasource variable,
#                            its recording rules exist
#   deployment/kubernetes/   kubernetes-validate --strict against bundled Kubernetes schemas
#                            (no network); the ServiceMonitor's fields and its match with the Service
#   both                     every ffrtmp_* metric the rules and the dashboard use is in
#                            one of the METRICS files (below)
#
# Usage: xtask/checks/fleet.sh METRICS [METRICS...]
#   Each METRICS file is either a saved /metrics of a live daemon (recognised by its
#   `# TYPE` lines; it is also linted with `promtool check metrics`) or a list of metric
#   family names, one a line (`#` comments allowed), e.g.
#   deployment/prometheus/metric-families.txt. The families of all files count together:
#   a daemon shows ffrtmp_jobs only with job_metrics: per_command and the ffrtmp_kernel_*
#   counters only with its eBPF source, so pass the /metrics of a per_job and of a
#   per_command daemon. Histogram families stand for their _bucket, _sum and _count.
#
# Needs root the first time (apt, /var/cache): it fetches promtool from Debian's
# `prometheus` package without installing it (apt-get download into apt's archive of
# downloaded .debs + dpkg-deb -x: no server, no user, no unit) and kubernetes-validate from
# PyPI into a venv (pip's wheel cache keeps the downloads), both made under
# $FFRTMP_CI_CACHE (default /var/cache/ffrtmp-ci). A second run reuses that and makes no
# network access; an empty $FFRTMP_CI_CACHE (CI's) is made again from the two package
# managers' caches. Optional: FFRTMP_BIN=path/to/ffrtmp also runs `ffrtmp config check`
# on the watch config inside the Kubernetes ConfigMap.
# Exit status: 0 all checks passed, 1 a check failed, 2 usage or setup error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${FFRTMP_CI_CACHE:-/var/cache/ffrtmp-ci}
# The kubernetes-validate release (and so the schema set) is pinned; it bundles the schemas
# of Kubernetes 1.25 to 1.37. The manifests are checked against the oldest version they
# support (1.30: securityContext.appArmorProfile) and the newest one bundled.
KV_VERSION=1.37.0
K8S_VERSIONS=(1.30.0 1.37.0)
# Its dependencies, as tested (pip installs exactly these; bump them together).
KV_DEPS=(attrs==26.1.0 importlib_resources==7.1.0 jsonschema==4.26.0
    jsonschema-specifications==2025.9.1 packaging==26.4 PyYAML==6.0.4 referencing==0.37.0
    rpds-py==2026.9.1 typing_extensions==4.16.0)

PROM=$ROOT/deployment/prometheus
GRAFANA=$ROOT/deployment/grafana
K8S=$ROOT/deployment/kubernetes

say() { printf 'fleet: %s\n' "$*"; }
die() { printf 'fleet: FAILED: %s\n' "$*" >&2; exit 1; }
setup_die() { printf 'fleet: setup error: %s\n' "$*" >&2; exit 2; }

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
METRICS=("$@")
for m in "${METRICS[@]}"; do
    [[ -r $m ]] || setup_die "cannot read the metrics file $m"
done

mkdir -p "$CACHE" || setup_die "cannot create $CACHE (run as root, or set FFRTMP_CI_CACHE)"

# --- promtool, from Debian's prometheus package, never installed -------------------------
APT_OPTS=(-o DPkg::Lock::Timeout=600 -q)
PROMTOOL=""
# prometheus_deb: the candidate prometheus package in apt's archive of downloaded .debs (the
# one cache kept across runs, by content): taken from there when an earlier run fetched it
# (same SHA256 as the lists say), else downloaded into it. Prints its path.
prometheus_deb() {
    local A= ver sum file tmp f
    eval "$(apt-config shell A Dir::Cache::archives/d)"
    A=${A:-/var/cache/apt/archives/}; A=${A%/}
    ver=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n $ver && $ver != "(none)" ]] || return 1
    sum=$(apt-cache show "prometheus=$ver" 2>/dev/null | awk '/^SHA256:/ {print $2; exit}')
    file=$(apt-cache show "prometheus=$ver" 2>/dev/null | awk '/^Filename:/ {print $2; exit}')
    [[ -n $sum && -n $file ]] || return 1
    file=$A/${file##*/}
    if [[ -f $file ]] && sha256sum "$file" | grep -q "^$sum "; then
        say "prometheus $ver: from apt's archive" >&2
        echo "$file"; return 0
    fi
    mkdir -p "$A"
    tmp=$(mktemp -d "$A/.ffrtmp-fetch.XXXXXX")
    # As root apt-get downloads unsandboxed (the _apt user cannot write here).
    (cd "$tmp" && apt-get "${APT_OPTS[@]}" -o APT::Sandbox::User=root download "prometheus=$ver" >&2) \
        || { rm -rf "$tmp"; return 1; }
    f=$(find "$tmp" -maxdepth 1 -name 'prometheus_*.deb' | head -n1)
    [[ -n $f ]] && sha256sum "$f" | grep -q "^$sum " \
        || { rm -rf "$tmp"; setup_die "the downloaded prometheus package does not match the lists' SHA256"; }
    mv -f "$f" "$file"; rm -rf "$tmp"
    echo "$file"
}
install_promtool() {
    local dir=$CACHE/prometheus stamp=$CACHE/prometheus/extracted
    if [[ -f $stamp && -x $dir/root/usr/bin/promtool ]] \
        && "$dir/root/usr/bin/promtool" --version >/dev/null 2>&1; then
        PROMTOOL=$dir/root/usr/bin/promtool
        say "promtool: cached ($(cat "$stamp"))"
        return
    fi
    local deb
    deb=$(prometheus_deb) || {
        say "prometheus is not in apt's lists; running apt-get update"
        apt-get "${APT_OPTS[@]}" update >/dev/null || setup_die "apt-get update failed"
        deb=$(prometheus_deb) || setup_die "apt-get download prometheus failed after apt-get update"
    }
    rm -rf "$dir/root.new" && mkdir -p "$dir/root.new"
    dpkg-deb -x "$deb" "$dir/root.new" || setup_die "dpkg-deb -x $deb failed"
    [[ -x $dir/root.new/usr/bin/promtool ]] || setup_die "$deb has no usr/bin/promtool"
    rm -rf "$dir/root" && mv "$dir/root.new" "$dir/root"
    basename "$deb" >"$stamp"
    PROMTOOL=$dir/root/usr/bin/promtool
    say "promtool: extracted from $(basename "$deb")"
}

# --- kubernetes-validate, from PyPI, in a venv -------------------------------------------
VENV=$CACHE/venv
PY=""
install_kubernetes_validate() {
    if [[ -x $VENV/bin/kubernetes-validate ]] \
        && [[ $("$VENV/bin/kubernetes-validate" --version 2>/dev/null) == *"$KV_VERSION"* ]] \
        && [[ -f $VENV/.ffrtmp-deps && $(cat "$VENV/.ffrtmp-deps") == "${KV_DEPS[*]}" ]] \
        && "$VENV/bin/python" -c 'import yaml, jsonschema' 2>/dev/null; then
        PY=$VENV/bin/python
        say "kubernetes-validate: cached venv $VENV"
        return
    fi
    local python
    python=$(command -v python3) || setup_die "python3 not found"
    rm -rf "$VENV"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
        say "python3 -m venv failed; installing python3-venv"
        rm -rf "$VENV"
        { apt-get "${APT_OPTS[@]}" install -y python3-venv >/dev/null \
            || { apt-get "${APT_OPTS[@]}" update >/dev/null \
                 && apt-get "${APT_OPTS[@]}" install -y python3-venv >/dev/null; }; } \
            || setup_die "cannot install python3-venv"
        python=/usr/bin/python3
        "$python" -m venv "$VENV" || setup_die "$python -m venv $VENV failed"
    fi
    # A failed install leaves no venv behind, so the next run starts again.
    "$VENV/bin/pip" install --disable-pip-version-check -q "kubernetes-validate==$KV_VERSION" "${KV_DEPS[@]}" \
        || { rm -rf "$VENV"; setup_die "pip install kubernetes-validate==$KV_VERSION failed"; }
    "$VENV/bin/kubernetes-validate" --version >/dev/null \
        || { rm -rf "$VENV"; setup_die "kubernetes-validate does not run from $VENV"; }
    printf '%s' "${KV_DEPS[*]}" >"$VENV/.ffrtmp-deps"
    PY=$VENV/bin/python
    say "kubernetes-validate: installed $KV_VERSION into $VENV"
}

install_promtool
install_kubernetes_validate

say "tools: $("$PROMTOOL" --version 2>&1 | head -n1)"
say "tools: kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -n1), schemas for Kubernetes $("$PY" -c 'from kubernetes_validate.utils import all_versions as a; v=a(); print(v[0], "to", v[-1])')"
say "tools: $("$PY" --version), jsonschema $("$PY" -c 'import importlib.metadata as m; print(m.version("jsonschema"))'), PyYAML $("$PY" -c 'import yaml; print(yaml.__version__)')"

FAILED=()
check() { # check NAME CMD...: run, print its output on failure, record the failure
    local name=$1; shift
    local out
    if out=$("$@" 2>&1); then
        say "ok      $name"
        [[ -n ${FLEET_VERBOSE:-} && -n $out ]] && printf '%s\n' "$out" | sed 's/^/        /'
    else
        say "FAILED  $name"
        printf '%s\n' "$out" | sed 's/^/        /'
        FAILED+=("$name")
    fi
    return 0
}

# --- Prometheus ---------------------------------------------------------------------------
check "promtool check rules deployment/prometheus/ffrtmp-rules.yml" \
    "$PROMTOOL" check rules "$PROM/ffrtmp-rules.yml"
check "promtool test rules deployment/prometheus/ffrtmp-rules.test.yml" \
    bash -c 'cd "$1" && "$2" test rules ffrtmp-rules.test.yml' _ "$PROM" "$PROMTOOL"
check "promtool check config deployment/prometheus/prometheus.example.yml" \
    bash -c 'cd "$1" && "$2" check config prometheus.example.yml' _ "$PROM" "$PROMTOOL"

for m in "${METRICS[@]}"; do
    if grep -q '^# TYPE ' "$m"; then
        # promtool check metrics lints (naming, HELP, units); non-zero on any finding.
        check "promtool check metrics < $m" bash -c '"$1" check metrics <"$2"' _ "$PROMTOOL" "$m"
    fi
done

# The rest: one Python program over the YAML and JSON (PyYAML and jsonschema from the venv).
pycheck() { check "$1" "$PY" - "$ROOT" "$2" "${METRICS[@]}" <<<"$PYPROG"; }
read -r -d '' PYPROG <<'PYEOF' || true
import json, re, sys, pathlib, yaml

root, what, metrics_files = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
prom, graf, k8s = root / "deployment/prometheus", root / "deployment/grafana", root / "deployment/kubernetes"
errors, summary = [], ""
def err(msg): errors.append(msg)

rules = yaml.safe_load((prom / "ffrtmp-rules.yml").read_text())
alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
records = {r["record"]: r for g in rules["groups"] for r in g["rules"] if "record" in r}

def walk(node, key_filter):
    if isinstance(node, dict):
        for k, v in node.items():
            if key_filter(k) and isinstance(v, str):
                yield v
            else:
                yield from walk(v, key_filter)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, key_filter)

def dashboard_exprs(d):
    # PromQL lives in targets[].expr and in query variables' query / definition.
    yield from walk(d.get("panels", []), lambda k: k == "expr")
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            yield from ([q] if isinstance(q, str) else walk(q, lambda k: k == "query"))
            if isinstance(v.get("definition"), str):
                yield v["definition"]

def names_in(expr):
    # Identifiers outside string literals, without those of Grafana's $variables.
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r'\$\{?\w+(?::\w+)?\}?', ' ', expr)
    return set(re.findall(r'(?<![\w:.])[a-zA-Z_:][\w:]*', expr))

if what == "tests":
    # Every alert has a firing and a not-firing case; every recording rule a promql_expr_test.
    tests = yaml.safe_load((prom / "ffrtmp-rules.test.yml").read_text())
    firing, quiet, tested_records = set(), set(), set()
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []) or []:
            (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
        for p in t.get("promql_expr_test", []) or []:
            tested_records |= names_in(p["expr"]) & set(records)
    for a in sorted(alerts):
        if a not in firing: err(f"alert {a} has no firing test case (alert_rule_test with exp_alerts)")
        if a not in quiet: err(f"alert {a} has no not-firing test case (alert_rule_test with exp_alerts: [])")
    for r in sorted(set(records) - tested_records):
        err(f"recording rule {r} has no promql_expr_test")
    for a in sorted((firing | quiet) - set(alerts)):
        err(f"the tests name an alert {a} the rules do not have")
    summary = f"{len(alerts)} alerts tested firing and not firing, {len(records)} recording rules tested"

elif what == "annotations":
    doc = (root / "docs/fleet.md").read_text()
    def anchor(h):  # GitHub's heading anchors
        return re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-')
    anchors = {anchor(m.group(1)) for m in re.finditer(r'^#+\s+(.*)$', doc, re.M)}
    for name, r in sorted(alerts.items()):
        sev = r.get("labels", {}).get("severity")
        if sev not in ("critical", "warning", "info"): err(f"{name}: severity {sev!r}")
        ann = r.get("annotations", {})
        for k in ("summary", "description", "runbook_url"):
            if not ann.get(k): err(f"{name}: no {k} annotation")
        url = ann.get("runbook_url", "")
        m = re.fullmatch(r'docs/fleet\.md#([\w-]+)', url)
        if not m: err(f"{name}: runbook_url {url!r} is not docs/fleet.md#<anchor>")
        elif m.group(1) not in anchors: err(f"{name}: docs/fleet.md has no section #{m.group(1)}")
        elif m.group(1) != name.lower(): err(f"{name}: runbook anchor #{m.group(1)} is not #{name.lower()}")
    summary = f"{len(alerts)} alerts have severity, summary, description and a runbook section in docs/fleet.md"

elif what == "dashboard":
    path = graf / "ffrtmp-fleet.json"
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        print(f"{path}: not JSON: {e}"); sys.exit(1)
    vars_ = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    for v in ("datasource", "instance", "command"):
        if v not in vars_: err(f"dashboard: no template variable ${v}")
    if vars_.get("datasource", {}).get("type") != "datasource": err("dashboard: $datasource is not a datasource variable")
    if not 36 <= d.get("schemaVersion", 0) <= 41: err(f"dashboard: schemaVersion {d.get('schemaVersion')}")
    if not d.get("uid"): err("dashboard: no uid")
    ids, panels = set(), []
    def collect(ps):
        for p in ps:
            panels.append(p)
            collect(p.get("panels", []))
    collect(d.get("panels", []))
    for p in panels:
        if p.get("id") in ids: err(f"dashboard: duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") == "row": continue
        for k in ("title", "gridPos", "type"):
            if k not in p: err(f"dashboard: panel {p.get('id')} has no {k}")
        ds = p.get("datasource", {})
        if ds.get("uid") != "${datasource}": err(f"dashboard: panel {p.get('title')!r} does not use ${{datasource}}")
        if not p.get("targets"): err(f"dashboard: panel {p.get('title')!r} has no query")
        for t in p.get("targets", []):
            if not t.get("expr"): err(f"dashboard: panel {p.get('title')!r} has a target without expr")
            if t.get("datasource", {}).get("uid", "${datasource}") != "${datasource}":
                err(f"dashboard: panel {p.get('title')!r} target does not use ${{datasource}}")
    for e in dashboard_exprs(d):
        for n in names_in(e):
            if ":" in n and n not in records:
                err(f"dashboard: uses recording rule {n}, which ffrtmp-rules.yml does not define")
    summary = f"{len(panels)} panels, variables {', '.join(vars_)}"

elif what == "dashboard-promql":
    # The panels' PromQL, with Grafana's variables replaced by values, as recording rules
    # in a file for `promtool check rules` (which parses every expression). Written to
    # the path given after the metrics files.
    d = json.loads((graf / "ffrtmp-fleet.json").read_text())
    subst = {"__rate_interval": "2m", "__interval": "1m", "__range": "6h", "instance": ".*", "command": ".*", "job": "ffrtmp"}
    def fill(e):
        return re.sub(r'\$\{?(\w+)\}?', lambda m: subst.get(m.group(1), m.group(0)), e)
    exprs = [fill(e) for e in walk(d.get("panels", []), lambda k: k == "expr")]
    left = [e for e in exprs if "$" in e]
    if left: err(f"dashboard: unknown variables in {left}")
    out = pathlib.Path(metrics_files.pop())
    out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}))
    summary = f"{len(exprs)} panel queries written to {out}"

elif what == "metrics":
    families, sources = set(), []
    for f in metrics_files:
        text = pathlib.Path(f).read_text()
        if re.search(r'^# TYPE ', text, re.M):
            families |= set(re.findall(r'^# TYPE (\S+) \S+', text, re.M))
            sources.append(f"the # TYPE lines of {f}")
        else:
            families |= {l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")}
            sources.append(f)
    source = " + ".join(sources)
    def known(n):
        if n in families: return True
        base = re.sub(r'_(bucket|sum|count)$', '', n)
        return base != n and base in families
    used = {}  # metric name -> where
    for name, r in list(alerts.items()) + list(records.items()):
        for n in names_in(r["expr"]):
            if n.startswith("ffrtmp_"): used.setdefault(n, set()).add(f"rule {name}")
    dash = json.loads((graf / "ffrtmp-fleet.json").read_text())
    for e in dashboard_exprs(dash):
        for n in names_in(e):
            if n.startswith("ffrtmp_"): used.setdefault(n, set()).add("dashboard")
    for n in sorted(used):
        if not known(n): err(f"{n} (used by {', '.join(sorted(used[n]))}) is not a family in {source}")
    fam_used = {re.sub(r'_(bucket|sum|count)$', '', n) if not n in families else n for n in used}
    unused = sorted(f for f in families if f.startswith("ffrtmp_") and f not in fam_used)
    summary = f"{len(used)} ffrtmp_* names used by the rules and the dashboard, all in {source} ({len(families)} families)"
    if unused: summary += "\nnot used by the rules or the dashboard: " + ", ".join(unused)

elif what == "servicemonitor":
    # The ServiceMonitor is a Prometheus Operator kind, which kubernetes-validate has no
    # schema for (and whose CRD we do not copy into the repository). Check what makes it
    # work here: the fields it uses, that it selects the metrics Service, and that the
    # port it names is the Service's.
    docs = [x for x in yaml.safe_load_all((k8s / "optional/servicemonitor.yaml").read_text()) if x]
    svc = [x for x in yaml.safe_load_all((k8s / "40-service.yaml").read_text()) if x][0]
    known_ep = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings", "metricRelabelings", "scheme"}
    for doc in docs:
        if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != "ServiceMonitor":
            err(f"servicemonitor.yaml: {doc.get('apiVersion')}/{doc.get('kind')} is not monitoring.coreos.com/v1 ServiceMonitor")
            continue
        spec = doc.get("spec") or {}
        unknown = set(spec) - {"selector", "namespaceSelector", "endpoints", "jobLabel"}
        if unknown: err(f"servicemonitor.yaml: unknown spec fields {sorted(unknown)}")
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        labels = svc["metadata"].get("labels") or {}
        if not sel or any(labels.get(k) != v for k, v in sel.items()):
            err(f"servicemonitor.yaml: selector {sel} does not select the Service {svc['metadata']['name']} (labels {labels})")
        ns = (spec.get("namespaceSelector") or {}).get("matchNames") or []
        if svc["metadata"].get("namespace") not in ns:
            err(f"servicemonitor.yaml: namespaceSelector {ns} misses {svc['metadata'].get('namespace')}")
        ports = {p.get("name") for p in svc["spec"]["ports"]}
        for ep in spec.get("endpoints") or []:
            if set(ep) - known_ep: err(f"servicemonitor.yaml: unknown endpoint fields {sorted(set(ep) - known_ep)}")
            if ep.get("port") not in ports: err(f"servicemonitor.yaml: endpoint port {ep.get('port')} is not a port of the Service ({sorted(ports)})")
            if ep.get("path", "/metrics") != "/metrics": err("servicemonitor.yaml: path is not /metrics")
    summary = f"{len(docs)} ServiceMonitor selecting Service {svc['metadata']['name']} port(s) {sorted(ports)}"

elif what == "configmap":
    # The ConfigMap's watch config is YAML with the keys the DaemonSet relies on.
    cms = [x for x in yaml.safe_load_all((k8s / "20-configmap.yaml").read_text()) if x]
    cfg = yaml.safe_load(cms[0]["data"]["watch-config.yaml"])
    if cfg.get("cgroup_root") != "auto": err(f"watch config: cgroup_root {cfg.get('cgroup_root')!r}, expected auto")
    ds = yaml.safe_load((k8s / "30-daemonset.yaml").read_text())
    c = ds["spec"]["template"]["spec"]["containers"][0]
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    if cfg.get("metrics_addr") != f"0.0.0.0:{port}": err(f"watch config: metrics_addr {cfg.get('metrics_addr')!r}, the DaemonSet's metrics port is {port}")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if c.get(probe, {}).get("httpGet", {}).get("port") not in (port, "metrics"):
            err(f"daemonset: {probe} does not probe the metrics port")
    summary = f"cgroup_root auto, metrics_addr {cfg.get('metrics_addr')}, probes on the metrics port"

else:
    err(f"unknown check {what}")

for e in errors: print(e)
if not errors: print(summary)
sys.exit(1 if errors else 0)
PYEOF

pycheck "every alert and recording rule has unit tests" tests
pycheck "alert labels, annotations and runbook sections in docs/fleet.md" annotations

# --- Grafana ------------------------------------------------------------------------------
check "python3 -m json.tool deployment/grafana/ffrtmp-fleet.json" \
    bash -c '"$1" -m json.tool "$2" >/dev/null' _ "$PY" "$GRAFANA/ffrtmp-fleet.json"
pycheck "dashboard structure (variables, datasource, panels, recording rules)" dashboard
DASH_RULES=$(mktemp --suffix=.yml)
trap 'rm -f "$DASH_RULES"' EXIT
check "dashboard PromQL parses (promtool check rules over the panels' queries)" \
    bash -c '"$1" - "$2" dashboard-promql "$3" <<<"$4" && "$5" check rules "$3"' _ "$PY" "$ROOT" "$DASH_RULES" "$PYPROG" "$PROMTOOL"
pycheck "every ffrtmp_* metric used exists in ${METRICS[*]}" metrics

# --- Kubernetes ---------------------------------------------------------------------------
mapfile -t MANIFESTS < <(cd "$K8S" && ls -- *.yaml)
kv() { # kubernetes-validate exits 0 on a kind it has no schema for (WARN): treat it as an error
    local out rc=0
    out=$(cd "$K8S" && "$VENV/bin/kubernetes-validate" --strict -k "$1" "${@:2}" 2>&1) || rc=$?
    printf '%s\n' "$out"
    [[ $rc -eq 0 ]] && ! grep -qE '^(WARN|ERROR|FATAL)' <<<"$out"
}
for v in "${K8S_VERSIONS[@]}"; do
    check "kubernetes-validate --strict -k $v ${MANIFESTS[*]}" kv "$v" "${MANIFESTS[@]}"
done
say "skip    kubernetes-validate optional/servicemonitor.yaml: its kind is a Prometheus Operator CRD, which the bundled Kubernetes schemas do not have; its fields and its match with the Service are checked instead"
pycheck "optional/servicemonitor.yaml selects the metrics Service" servicemonitor
pycheck "ConfigMap watch config matches the DaemonSet (cgroup_root, metrics_addr, probes)" configmap

if [[ -n ${FFRTMP_BIN:-} ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp" "$DASH_RULES"' EXIT
    "$PY" -c 'import sys, yaml; d=[x for x in yaml.safe_load_all(open(sys.argv[1])) if x][0]; sys.stdout.write(d["data"]["watch-config.yaml"])' \
        "$K8S/20-configmap.yaml" >"$tmp/watch-config.yaml"
    check "$FFRTMP_BIN config check on the ConfigMap's watch-config.yaml" \
        "$FFRTMP_BIN" config check --config "$tmp/watch-config.yaml"
else
    say "skip    ffrtmp config check of the ConfigMap's watch config: FFRTMP_BIN is not set"
fi

if [[ ${#FAILED[@]} -gt 0 ]]; then
    die "${#FAILED[@]} check(s): $(printf '%s; ' "${FAILED[@]}")"
fi
say "all fleet checks passed"

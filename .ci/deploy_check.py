"""Offline checks of deploy/: run by .ci/deploy-check with the virtualenv's Python.

Each check prints one line, `ok`, `FAIL` or `skip`, and what it looked at; the
script exits non-zero if any failed. Usage: deploy_check.py HOPSCOPE_BINARY
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
BINARY = Path(sys.argv[1]).resolve()
failures = []


def report(ok, what, detail=""):
    status = "ok  " if ok else "FAIL"
    print(f"{status} {what}" + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(what)


def skip(what, why):
    print(f"skip {what}: {why}")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# --- YAML -----------------------------------------------------------------

docs = {}
for path in sorted(DEPLOY.rglob("*.y*ml")):
    rel = path.relative_to(ROOT)
    try:
        docs[rel] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        report(True, f"YAML parses: {rel}")
    except yaml.YAMLError as e:
        report(False, f"YAML parses: {rel}", str(e).replace("\n", " "))


def doc(rel):
    return docs.get(Path(rel), [{}])[0]


# --- hopscope's settings ----------------------------------------------------

help_text = run([str(BINARY), "serve", "--help"]).stdout
flags = set(re.findall(r"^\s+--([a-z0-9-]+)", help_text, re.M)) - {"help", "config", "print-config"}
options = {f.replace("-", "_") for f in flags}
report(bool(options), "serve --help lists the settings", ", ".join(sorted(options)))


def serve_accepts(toml_text, what):
    """Starts `hopscope serve` with the TOML (listeners on ephemeral loopback
    ports, directories in a temporary one), waits until it listens, stops it."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "hopscope.toml"
        config.write_text(toml_text)
        cmd = [str(BINARY), "serve", "--config", str(config)]
        for key in set(tomllib.loads(toml_text)) | {"data_dir"}:
            if key.endswith("_addr"):
                cmd += [f"--{key.replace('_', '-')}", "127.0.0.1:0"]
            elif key.endswith("_dir"):
                cmd += [f"--{key.replace('_', '-')}", tmp]
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("HOPSCOPE_") and k != "RUST_BACKTRACE"
        }
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "hopscope listening" in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
        ok = proc.returncode == 0 and any("hopscope listening" in l for l in lines)
        report(ok, f"hopscope serve runs with {what}", "" if ok else "".join(lines) + (rest or ""))


example = (DEPLOY / "hopscope.toml").read_text()
# Secrets, paths and switches that must not be on by default are listed as
# commented-out examples (`# api_token = "..."`): those count as listed.
commented = set(re.findall(r"^# ?([a-z0-9_]+) = ", example, re.M)) & options
example_keys = set(tomllib.loads(example)) | commented
report(
    example_keys == options,
    "deploy/hopscope.toml has a key for every setting of serve --help, and no other",
    f"missing {sorted(options - example_keys)}, unknown {sorted(example_keys - options)}",
)
serve_accepts(example, "deploy/hopscope.toml")

configmap = doc("deploy/k8s/configmap.yaml")
cm_toml = configmap.get("data", {}).get("hopscope.toml", "")
cm_keys = set(tomllib.loads(cm_toml))
report(cm_keys <= options, "the k8s ConfigMap's TOML has only known keys", f"unknown {sorted(cm_keys - options)}")
report(
    all(v.startswith("0.0.0.0:") for k, v in tomllib.loads(cm_toml).items() if k.endswith("_addr")),
    "the k8s ConfigMap binds every listener on 0.0.0.0",
)
serve_accepts(cm_toml, "the k8s ConfigMap's hopscope.toml")

# --- Kubernetes ---------------------------------------------------------------

manifests = sorted(str(p) for p in (DEPLOY / "k8s").glob("*.yaml"))
r = run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", *manifests])
report(r.returncode == 0, f"k8s manifests validate against the bundled Kubernetes schemas ({len(manifests)} files, kubernetes-validate --strict)", (r.stdout + r.stderr).strip())

sts = doc("deploy/k8s/statefulset.yaml")
svc = doc("deploy/k8s/service.yaml")
pod = sts.get("spec", {}).get("template", {}).get("spec", {})
container = (pod.get("containers") or [{}])[0]
mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
claims = [c["metadata"]["name"] for c in sts.get("spec", {}).get("volumeClaimTemplates", [])]
env = {e["name"]: e.get("value") for e in container.get("env", [])}
report(
    any(mounts.get(c) == env.get("HOPSCOPE_DATA_DIR") for c in claims),
    "the StatefulSet mounts a volumeClaimTemplate at HOPSCOPE_DATA_DIR",
    f"claims {claims}, mounts {mounts}, data dir {env.get('HOPSCOPE_DATA_DIR')}",
)
report(
    container.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
    and container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
    "the StatefulSet probes /healthz (liveness) and /readyz (readiness)",
)
sc = container.get("securityContext", {})
report(
    pod.get("securityContext", {}).get("runAsNonRoot") is True
    and sc.get("readOnlyRootFilesystem") is True
    and sc.get("allowPrivilegeEscalation") is False,
    "the StatefulSet runs non-root with a read-only root filesystem",
)
report(
    svc.get("spec", {}).get("clusterIP") == "None"
    and sts.get("spec", {}).get("serviceName") == svc.get("metadata", {}).get("name"),
    "the Service is headless and is the StatefulSet's serviceName",
)
report(
    configmap.get("metadata", {}).get("name")
    in [v.get("configMap", {}).get("name") for v in pod.get("volumes", [])],
    "the StatefulSet mounts the ConfigMap",
)

# --- Collector configs ----------------------------------------------------------


def collector_pipelines_resolve(rel):
    c = doc(rel)
    missing = []
    for name, p in c.get("service", {}).get("pipelines", {}).items():
        for kind in ("receivers", "processors", "exporters"):
            for component in p.get(kind, []):
                if component not in (c.get(kind) or {}):
                    missing.append(f"{name}.{kind}.{component}")
    for ext in c.get("service", {}).get("extensions", []):
        if ext not in (c.get("extensions") or {}):
            missing.append(f"extensions.{ext}")
    report(not missing and c.get("service", {}).get("pipelines"), f"{rel}: every component a pipeline names is configured", f"missing {missing}")
    return c


compose = doc("deploy/docker-compose.yml")
services = compose.get("services", {})
collector = collector_pipelines_resolve("deploy/collector.yaml")
endpoint = collector.get("exporters", {}).get("otlp/hopscope", {}).get("endpoint", "")
report(
    endpoint.split(":")[0] in services and endpoint.endswith(":4317"),
    "deploy/collector.yaml exports to the compose service hopscope on OTLP/gRPC 4317",
    endpoint,
)
collector_pipelines_resolve("deploy/otel-collector.yaml")
lb = collector_pipelines_resolve("deploy/collector-loadbalancing.yaml")
lbx = lb.get("exporters", {}).get("loadbalancing", {})
hostname = lbx.get("resolver", {}).get("dns", {}).get("hostname", "")
svc_fqdn = f"{svc.get('metadata', {}).get('name')}.{svc.get('metadata', {}).get('namespace')}.svc.cluster.local"
report(
    lbx.get("routing_key") == "traceID" and hostname == svc_fqdn,
    "the load-balancing Collector routes by traceID to the headless Service",
    f"routing_key {lbx.get('routing_key')}, dns {hostname}, service {svc_fqdn}",
)

# --- docker-compose -------------------------------------------------------------

compose_file = str(DEPLOY / "docker-compose.yml")
if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
    r = run(["docker", "compose", "-f", compose_file, "config", "--quiet"])
    report(r.returncode == 0, "docker compose config accepts deploy/docker-compose.yml", r.stderr.strip())
else:
    skip("docker compose config", "no docker compose here; validating against the Compose specification instead")
r = run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", compose_file])
report(r.returncode == 0, "deploy/docker-compose.yml validates against the Compose specification (check-jsonschema)", (r.stdout + r.stderr).strip())

images = {name: s.get("image", "") for name, s in services.items()}
report(
    all(re.search(r":[0-9]+\.[0-9]+\.[0-9]+$", images.get(n, "")) for n in ("otel-collector", "grafana")),
    "the Collector and Grafana images are pinned to a version",
    str(images),
)
for name, s in services.items():
    for volume in s.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            target = (DEPLOY / source).resolve()
            # The dashboards are added next to the provisioning, by their own change.
            report(target.exists() or source == "./grafana/dashboards", f"compose service {name} mounts an existing {source}")
grafana = services.get("grafana", {})
report(
    "simpod-json-datasource" in str(grafana.get("environment", {}).get("GF_INSTALL_PLUGINS", "")),
    "Grafana installs simpod-json-datasource",
)
hop = services.get("hopscope", {})
report(
    any(v.split(":")[1] == "/var/lib/hopscope" for v in hop.get("volumes", [])),
    "hopscope's data directory is a volume in compose",
)
traffic = services.get("traffic", {})
report(
    any("otel-collector:4317" in arg for arg in traffic.get("command", [])),
    "the demo traffic goes through the Collector",
)
report(
    traffic.get("build", {}).get("dockerfile") == "deploy/loadgen.Dockerfile",
    "the demo traffic runs the load generator's own image (deploy/loadgen.Dockerfile)",
    str(traffic.get("build")),
)

# --- Two tiers (deploy/README.md) -------------------------------------------------

two_tier = sorted(str(p) for p in (DEPLOY / "k8s/two-tier").glob("*.yaml"))
r = run([str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", *two_tier])
report(r.returncode == 0, f"two-tier k8s manifests validate ({len(two_tier)} files, kubernetes-validate --strict)", (r.stdout + r.stderr).strip())


def k8s_objects(rel):
    return {(d.get("kind"), d.get("metadata", {}).get("name")): d for d in docs.get(Path(rel), [])}


def fqdn(service, port):
    meta = service.get("metadata", {})
    return f"{meta.get('name')}.{meta.get('namespace')}.svc.cluster.local:{port}"


detect = k8s_objects("deploy/k8s/two-tier/detect.yaml")
peers_svc = doc("deploy/k8s/two-tier/peers.yaml")
by_service = k8s_objects("deploy/k8s/two-tier/collector.yaml")
tier1_toml = doc("deploy/k8s/two-tier/configmap.yaml").get("data", {}).get("hopscope.toml", "")
tier2_toml = detect.get(("ConfigMap", "hopscope-detect"), {}).get("data", {}).get("hopscope.toml", "")
tier1, tier2 = tomllib.loads(tier1_toml), tomllib.loads(tier2_toml)
report(
    set(tier1) <= options and set(tier2) <= options,
    "the two tiers' TOML have only known keys",
    f"unknown {sorted((set(tier1) | set(tier2)) - options)}",
)
report(
    doc("deploy/k8s/two-tier/configmap.yaml").get("metadata", {}).get("name") == configmap.get("metadata", {}).get("name"),
    "tier 1's ConfigMap replaces the hopscope StatefulSet's",
)
by_service_svc = by_service.get(("Service", "otel-by-service"), {})
report(
    tier1.get("role") == "assemble" and tier1.get("forward_otlp") == "http://" + fqdn(by_service_svc, 4317),
    "tier 1 assembles and forwards to the by-service Collectors' Service",
    f"role {tier1.get('role')}, forward_otlp {tier1.get('forward_otlp')}",
)
report(
    tier2.get("role") == "detect",
    "tier 2 detects",
    str(tier2.get("role")),
)
report(
    tier1.get("peers_dns") == tier2.get("peers_dns") == fqdn(peers_svc, 9980)
    and peers_svc.get("spec", {}).get("clusterIP") == "None",
    "both tiers find their peers through the headless peers Service",
    f"{tier1.get('peers_dns')}, {tier2.get('peers_dns')}",
)
part_of = peers_svc.get("spec", {}).get("selector", {})
detect_sts = detect.get(("StatefulSet", "hopscope-detect"), {})
for name, s in (("hopscope", sts), ("hopscope-detect", detect_sts)):
    labels = s.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    report(part_of and part_of.items() <= labels.items(), f"the peers Service selects the {name} pods", f"selector {part_of}, labels {labels}")
detect_pod = detect_sts.get("spec", {}).get("template", {}).get("spec", {})
detect_container = (detect_pod.get("containers") or [{}])[0]
detect_headless = detect.get(("Service", "hopscope-detect-headless"), {})
report(
    detect_sts.get("spec", {}).get("serviceName") == detect_headless.get("metadata", {}).get("name")
    and detect_headless.get("spec", {}).get("clusterIP") == "None"
    and "hopscope-detect" in [v.get("configMap", {}).get("name") for v in detect_pod.get("volumes", [])]
    and detect_container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz"
    and detect_pod.get("securityContext", {}).get("runAsNonRoot") is True
    and detect_container.get("securityContext", {}).get("readOnlyRootFilesystem") is True,
    "the detect StatefulSet: headless Service, its ConfigMap, probes, non-root, read-only root",
)
bs = collector_pipelines_resolve("deploy/collector-by-service.yaml")
bsx = bs.get("exporters", {}).get("loadbalancing", {})
report(
    bsx.get("routing_key") == "service"
    and bsx.get("resolver", {}).get("dns", {}).get("hostname", "") + ":4317" == fqdn(detect_headless, 4317),
    "the by-service Collector routes by service to the detect replicas' headless Service",
    f"routing_key {bsx.get('routing_key')}, dns {bsx.get('resolver', {}).get('dns', {}).get('hostname')}",
)
bs_deploy = by_service.get(("Deployment", "otel-by-service"), {})
report(
    "otel-by-service" in [v.get("configMap", {}).get("name") for v in bs_deploy.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", [])],
    "the by-service Collectors mount their ConfigMap (made from deploy/collector-by-service.yaml)",
)
serve_accepts(tier1_toml, "tier 1's hopscope.toml")
serve_accepts(tier2_toml, "tier 2's hopscope.toml")

two_compose_file = str(DEPLOY / "docker-compose.two-tier.yml")
r = run([str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", two_compose_file])
report(r.returncode == 0, "deploy/docker-compose.two-tier.yml validates against the Compose specification (check-jsonschema)", (r.stdout + r.stderr).strip())
two = doc("deploy/docker-compose.two-tier.yml").get("services", {})
SET_HOSTNAME = "--set=exporters::loadbalancing::resolver::dns::hostname="
sets = {
    name: [a.removeprefix(SET_HOSTNAME) for a in s.get("command", []) if a.startswith(SET_HOSTNAME)]
    for name, s in two.items()
}
report(
    sets.get("otel-gateway") == ["hopscope-assemble"] and sets.get("otel-by-service") == ["hopscope-detect"],
    "compose: the two Collector tiers resolve the assembling and the detect replicas",
    str(sets),
)
env1 = two.get("hopscope-assemble", {}).get("environment", {})
env2 = two.get("hopscope-detect", {}).get("environment", {})
report(
    env1.get("HOPSCOPE_ROLE") == "assemble"
    and env1.get("HOPSCOPE_FORWARD_OTLP") == "http://otel-by-service:4317"
    and env2.get("HOPSCOPE_ROLE") == "detect",
    "compose: tier 1 assembles and forwards to otel-by-service, tier 2 detects",
    f"{env1}, {env2}",
)
mounted = {v.split(":")[0] for s in two.values() for v in s.get("volumes", [])}
report(
    {"./collector-loadbalancing.yaml", "./collector-by-service.yaml"} <= mounted,
    "compose: the Collectors run the same configurations as Kubernetes",
    str(sorted(mounted)),
)

# --- Grafana provisioning ---------------------------------------------------------

sources = {}
for path in sorted((DEPLOY / "grafana/provisioning/datasources").glob("*.yaml")):
    for d in doc(path.relative_to(ROOT)).get("datasources", []):
        sources[d.get("uid")] = d
json_ds = sources.get("hopscope-json", {})
jaeger_ds = sources.get("hopscope-jaeger", {})
report(
    json_ds.get("type") == "simpod-json-datasource" and json_ds.get("url") == "http://hopscope:9980/grafana",
    "datasource hopscope-json: simpod-json-datasource at http://hopscope:9980/grafana",
)
report(
    jaeger_ds.get("type") == "jaeger" and jaeger_ds.get("url") == "http://hopscope:16686",
    "datasource hopscope-jaeger: jaeger at http://hopscope:16686",
)
providers = doc("deploy/grafana/provisioning/dashboards/hopscope.yaml").get("providers", [])
dash_mounts = [v.split(":")[1] for v in grafana.get("volumes", []) if v.startswith("./grafana/dashboards:")]
report(
    any(p.get("options", {}).get("path") in dash_mounts for p in providers),
    "the dashboard provider reads where compose mounts deploy/grafana/dashboards",
    f"{[p.get('options', {}).get('path') for p in providers]} vs {dash_mounts}",
)

# --- Dockerfile --------------------------------------------------------------------

dockerfile = (DEPLOY / "Dockerfile").read_text()
r = run([str(VENV_BIN / "hadolint"), str(DEPLOY / "Dockerfile")])
report(r.returncode == 0, "hadolint deploy/Dockerfile", (r.stdout + r.stderr).strip())
report(
    re.search(r"cargo build [^\n]*-p hopscope --bin hopscope\b", dockerfile) is not None,
    "the daemon's image builds the hopscope package alone (cargo build -p hopscope)",
)
r = run([str(VENV_BIN / "hadolint"), str(DEPLOY / "loadgen.Dockerfile")])
report(r.returncode == 0, "hadolint deploy/loadgen.Dockerfile", (r.stdout + r.stderr).strip())
loadgen_dockerfile = (DEPLOY / "loadgen.Dockerfile").read_text()
loadgen_user = re.findall(r"^USER\s+(\S+)", loadgen_dockerfile, re.M)
report(
    bool(loadgen_user) and not loadgen_user[-1].startswith(("root", "0")),
    "the load generator's image runs as a non-root user",
    str(loadgen_user),
)
report(
    re.search(r'^HEALTHCHECK[^\n]*(\\\n[^\n]*)*"hopscope", "healthcheck"|^\s*CMD \["/usr/local/bin/hopscope", "healthcheck"\]', dockerfile, re.M) is not None,
    "the image's HEALTHCHECK runs hopscope healthcheck",
)
user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
report(bool(user) and not user[-1].startswith(("root", "0")), "the image runs as a non-root user", str(user))
env_addrs = re.findall(r"HOPSCOPE_[A-Z_]+_ADDR=(\S+)", dockerfile)
report(env_addrs and all(a.startswith("0.0.0.0:") for a in env_addrs), "the image binds its listeners on 0.0.0.0", str(env_addrs))

# --- systemd ---------------------------------------------------------------------------

if shutil.which("systemd-analyze"):
    with tempfile.TemporaryDirectory() as tmp:
        # verify wants ExecStart's binary to exist: point it at this build.
        unit = Path(tmp) / "hopscope.service"
        unit.write_text((DEPLOY / "hopscope.service").read_text().replace("/usr/local/bin/hopscope", str(BINARY)))
        r = run(["systemd-analyze", "verify", str(unit)])
        # It exits 0 on settings it ignores, so any remark about the unit fails.
        out = (r.stdout + r.stderr).strip()
        report(r.returncode == 0 and "hopscope.service" not in out, "systemd-analyze verify deploy/hopscope.service", out)
        r = run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit)])
        score = re.search(r"Overall exposure level for \S+: (.*)", r.stdout)
        report(r.returncode == 0, "systemd-analyze security: exposure at most 2", score.group(1) if score else r.stderr.strip())
else:
    skip("systemd-analyze verify deploy/hopscope.service", "systemd-analyze is not installed")

print(f"{len(failures)} failed" if failures else "every deploy/ check passed")
sys.exit(1 if failures else 0)

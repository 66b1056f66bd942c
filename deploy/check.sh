#!/usr/bin/env bash
# Checks everything under deploy/ without Docker or a cluster:
#   - alert rules: `promtool check rules` and the unit tests `promtool test rules`
#   - the Prometheus config of the compose setup: `promtool check config`
#   - the Kubernetes manifests against the Kubernetes JSON schemas (kubernetes-validate, strict,
#     for the oldest and newest Kubernetes versions we support), the ServiceMonitor against the
#     vendored CRD schema, the kustomization's references, the generated rules ConfigMap
#   - compose.yaml against the compose specification (check-jsonschema's bundled schema)
#   - the Grafana dashboard and its provisioning
#   - the Dockerfile's COPY sources (the image itself is built elsewhere: no Docker engine here)
# Installs what is missing: promtool from Debian's `prometheus` package (apt-get, as root), the
# Python validators into a virtualenv. Runs every check, then exits 1 if any failed.
# The Rust side (metric names the dashboard and alerts use, flags, configs) is tests/deploy.rs.
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSIONS=(1.30.0 1.37.0) # 1.30: the preStop `sleep` action; 1.37: the newest bundled schemas
PY_PACKAGES=(kubernetes-validate==1.37.0 check-jsonschema==0.39.0)
VENV="${CAREGUARD_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/careguard/deploy-check-venv}"

failed=()
step() { # step NAME COMMAND...: run one check, remember a failure, go on
  local name=$1
  shift
  echo "== $name"
  if "$@"; then echo "   ok"; else failed+=("$name"); echo "   FAILED: $name"; fi
}

install_promtool() {
  command -v promtool >/dev/null && return 0
  echo "== installing promtool (Debian package prometheus)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

install_validators() {
  local stamp="$VENV/.careguard-packages"
  if [ -x "$VENV/bin/kubernetes-validate" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PY_PACKAGES[*]}" ]; then
    return 0
  fi
  echo "== installing ${PY_PACKAGES[*]} into $VENV"
  rm -rf "$VENV" && python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}" &&
    echo "${PY_PACKAGES[*]}" >"$stamp"
}

install_promtool || { echo "cannot install promtool"; exit 1; }
install_validators || { echo "cannot install the Python validators"; exit 1; }
PY="$VENV/bin/python"

step "promtool check rules" promtool check rules deploy/prometheus/alerts.yaml
step "promtool test rules" promtool test rules deploy/prometheus/alerts_test.yaml
step "promtool check config" promtool check config --syntax-only deploy/prometheus/prometheus.yml

k8s_manifests=()
while IFS= read -r f; do k8s_manifests+=("$f"); done < <(
  ls deploy/kubernetes/*.yaml | grep -v -e '/kustomization.yaml$' -e '/servicemonitor.yaml$'
)
for v in "${K8S_VERSIONS[@]}"; do
  step "kubernetes-validate --strict (Kubernetes $v)" \
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${k8s_manifests[@]}"
done
step "ServiceMonitor against deploy/kubernetes/schemas/servicemonitor.json" \
  "$VENV/bin/check-jsonschema" --schemafile deploy/kubernetes/schemas/servicemonitor.json deploy/kubernetes/servicemonitor.yaml
step "kustomization references" "$PY" deploy/check_files.py kustomize
step "rules ConfigMap matches rules/" "$PY" deploy/kubernetes/rules-configmap.py --check
step "compose.yaml against the compose specification" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
step "compose.yaml services, mounts and wiring" "$PY" deploy/check_files.py compose
step "Grafana dashboard and provisioning" "$PY" deploy/check_files.py grafana
step "Dockerfile sources" "$PY" deploy/check_files.py dockerfile

if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy checks: ${#failed[@]} failed: ${failed[*]}"
  exit 1
fi
echo "deploy checks: all passed"

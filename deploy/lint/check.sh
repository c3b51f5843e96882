#!/usr/bin/env bash
# Checks the deploy files with the tools their users run, so a broken file fails
# `make lint` (and CI) rather than a user's first `docker compose up` or `kubectl apply`:
#
#   docker-compose.yml   docker compose config (parse, interpolate, resolve), then every
#                        build context, Dockerfile and COPY source it names must exist
#   deploy/Dockerfile    hadolint
#   deploy/k8s/          kubectl kustomize (the kustomization builds), then
#                        kubernetes-validate --strict on every manifest and on the built
#                        output, against the oldest and newest Kubernetes it ships schemas for
#   deploy/dashboards/   each dashboard is valid JSON
#
# None of these needs a Docker engine, a cluster or the internet. The tools are PyPI
# wheels pinned with hashes in tools.txt, installed once into a virtual environment under
# ~/.cache/punchcard (keyed by tools.txt's hash); later runs take about a second.
set -euo pipefail
cd "$(dirname "$0")/../.."

UV="${UV:-uv}"
KUBERNETES_VERSIONS=(1.30.0 1.37.0)
requirements=deploy/lint/tools.txt
cache="${PUNCHCARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/punchcard}"  # as libs/devstack
tools="$cache/lint-tools-$(sha256sum "$requirements" | cut -c1-16)"

mkdir -p "$cache"
(
  # One installer at a time: parallel `make lint` runs share the cache.
  flock 9
  if [ ! -f "$tools/.installed" ]; then
    echo "deploy lint: installing the pinned tools into $tools (once)"
    rm -rf "$tools"
    "$UV" venv --quiet "$tools"
    "$UV" pip install --quiet --python "$tools/bin/python" --require-hashes -r "$requirements"
    touch "$tools/.installed"
  fi
) 9>"$cache/lint-tools.lock"
bin="$tools/bin"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

failed=0
step() {
  # Runs one check; on failure, says which and carries on so one run shows every problem.
  local what="$1"
  shift
  if ! "$@"; then
    echo "deploy lint: FAILED: $what" >&2
    failed=1
  fi
}

compose_config() {
  "$bin/docker-compose" -f docker-compose.yml config --quiet &&
    "$bin/docker-compose" -f docker-compose.yml config --format json |
    "$bin/python" deploy/lint/referenced_files.py
}

kubernetes_validate() {
  # kubernetes-validate only warns (exit 0) about a kind it has no schema for, so a
  # misspelt kind or apiVersion would pass: any WARN counts as a failure here.
  local version="$1"
  shift
  local out
  out="$("$bin/kubernetes-validate" --strict --quiet -k "$version" "$@" 2>&1)" || {
    echo "$out" >&2
    return 1
  }
  if [ -n "$out" ]; then
    echo "$out" >&2
    grep -q WARN <<<"$out" && return 1
  fi
  return 0
}

kustomize_and_validate() {
  local built="$workdir/kustomize-build.yaml"
  "$bin/kubectl" kustomize deploy/k8s >"$built" || return 1
  local manifests=()
  for f in deploy/k8s/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
  done
  local ok=0
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    kubernetes_validate "$version" "${manifests[@]}" "$built" || ok=1
  done
  return $ok
}

dashboards_json() {
  local ok=0
  for f in deploy/dashboards/*.json; do
    "$bin/python" -m json.tool "$f" >/dev/null || { echo "$f: not valid JSON" >&2; ok=1; }
  done
  return $ok
}

step "docker compose config (docker-compose.yml)" compose_config
step "hadolint (deploy/Dockerfile)" "$bin/hadolint" deploy/Dockerfile
step "kubectl kustomize + kubernetes-validate (deploy/k8s)" kustomize_and_validate
step "dashboards are JSON (deploy/dashboards)" dashboards_json

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "deploy lint: docker-compose.yml, deploy/Dockerfile, deploy/k8s (Kubernetes ${KUBERNETES_VERSIONS[*]}), deploy/dashboards: OK"

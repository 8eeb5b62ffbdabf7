#!/usr/bin/env bash
# The deployment files: yamllint (deploy/.yamllint) on every YAML file under deploy/, then
# deploy_manifests.mjs: the Kubernetes schema of the Deployment/Services and the LeaderWorkerSet's
# pod templates, how deltaserve is wired into them, and every `deltaserve serve` flag used in
# deploy/ and docs/deploy.md checked against `deltaserve serve --help`. Starts no server.
source "$(dirname "$0")/lib.sh"

command -v yamllint >/dev/null || { log "SKIP: yamllint is not installed (deploy/setup.sh installs it)"; exit 77; }
[[ -d $INTEGRATION_DIR/node_modules/kubernetes-models && -d $INTEGRATION_DIR/node_modules/yaml ]] ||
  { log "SKIP: kubernetes-models/yaml missing; run: (cd tests/integration && npm install --no-audit --no-fund)"; exit 77; }

mapfile -t yaml_files < <(find "$DELTASERVE_SOURCE_DIR/deploy" -name '*.yaml' -o -name '*.yml' | sort)
((${#yaml_files[@]} >= 2)) || fail "expected the Kubernetes manifests under deploy/, found ${#yaml_files[@]} YAML files"
yamllint --strict -c "$DELTASERVE_SOURCE_DIR/deploy/.yamllint" "${yaml_files[@]}" || fail "yamllint"
log "ok: yamllint on ${#yaml_files[@]} files"

run_node deploy_manifests.mjs "$DELTASERVE_BIN" "$DELTASERVE_SOURCE_DIR" || fail "manifest checks"
bash -n "$DELTASERVE_SOURCE_DIR/deploy/slurm/deltaserve.sbatch" || fail "deploy/slurm/deltaserve.sbatch: bash syntax"
# The unit with its ExecStart pointed at this build (verify wants the binary to exist); verify
# exits 0 on settings it ignores, so any output at all is a failure.
if command -v systemd-analyze >/dev/null; then
  sed "s|/opt/deltaserve/bin/deltaserve|$DELTASERVE_BIN|" "$DELTASERVE_SOURCE_DIR/deploy/systemd/deltaserve.service" \
    >"$WORK_DIR/deltaserve.service"
  verify=$(systemd-analyze verify "$WORK_DIR/deltaserve.service" 2>&1) || fail "systemd-analyze verify: $verify"
  [[ -z $verify ]] || fail "systemd-analyze verify deploy/systemd/deltaserve.service: $verify"
  log "ok: systemd-analyze verify"
fi
log "PASS"

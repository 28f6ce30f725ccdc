#!/usr/bin/env bash
# Runs one command on every worker of a Cloud TPU VM (a pod slice is several hosts), in a
# venv bootstrapped on each worker, with JAX's multi-controller runtime switched on.
#
#   launch/tpu_vm.sh --tpu NAME --zone ZONE [--project P] -- python -m launch.sweep \
#       --config experiments/phase_transition_mnist.py --root /mnt/shared/sweeps/mnist
#
# Steps: (1) pack this checkout's files (tracked and new, not ignored), copy them to every worker
# (~/icl_jax, override with ICL_JAX_REMOTE_DIR); (2) on each worker, create .venv with a
# Python that jax supports (>= 3.11: python3.13/3.12/3.11 if the image has one, else one
# that uv fetches, since TPU VM images ship 3.10) and `pip install -e .[tpu]` once (a stamp
# file skips it next time, unless pyproject.toml changed); (3) run the command there with
# ICL_JAX_DISTRIBUTED=1 (jax.distributed finds the other workers itself on Cloud TPU),
# ICL_JAX_WORKER=<this worker's index> (from the metadata server), and this shell's
# TFDS_DATA_DIR, JAX_* and ICL_JAX_* variables (not JAX_PLATFORMS, nor the per-process
# JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID). --root / --workdir must be
# a filesystem every worker sees at the same path (Filestore/NFS, or a gcsfuse mount).
set -euo pipefail

usage() { sed -n '2,19p' "$0" >&2; exit 2; }

TPU="" ZONE="" PROJECT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu=*) TPU="${1#*=}" ;;
    --tpu) TPU="${2:?--tpu needs a value}"; shift ;;
    --zone=*) ZONE="${1#*=}" ;;
    --zone) ZONE="${2:?--zone needs a value}"; shift ;;
    --project=*) PROJECT="${1#*=}" ;;
    --project) PROJECT="${2:?--project needs a value}"; shift ;;
    --) shift; break ;;
    *) echo "error: unknown argument '$1' (the command goes after --)" >&2; usage ;;
  esac
  shift
done
[[ -n "$TPU" && -n "$ZONE" && $# -gt 0 ]] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE_DIR="${ICL_JAX_REMOTE_DIR:-icl_jax}"
GCLOUD=(gcloud compute tpus tpu-vm)
TARGET=("$TPU" --zone="$ZONE" --worker=all)
[[ -n "$PROJECT" ]] && TARGET+=(--project="$PROJECT")

# (1) Ship the code: tracked and new (not ignored) files, with uncommitted edits.
ARCHIVE="$(mktemp -d)/icl_jax.tar.gz"
# Never a venv (one linked in from elsewhere is not ignored by git): each worker builds its own.
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
  grep -zv -e '^\.venv$' -e '^\.venv/' | tar --null -czf "$ARCHIVE" -T -)
"${GCLOUD[@]}" scp "${TARGET[@]}" "$ARCHIVE" "$TPU:~/icl_jax.tar.gz"

# The variables the command should see there as here.
FORWARD=""
for name in $(compgen -e); do
  case "$name" in
    JAX_PLATFORMS|JAX_COORDINATOR_ADDRESS|JAX_NUM_PROCESSES|JAX_PROCESS_ID) ;;
    ICL_JAX_DISTRIBUTED|ICL_JAX_WORKER|ICL_JAX_REMOTE_DIR) ;;
    TFDS_DATA_DIR|JAX_*|ICL_JAX_*) FORWARD+="export $name=$(printf '%q' "${!name}")"$'\n' ;;
  esac
done

# (2) + (3): unpack, bootstrap the venv once, run.
COMMAND="$(printf '%q ' "$@")"
REMOTE="set -euo pipefail
mkdir -p ~/$REMOTE_DIR
tar -xzf ~/icl_jax.tar.gz -C ~/$REMOTE_DIR
cd ~/$REMOTE_DIR
if ! cmp -s pyproject.toml .venv/.installed; then
  rm -rf .venv
  PY=''
  for candidate in python3.13 python3.12 python3.11; do
    if command -v \$candidate >/dev/null && \$candidate -c 'import ensurepip' 2>/dev/null; then
      PY=\$candidate; break
    fi
  done
  if [[ -n \"\$PY\" ]]; then
    \$PY -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e '.[tpu]'
  else
    python3 -m pip install --user --quiet uv
    ~/.local/bin/uv venv --quiet --python 3.11 .venv
    ~/.local/bin/uv pip install --quiet --python .venv/bin/python -e '.[tpu]'
  fi
  cp pyproject.toml .venv/.installed
fi
WORKER=\$(curl -sf -H Metadata-Flavor:Google \\
  http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || echo 0)
${FORWARD}export ICL_JAX_DISTRIBUTED=1 ICL_JAX_WORKER=\$WORKER PATH=\"\$PWD/.venv/bin:\$PATH\"
$COMMAND"
"${GCLOUD[@]}" ssh "${TARGET[@]}" --command="$REMOTE"

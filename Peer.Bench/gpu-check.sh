#!/usr/bin/env bash
# One-shot check of Peer on an NVIDIA GPU, for a machine with the NVIDIA driver and the .NET SDK: builds, lists the
# devices, runs the test suite with CUDA required (every fixture that runs per backend runs on cuda too, and the kernel
# gate loads every kernel on the GPU; the packaging tests are left out), runs the bench's PEER suite on CUDA at full
# size (one layer at up to N = 1024^2 = 1M experts: forward, backward and AdamW step), then every bench suite at
# --quick sizes on cuda and cpu.
# Everything goes to one folder (default gpu-check-<UTC time>), with summary.txt listing each stage, its exit code and
# its time. Each stage has a time limit and the whole run stops launching stages after 10 minutes.
#
#   Peer.Bench/gpu-check.sh [OUT_DIR]
#
# Exit codes: 0 every stage passed; 1 a stage failed or ran out of time (see summary.txt); 2 no NVIDIA GPU or driver;
# 3 no .NET SDK or another tool this script needs; 4 Peer cannot open the GPU (the devices stage says why).
# PEER_GPU_CHECK_SECONDS sets the whole run's budget in seconds (default 600).
set -euo pipefail

budget=${PEER_GPU_CHECK_SECONDS:-600}   # the whole run; stage limits below are cut to what is left of it
start=$SECONDS

fail_early() { echo "gpu-check: $2" >&2; exit "$1"; }

# Preflight: nothing is built or written unless a GPU, its driver and the tools are there.
command -v timeout >/dev/null 2>&1 || fail_early 3 "'timeout' (coreutils) not found: it bounds each stage"
command -v nvidia-smi >/dev/null 2>&1 || fail_early 2 "no NVIDIA GPU here: nvidia-smi not found (install the NVIDIA driver); nothing was run"
gpus=$(timeout 30 nvidia-smi -L 2>&1) || fail_early 2 "no NVIDIA GPU here: 'nvidia-smi -L' failed: ${gpus:-no output}; nothing was run"
echo "$gpus" | grep -q '^GPU [0-9]' || fail_early 2 "no NVIDIA GPU here: 'nvidia-smi -L' lists none (${gpus:-no output}); nothing was run"
command -v dotnet >/dev/null 2>&1 || fail_early 3 "the .NET SDK (dotnet) is not on PATH: install .NET 10 (https://dot.net); nothing was run"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
summary="$out/summary.txt"
cd "$here"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

log() { echo "$*" | tee -a "$summary"; }
failed=0

# stage NAME LIMIT_SECONDS COMMAND...: runs the command with its output in NAME.log, within LIMIT (or what is left).
stage() {
  local name=$1 limit=$2 left rc t0
  shift 2
  left=$(( budget - (SECONDS - start) ))
  if [ "$left" -le 10 ]; then
    log "$(printf '%-12s skipped: the %ss budget is spent' "$name" "$budget")"
    failed=1
    return 1
  fi
  if [ "$limit" -gt "$left" ]; then limit=$left; fi
  t0=$SECONDS
  set +e
  timeout --kill-after=15 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    log "$(printf '%-12s ok       %4ss  %s' "$name" "$((SECONDS - t0))" "$name.log")"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    log "$(printf '%-12s TIMEOUT  %4ss  (limit %ss) %s' "$name" "$((SECONDS - t0))" "$limit" "$name.log")"
    failed=1
  else
    log "$(printf '%-12s FAILED   %4ss  exit %s, see %s' "$name" "$((SECONDS - t0))" "$rc" "$name.log")"
    failed=1
  fi
  return "$rc"
}

{
  echo "gpu-check of Peer at $(git rev-parse HEAD 2>/dev/null || echo 'an unknown commit'), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "$gpus"
} | tee "$summary"
{ nvidia-smi; echo; dotnet --info; } >"$out/machine.txt" 2>&1 || true

stage build 240 dotnet build Peer.sln -c Release -warnaserror || { log "the build failed: nothing else was run"; exit 1; }

stage devices 60 dotnet Peer.Training/bin/Release/net10.0/peer.dll devices || true
if ! grep -q '^cuda ' "$out/devices.log" || grep -q '^cuda *absent' "$out/devices.log"; then
  log "Peer cannot open the GPU: $(grep '^cuda' "$out/devices.log" || echo 'peer devices printed no cuda line')"
  exit 4
fi

# The suite, CUDA required (a fixture that cannot open it fails with the reason); OpenCL only if present. The kernel gate
# writes the PTX of every kernel it compiles into ptx/ (to read, or to assemble with ptxas). The packaging tests are left
# out: they pack, restore and install from NuGet, which says nothing about the GPU and may need the network.
stage tests 300 env PEER_TEST_CUDA=1 PEER_PTX_DIR="$out/ptx" dotnet test Peer.Tests -c Release --no-build \
    --filter "FullyQualifiedName!~Peer.Tests.Packaging" \
    --logger "trx;LogFileName=tests.trx" --logger "console;verbosity=normal" --results-directory "$out/tests" || true
if [ -f "$out/tests/tests.trx" ]; then
  counters=$(grep -o '<Counters [^>]*>' "$out/tests/tests.trx" | head -n 1)
  log "             tests: ${counters:-no counters in the results}"
  grep -oE '(PTX|OpenCL|CUDA) gate: [^<&]*' "$out/tests/tests.trx" | sort -u | sed 's/^/             /' | tee -a "$summary"
fi

# One PEER layer at N from 128^2 to 1024^2 (1M experts) on the GPU, full size; then every suite, quick, on cuda and cpu.
stage bench-peer 150 dotnet Peer.Bench/bin/Release/net10.0/Peer.Bench.dll peer --devices cuda --out "$out/bench-peer" || true
stage bench 150 dotnet Peer.Bench/bin/Release/net10.0/Peer.Bench.dll --devices cuda,cpu --quick --out "$out/bench" || true

log "done in $((SECONDS - start))s: $( [ "$failed" -eq 0 ] && echo 'every stage passed' || echo 'some stages failed (above)'); everything is in $out"
exit "$failed"

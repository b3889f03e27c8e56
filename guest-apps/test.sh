#!/usr/bin/env bash
# Tests of the guest apps, end to end:
#   1. native unit tests (`cargo test`, rustup's host toolchain): routing, validation,
#      the model, kv over an in-memory store, metrics format, config parsing;
#   2. build (e2e/scripts/build-guests.sh, incremental);
#   3. imports of every built component against what Spin 3.6 provides
#      (tests/spin-3.6-imports.txt), plus the expected exports; a deliberately bad
#      component must be rejected (the check can fail);
#   4. hello-composed.wasm on `wasmtime serve`, every route over HTTP, /inference results
#      compared with the native model.
# Ends with the line `N passed, N failed`; exits non-zero if anything failed.
#
# Usage: guest-apps/test.sh          (needs the toolchain; installs it if missing:
#                                      e2e/scripts/install-wasm-toolchain.sh, install-wasmtime.sh)
# Env: SPINDLE_GUEST_TARGET  cargo target dir (default guest-apps/target); an inherited
#      CARGO_TARGET_DIR is ignored.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# Debian's python3: the apt-installed python3-prometheus-client lives there.
py=${PYTHON:-/usr/bin/python3}
passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
finish() {
  echo "$passed passed, $failed failed"
  [[ $failed -eq 0 ]]
  exit
}
# Adds the PASS/FAIL lines of a sub-test's output to the totals.
tally() {
  local out=$1
  passed=$((passed + $(grep -c '^PASS ' <<<"$out")))
  failed=$((failed + $(grep -c '^FAIL ' <<<"$out")))
}

if ! toolchain=$("$root/e2e/scripts/install-wasm-toolchain.sh"); then
  fail "install-wasm-toolchain.sh"
  finish
fi
eval "$toolchain"
if ! wasmtime=$("$root/e2e/scripts/install-wasmtime.sh"); then
  fail "install-wasmtime.sh"
  finish
fi

# --- 1. native unit tests, rustup's host toolchain -------------------------------------
echo "== native unit tests"
cd "$here" || exit 1
# rustup's cargo even if Debian's /usr/bin/cargo comes first on PATH
cargo=${HOST_CARGO:-$(rustup which cargo 2>/dev/null || command -v cargo)}
# The guests' own target dir (see e2e/scripts/build-guests.sh), never an inherited
# CARGO_TARGET_DIR (CI exports the operator's): the infer binary is looked up in it.
export SPINDLE_GUEST_TARGET=${SPINDLE_GUEST_TARGET:-$here/target}
mkdir -p "$SPINDLE_GUEST_TARGET"
# Held until the native model is copied out: another clone may share the target dir.
exec {lock}>"$SPINDLE_GUEST_TARGET/.native.lock"
flock "$lock"
out=$(CARGO_TARGET_DIR=$SPINDLE_GUEST_TARGET "$cargo" test --locked --no-fail-fast --workspace --all-targets 2>&1)
rc=$?
grep -E '^test |^test result|error(\[|:)|panicked' <<<"$out"
# one line per test: `test path ... ok|FAILED`
n_ok=$(grep -cE '^test .* \.\.\. ok$' <<<"$out")
n_bad=$(grep -cE '^test .* \.\.\. FAILED$' <<<"$out")
passed=$((passed + n_ok))
failed=$((failed + n_bad))
if [[ $rc -ne 0 && $n_bad -eq 0 ]]; then
  tail -40 <<<"$out"
  fail "cargo test exited $rc without a failing test (build error?)"
fi
if [[ $n_ok -lt 40 ]]; then
  fail "expected at least 40 native tests, ran $n_ok"
fi
# the native model, to compare the Wasm answers with
tmp_native=$(mktemp -d)
trap 'rm -rf "$tmp_native"' EXIT
CARGO_TARGET_DIR=$SPINDLE_GUEST_TARGET "$cargo" build -q --locked -p inference --example infer 2>&1 | tail -20
infer_native="$tmp_native/infer"
cp "$SPINDLE_GUEST_TARGET/debug/examples/infer" "$infer_native" || fail "native model (infer example) not built"
flock -u "$lock"
exec {lock}>&-

# --- 2. build ------------------------------------------------------------------------------
echo "== build"
if "$root/e2e/scripts/build-guests.sh"; then
  pass "build-guests.sh"
else
  fail "build-guests.sh"
  finish
fi
dist="$here/target/dist"

# --- 3. imports and exports -------------------------------------------------------------
echo "== imports (Spin 3.6 allow-list) and exports"
allow="$here/tests/spin-3.6-imports.txt"
http_export=wasi:http/incoming-handler@0.2.0
check() {
  local out
  out=$("$py" "$here/tests/check_imports.py" "$allow" "$@" 2>&1)
  echo "$out"
  tally "$out"
  grep -qE '^(PASS|FAIL) ' <<<"$out" || fail "check_imports.py $*: no result"
}
check "$dist/hello.wasm" --spin-toml "$here/hello/spin.toml" --export "$http_export" --require ai:inference/model
check "$dist/hello-composed.wasm" --export "$http_export"
check "$dist/kv.wasm" --spin-toml "$here/kv/spin.toml" --export "$http_export" --require fermyon:spin/key-value@2.0.0
check "$dist/inference.wasm" --export ai:inference/model --require wasi:config/store@0.2.0-draft-2024-09-27
check "$dist/config-env.wasm" --export wasi:config/store@0.2.0-draft-2024-09-27
# hello without its spin.toml dependency list: ai:inference/model is not a host interface
if "$py" "$here/tests/check_imports.py" "$allow" "$dist/hello.wasm" >/dev/null 2>&1; then
  fail "import check rejects hello.wasm's ai:inference/model when no dependency declares it"
else
  pass "import check rejects hello.wasm's ai:inference/model when no dependency declares it"
fi
# a real component importing what Spin lacks (wasi:logging, as the seed WIT did) must fail
tmp=$(mktemp -d)
mkdir -p "$tmp/wit/deps/logging"
cat >"$tmp/wit/deps/logging/logging.wit" <<'WIT'
package wasi:logging;
interface logging {
  enum level { trace, debug, info, warn, error, critical }
  log: func(level: level, context: string, message: string);
}
WIT
cat >"$tmp/wit/world.wit" <<'WIT'
package test:bad;
world bad {
  import wasi:logging/logging;
  export run: func();
}
WIT
if wasm-tools component embed --dummy "$tmp/wit" -o "$tmp/bad.core.wasm" &&
  wasm-tools component new "$tmp/bad.core.wasm" -o "$tmp/bad.wasm"; then
  bad_out=$("$py" "$here/tests/check_imports.py" "$allow" "$tmp/bad.wasm" 2>&1)
  if grep -q '^FAIL .*not provided: wasi:logging/logging' <<<"$bad_out"; then
    pass "import check rejects a component importing wasi:logging/logging"
  else
    fail "import check rejects a component importing wasi:logging/logging"
  fi
else
  fail "could not build the bad test component"
fi
rm -rf "$tmp"

# --- 4. HTTP on wasmtime serve --------------------------------------------------------
echo "== HTTP: hello-composed.wasm on $("$wasmtime" --version)"
out=$("$py" "$here/tests/http_tests.py" --wasmtime "$wasmtime" \
  --component "$dist/hello-composed.wasm" --infer-native "$infer_native" 2>&1)
echo "$out"
tally "$out"
grep -q '^http: ' <<<"$out" || fail "http_tests.py did not finish"

# hello.wasm alone needs its dependency: a host without it must refuse it, not serve it
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(timeout 60 "$wasmtime" serve -S cli --addr "127.0.0.1:$port" "$dist/hello.wasm" 2>&1)
if grep -q "ai:inference/model" <<<"$log"; then
  pass "wasmtime refuses hello.wasm without its ai:inference/model dependency"
else
  fail "wasmtime refuses hello.wasm without its ai:inference/model dependency: $log"
fi

finish

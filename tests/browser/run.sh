#!/usr/bin/env bash
# The web console in headless Chromium (see console.mjs): installs Debian's
# chromium and Node.js/npm with apt when missing and possible, installs the
# pinned playwright-core (npm ci), builds hopscope and hopscope-demo and runs
# the browser checks.
# Screenshots go to target/console-screenshots/ (or $SCREENSHOT_DIR).
#
# Exit status: that of the checks; when the browser, Node.js or the npm
# packages are missing and cannot be installed (no root, no apt, no registry):
# 1 under CI=true, else 0 with a loud SKIPPED message.
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() {
    if [[ "${CI:-}" == "true" ]]; then
        echo "browser test: cannot run: $1" >&2
        exit 1
    fi
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    echo "!! SKIPPED: the web console's browser test: $1" >&2
    echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
    exit 0
}

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        skip "${missing[*]} missing, and apt-get as root is not available to install them"
    fi
    echo "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || skip "apt-get update failed"
    apt-get install -y -qq "${missing[@]}" >/dev/null || skip "apt-get install ${missing[*]} failed"
fi

(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) || skip "npm ci (playwright-core from the npm registry) failed"
cargo build --quiet -p hopscope -p hopscope-demo
target="${CARGO_TARGET_DIR:-target}"
HOPSCOPE_BIN="${HOPSCOPE_BIN:-$target/debug/hopscope}" \
    HOPSCOPE_DEMO_BIN="${HOPSCOPE_DEMO_BIN:-$target/debug/hopscope-demo}" \
    node tests/browser/console.mjs

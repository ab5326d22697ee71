# Sourced by the .ci scripts: a Python virtualenv under target/ci-venv with the
# pinned tools of .ci/requirements.txt; sets VENV. Needs python3 with venv
# (Debian: python3-venv, installed here with apt-get when missing and possible).
VENV="$PWD/target/ci-venv"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s .ci/requirements.txt "$VENV/requirements.txt"; then
    if ! command -v python3 >/dev/null; then
        echo "python3 is required for the API and deploy/ checks" >&2
        exit 1
    fi
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing python3-venv"
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        else
            echo "python3's venv module is missing: install python3-venv" >&2
            exit 1
        fi
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r .ci/requirements.txt
    cp .ci/requirements.txt "$VENV/requirements.txt"
fi

#!/usr/bin/env bash
# Create the peer libraries' virtual environments (.venv-lightfm, .venv-recbole, .venv-cornac) for
# benchmarks/peers.py. Idempotent: an environment is rebuilt only when its requirement files change.
# Never touches the main .venv and is never run by CI. Each environment's outcome goes to
# benchmarks/work/envs/<env>.status ("ok" or the error), which peers.py shows in its tables.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
STATE=benchmarks/work/envs
mkdir -p "$STATE"
HERE=benchmarks/peers

setup() {  # setup NAME FILES... ; installs with install_NAME
    local name=$1; shift
    local venv=".venv-$name" stamp
    stamp=$(cat "$@" "$0" | sha256sum | cut -c1-16)
    if [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp" ] && [ "$(cat "$STATE/$name.status" 2>/dev/null)" = ok ]; then
        echo "== $venv up to date"
        return 0
    fi
    echo "== building $venv (log: $STATE/$name.log)"
    rm -rf "$venv"
    if "$PY" -m venv "$venv" >"$STATE/$name.log" 2>&1 \
        && "$venv/bin/python" -m pip install -q "pip<25.3" "setuptools<81" wheel >>"$STATE/$name.log" 2>&1 \
        && "install_$name" "$venv/bin/python" >>"$STATE/$name.log" 2>&1; then
        echo "$stamp" >"$venv/.stamp"
        echo ok >"$STATE/$name.status"
        echo "   ok"
    else
        local err
        err=$(grep -v "is ignored" "$STATE/$name.log" | grep -iE "error|not found|no matching" | tail -n 2 | tr '\n' ' ' | cut -c1-300)
        echo "install of $venv failed: ${err:-see $STATE/$name.log}" >"$STATE/$name.status"
        echo "   FAILED: $(cat "$STATE/$name.status")"
    fi
}

install_lightfm() {
    "$1" -m pip install -r $HERE/requirements-lightfm.txt \
        && "$1" -m pip install --no-use-pep517 lightfm==1.17 \
        && "$1" -c "import lightfm; print('lightfm', lightfm.__version__)"
}

install_recbole() {
    "$1" -m pip install -c constraints.txt -c $HERE/constraints-recbole.txt -r $HERE/requirements-recbole.txt \
        && "$1" -c "import recbole, torch; print('recbole', recbole.__version__, 'torch', torch.__version__)"
}

install_cornac() {
    "$1" -m pip install -r $HERE/requirements-cornac.txt \
        && "$1" -c "import cornac; print('cornac', cornac.__version__)"
}

only=${*:-lightfm recbole cornac}
for name in $only; do
    case $name in
        lightfm) setup lightfm $HERE/requirements-lightfm.txt ;;
        recbole) setup recbole $HERE/requirements-recbole.txt $HERE/constraints-recbole.txt constraints.txt ;;
        cornac) setup cornac $HERE/requirements-cornac.txt ;;
        *) echo "unknown environment $name (lightfm, recbole, cornac)"; exit 2 ;;
    esac
done
exit 0

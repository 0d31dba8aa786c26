#!/usr/bin/env bash
# Generate the credentials docker-compose.yml mounts: a CA, the SuperLink's TLS certificate,
# SuperNode authentication keys, the SuperNodes' Runtime API certificates and the SuperExec
# secrets, into docker/credentials/ (override with SWAPFL_CREDENTIALS_DIR). Existing files are
# kept, so running it again after adding a SuperNode only creates that node's files.
#
#   bash docker/generate-credentials.sh                 # 2 SuperNodes, hosts of the compose file
#   SUPERNODES=3 bash docker/generate-credentials.sh    # after adding supernode-3
#   bash docker/generate-credentials.sh --host my.server.example   # more SuperLink names
#
# Extra arguments go to `python -m simulations.credentials` (see --help there).
#
# The containers run as Flower's user `app` (uid 49999) and must read the private files they
# mount; run as root (sudo) and the script hands those files to uid 49999 (mode stays 0600).
# ca.key is never mounted and stays with you.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${SWAPFL_CREDENTIALS_DIR:-$repo/docker/credentials}"
supernodes="${SUPERNODES:-2}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    python=python3
    [[ -x "$repo/.venv/bin/python" ]] && python="$repo/.venv/bin/python"
fi

cd "$repo"
"$python" -m simulations.credentials --out "$out" --supernodes "$supernodes" \
    --host localhost --host 127.0.0.1 --host superlink "$@"

container_uid=49999
shopt -s nullglob
container_files=()
for file in "$out"/superlink.key "$out"/*.secret "$out"/supernode-*.key; do
    [[ -f "$file" ]] && container_files+=("$file")
done
if (( ${#container_files[@]} == 0 )); then
    exit 0  # e.g. --help
elif [[ "$(id -u)" == 0 ]]; then
    chown "$container_uid:$container_uid" "${container_files[@]}"
    echo "private files mounted by the containers now belong to uid $container_uid"
else
    echo "Linux with rootful Docker: let the containers (uid $container_uid) read their keys:"
    echo "  sudo chown $container_uid:$container_uid ${container_files[*]}"
fi

#!/usr/bin/env bash
# The node run the production way (gunicorn + gunicorn.conf.py on a fresh PostgreSQL database) against
# TorchServe 0.12, both serving the reference MLP (or the small ResNet), plain JSON data; alternated load rounds per
# concurrency with ../shared/bench/compare.sh, plus the cold start of an already stored model.
#
# usage: bench/compare_torchserve.sh [REQUESTS=3000] [ROUNDS=3] [CONCURRENCIES="1 8 32"]
# env:   SHARED_BENCH (default ../shared/bench), BENCH_PORT (default 18200), and any GRIDNODE_* knob;
#        BENCH_MODEL=cnn serves make_cnn.py's small ResNet instead of the MLP (TorchServe then runs with
#        OMP_NUM_THREADS=1, its tuned setting on two cores), prints the machine's ceiling (limit.py) first, and
#        after the rounds takes the node's share of the ceiling round by round, a limit.py run before each;
#        BENCH_NGINX=1 also runs each concurrency through nginx (deploy/nginx.conf, as scripts/serve: gunicorn's
#        Unix socket behind nginx on BENCH_PORT+1), after the direct rounds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_BENCH:-$(cd "$root/../shared/bench" && pwd)}
requests=${1:-3000} rounds=${2:-3} concurrencies=${3:-"1 8 32"}
port=${BENCH_PORT:-18200}
url="http://127.0.0.1:$port"
pg="-h 127.0.0.1 -p 5432 -U postgres"
db="gridnode_bench_$$"
work=$(mktemp -d)
gunicorn_pid="" nginx_pid=""
binds=(--bind "127.0.0.1:$port")
if [[ -n ${BENCH_NGINX:-} ]]; then
  mkdir -p "$work/run" && chmod 755 "$work" "$work/run"  # nginx's workers (www-data) reach the socket
  binds+=(--bind "unix:$work/run/gunicorn.sock")
fi

cleanup() {
  [[ -n $nginx_pid ]] && kill -QUIT "$nginx_pid" 2>/dev/null && wait "$nginx_pid" 2>/dev/null
  [[ -n $gunicorn_pid ]] && kill "$gunicorn_pid" 2>/dev/null && wait "$gunicorn_pid" 2>/dev/null
  psql $pg -q -c "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cd "$root"
./scripts/setup
psql $pg -q -c "CREATE DATABASE $db"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" GRIDNODE_DATA_DIR="$work/data"
.venv/bin/python manage.py migrate --no-input -v0
model=${BENCH_MODEL:-mlp}
case $model in
  mlp) body=grid_infer.json expected=expected.json ;;
  cnn) body=grid_infer_cnn.json expected=expected_cnn.json ;;
  *) echo "BENCH_MODEL must be mlp or cnn" >&2; exit 2 ;;
esac
.venv/bin/python "$shared/make_$model.py" "$work" >/dev/null 2>&1

start_node() {
  .venv/bin/gunicorn gridnode.wsgi "${binds[@]}" --no-control-socket >"$work/gunicorn.log" 2>&1 &
  gunicorn_pid=$!
}
stop_node() { kill "$gunicorn_pid"; wait "$gunicorn_pid" 2>/dev/null || true; gunicorn_pid=""; }
infer() { curl -s -o "$work/answer.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d @"$work/$body" "$url/model/$model"; }

start_node
for _ in $(seq 120); do curl -sf "$url/models" >/dev/null 2>&1 && break; sleep 0.5; done
curl -sf -F model_id="$model" -F model=@"$work/$model.pt" -F allow_remote_inference=true "$url/serve-model" >/dev/null
[[ $(infer) == 200 ]] || { echo "inference failed: $(cat "$work/answer.json")"; exit 1; }
.venv/bin/python - "$work/answer.json" "$work/$expected" <<'PY'
import json, sys
got = json.load(open(sys.argv[1]))["prediction"]
want = json.load(open(sys.argv[2]))
err = max(abs(a - b) for a, b in zip(got[0], want[0]))
assert err < 1e-5, f"prediction differs from expected.json by {err}"
print(f"prediction matches expected.json (max abs error {err:.1e})")
PY

# Cold start: a new server process, the model already stored, until its first served inference.
stop_node
begin=$(date +%s.%N)
start_node
until [[ $(infer 2>/dev/null) == 200 ]]; do sleep 0.02; done
echo "cold_start_s=$(.venv/bin/python -c "print(round($(date +%s.%N) - $begin, 2))")  (process start to first served inference)"

echo "node: $(grep -m1 -o 'Using worker: [^"]*' "$work/gunicorn.log"), $(grep -c 'Booting worker' "$work/gunicorn.log") workers"
if [[ $model == cnn ]]; then
  .venv/bin/python "$shared/limit.py" "$work/cnn.pt" "$work/$body"
  export PEER_MODEL=cnn OMP_NUM_THREADS=1  # for TorchServe only: the node is already running
fi
for c in $concurrencies; do
  echo "== concurrency $c"
  "$shared/compare.sh" "$url/model/$model" "$work/$body" "$c" "$requests" "$rounds"
done
if [[ $model == cnn ]]; then
  # The machine's speed drifts by 20% within a run, so the node's share of the ceiling is taken round by round,
  # each node round right after a ceiling measurement, at the last concurrency.
  c=${concurrencies##* } shares=()
  for r in $(seq "$rounds"); do
    ceiling=$(.venv/bin/python "$shared/limit.py" "$work/cnn.pt" "$work/$body" | grep -o 'limit_ips=[0-9.]*' | cut -d= -f2)
    line=$("$shared/load.sh" "$url/model/$model" "$work/$body" "$c" "$requests")
    rps=$(grep -o 'rps=[0-9.]*' <<<"$line" | cut -d= -f2)
    share=$(.venv/bin/python -c "print(round($rps / $ceiling, 3))")
    echo "ceiling round $r: limit_ips=$ceiling node $line share=$share"
    shares+=("$share")
  done
  echo "share of the ceiling at concurrency $c (median): $(printf '%s\n' "${shares[@]}" | sort -n | sed -n "$(((rounds + 1) / 2))p")"
fi
if [[ -n ${BENCH_NGINX:-} ]]; then
  GRIDNODE_PUBLIC_BIND="127.0.0.1:$((port + 1))" .venv/bin/python deploy/render_nginx_conf.py "$work/run" \
    "unix:$work/run/gunicorn.sock" >"$work/run/nginx.conf"
  PATH="$PATH:/usr/sbin" nginx -e stderr -c "$work/run/nginx.conf" -g 'daemon off;' &
  nginx_pid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((port + 1))/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  for c in $concurrencies; do
    echo "== through nginx, concurrency $c"
    "$shared/compare.sh" "http://127.0.0.1:$((port + 1))/model/$model" "$work/$body" "$c" "$requests" "$rounds"
  done
fi

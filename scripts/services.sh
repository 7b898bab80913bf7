#!/usr/bin/env bash
# Test services on loopback: a Redis server, a 3-master Redis Cluster and a ZooKeeper, each on
# free ports, in a private state directory. Sourced by scripts/test-all.sh; usable by hand:
#
#   source scripts/services.sh && services_start /tmp/mpush-svc && env | grep MPUSH_TEST
#   services_stop /tmp/mpush-svc
#
# Exports MPUSH_TEST_REDIS (host:port), MPUSH_TEST_REDIS_CLUSTER (host:port,...) and
# MPUSH_TEST_ZK (host:port), and MPUSH_TEST_CHROMIUM (the headless browser of
# tests/demo_page.rs). Debian's redis-server, zookeeper and chromium packages are installed if
# missing.

services_install() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  [ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
  command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
  # Headless browser for the demo page test (tests/demo_page.rs).
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# A free TCP port on 127.0.0.1 (asks the kernel).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    # The probe connection lives and dies in the subshell; nothing to close here (an
    # `exec 2>/dev/null` in this shell would silence its stderr for good).
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "service on $1:$2 did not come up within $3 s" >&2
  return 1
}

start_redis() { # dir port [extra args...]
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@"
  wait_port 127.0.0.1 "$port" 20
}

services_start() { # state-dir
  local root=$1
  mkdir -p "$root"
  services_install

  local rport; rport=$(free_port)
  start_redis "$root/redis-single" "$rport" || return 1
  export MPUSH_TEST_REDIS="127.0.0.1:$rport"

  local nodes=() p
  for i in 1 2 3; do
    p=$(free_port)
    # Cluster bus port is port+10000: keep the data port below 55535.
    while [ "$p" -gt 55000 ]; do p=$(free_port); done
    start_redis "$root/redis-cluster-$i" "$p" --cluster-enabled yes \
      --cluster-config-file "$root/redis-cluster-$i/nodes.conf" --cluster-node-timeout 3000 || return 1
    nodes+=("127.0.0.1:$p")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$root/cluster-create.log" 2>&1 || {
    cat "$root/cluster-create.log" >&2; return 1; }
  local deadline=$((SECONDS + 20))
  until redis-cli -p "${nodes[0]##*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; do
    [ $SECONDS -ge $deadline ] && { echo "redis cluster not ok" >&2; return 1; }
    sleep 0.2
  done
  export MPUSH_TEST_REDIS_CLUSTER
  MPUSH_TEST_REDIS_CLUSTER=$(IFS=,; echo "${nodes[*]}")

  local zport; zport=$(free_port)
  mkdir -p "$root/zk/data"
  cat >"$root/zk/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$root/zk/data
clientPort=$zport
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok,stat
CFG
  cp /etc/zookeeper/conf/log4j.properties "$root/zk/" 2>/dev/null || true
  # Only zookeeper.jar and its own deps on the classpath: /usr/share/java/* has clashing slf4j bindings.
  local cp="$root/zk:/usr/share/java/zookeeper.jar"
  for j in slf4j-api log4j-1.2 slf4j-log4j12 netty jline commons-cli; do
    for f in /usr/share/java/$j*.jar; do [ -f "$f" ] && cp="$cp:$f"; done
  done
  nohup java -Xmx256m -Dzookeeper.admin.enableServer=false -cp "$cp" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$root/zk/zoo.cfg" >"$root/zk/zk.log" 2>&1 &
  echo $! >"$root/zk/zk.pid"
  wait_port 127.0.0.1 "$zport" 60 || { tail -30 "$root/zk/zk.log" >&2; return 1; }
  export MPUSH_TEST_ZK="127.0.0.1:$zport"
  MPUSH_TEST_CHROMIUM=$(command -v chromium) || { echo "chromium is not installed" >&2; return 1; }
  export MPUSH_TEST_CHROMIUM
  echo "services: redis=$MPUSH_TEST_REDIS cluster=$MPUSH_TEST_REDIS_CLUSTER zk=$MPUSH_TEST_ZK chromium=$MPUSH_TEST_CHROMIUM"
}

services_stop() { # state-dir
  local root=$1 f
  for f in "$root"/redis-*/redis.pid "$root"/zk/zk.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null
  done
  local pid deadline=$((SECONDS + 5))
  for f in "$root"/redis-*/redis.pid "$root"/zk/zk.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  return 0
}

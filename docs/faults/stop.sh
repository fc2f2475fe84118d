#!/bin/bash
# usage: stop.sh BINARY LABEL — two msg_servers; SIGSTOP the one login_server offers, then
# asks discovery every 0.5 s for 40 s and prints when the frozen one was last offered.
# See docs/benchmarks.md, "Faults".
set -u
BIN=$1; LABEL=$2; cd "$(dirname "$0")"
rm -rf data; mkdir -p data
$BIN user add-many --prefix u --count 4 --password 123456 --data-dir data > /dev/null
export TEAMTALK_LOG=warn
$BIN db-proxy-server --config db.conf > /dev/null 2>&1 & DB=$!
$BIN route-server --config route.conf > /dev/null 2>&1 & RT=$!
$BIN login-server --config login.conf > /dev/null 2>&1 & LG=$!
sleep 1
$BIN msg-server --config msg.conf > /dev/null 2>&1 & MS=$!
sleep 2
$BIN msg-server --config msg2.conf > /dev/null 2>&1 & MS2=$!
sleep 3
curl -s http://127.0.0.1:31080/msg_server | grep '"port"'
kill -STOP $MS
start=$(date +%s.%N); last=none
for i in $(seq 1 80); do
  if curl -s -m 2 http://127.0.0.1:31080/msg_server | grep -q '"31000"'; then last=$(echo "$(date +%s.%N) - $start" | bc); fi
  sleep 0.5
done
echo "$LABEL: the frozen msg_server was last offered ${last} s after SIGSTOP"
kill -CONT $MS; kill $MS $MS2 $LG $RT $DB; wait 2>/dev/null

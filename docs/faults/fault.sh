#!/bin/bash
# usage: fault.sh TEAMTALK_BINARY LABEL [db|msg]
# One process per role on the embedded SQLite store (the .conf files beside this script);
# a 60 s `teamtalk-bench chat` run at 200 msgs/s (12 pairs); at t = 20 s and t = 40 s the
# db_proxy (default) or the msg_server is killed with SIGKILL and started again 1 s later.
# BENCH names the teamtalk-bench binary (default: on PATH). See docs/benchmarks.md, "Faults".
set -u
BIN=$1; LABEL=$2; ROLE=${3:-db}; cd "$(dirname "$0")"
rm -rf data; mkdir -p data
$BIN user add-many --prefix u --count 40 --password 123456 --data-dir data > /dev/null
export TEAMTALK_LOG=warn
$BIN db-proxy-server --config db.conf > db-$LABEL.log 2>&1 & DB=$!
$BIN route-server --config route.conf > route-$LABEL.log 2>&1 & RT=$!
$BIN login-server --config login.conf > login-$LABEL.log 2>&1 & LG=$!
sleep 1
$BIN msg-server --config msg.conf > msg-$LABEL.log 2>&1 & MS=$!
sleep 3
${BENCH:-teamtalk-bench} chat --login-url http://127.0.0.1:31080 --count 40 --password 123456 \
  --rate 200 --duration 60 --json bench-$LABEL.json > bench-$LABEL.txt 2>&1 & B=$!
for t in 20 40; do
  sleep 20
  if [ "$ROLE" = msg ]; then
    kill -9 $MS; sleep 1
    $BIN msg-server --config msg.conf >> msg-$LABEL.log 2>&1 & MS=$!
  else
    kill -9 $DB; sleep 1
    $BIN db-proxy-server --config db.conf >> db-$LABEL.log 2>&1 & DB=$!
  fi
done
wait $B
cat bench-$LABEL.txt
kill $MS $LG $RT $DB; wait 2>/dev/null

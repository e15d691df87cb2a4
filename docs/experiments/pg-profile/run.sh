#!/usr/bin/env bash
# One node on PostgreSQL under `bench throughput --messages N` or `bench latency
# --rate ${RATE:-1000} --duration 10`, with the node's and PostgreSQL's CPU per message
# (from /proc) and pg_stat_statements' top statements (LIMIT=…).
# usage: run.sh throughput|latency HOOKLINE_BINARY NEW_DBNAME MESSAGES
#   (latency: MESSAGES is what the run sends, RATE × 10)
# needs: PostgreSQL on 127.0.0.1:55433, user postgres (trust), started with
#   -c shared_preload_libraries=pg_stat_statements (see BENCHMARKS.md, issue 21)
set -u
MODE=$1; BIN=$2; DB=$3; N=$4; PORT=55433
psql -h 127.0.0.1 -p $PORT -U postgres -qc "create database $DB" >/dev/null
psql -h 127.0.0.1 -p $PORT -U postgres -d $DB -qc "create extension if not exists pg_stat_statements" >/dev/null
rm -rf /tmp/pgm-node; mkdir -p /tmp/pgm-node
$BIN serve --database-url postgres://postgres@127.0.0.1:$PORT/$DB --allow-private-targets --listen 127.0.0.1:18081 --admin-token tok --data-dir /tmp/pgm-node --log warn > /tmp/pgm-node.log 2>&1 &
NODE=$!
sleep 3
PM=$(psql -h 127.0.0.1 -p $PORT -U postgres -Atc "select pid from pg_stat_activity where backend_type = 'checkpointer'" | xargs -I{} awk '{print $4}' /proc/{}/stat)
pgcpu() { local t=0; for p in $PM $(pgrep -P $PM); do s=($(cut -d' ' -f14,15 /proc/$p/stat 2>/dev/null)); t=$((t + ${s[0]:-0} + ${s[1]:-0})); done; c=($(cut -d' ' -f16,17 /proc/$PM/stat)); echo $((t + c[0] + c[1])); }
nodecpu() { s=($(cut -d' ' -f14,15 /proc/$NODE/stat)); echo $((s[0]+s[1])); }
psql -h 127.0.0.1 -p $PORT -U postgres -d $DB -qc "select pg_stat_statements_reset()" >/dev/null
P0=$(pgcpu); N0=$(nodecpu)
case $MODE in
    throughput) $BIN bench throughput --url http://127.0.0.1:18081 --token tok --messages $N 2>&1 \
        | grep -E "\(a\) loopback: requests|\(b\) delivery: (messages|end)" ;;
    latency) $BIN bench latency --url http://127.0.0.1:18081 --token tok --rate ${RATE:-1000} --duration 10 2>&1 \
        | grep -E "latency: (ack|end)" ;;
esac
P1=$(pgcpu); N1=$(nodecpu)
HZ=$(getconf CLK_TCK)
echo "postgres CPU per message: $(( (P1-P0) * 1000000 / HZ / N )) us; node CPU per message: $(( (N1-N0) * 1000000 / HZ / N )) us (includes the (a) run: node idle then)"
psql -h 127.0.0.1 -p $PORT -U postgres -d $DB -c "select calls, round((total_exec_time/$N*1000)::numeric,1) us_per_msg, round(calls::numeric/$N,3) per_msg, left(regexp_replace(query,'\s+',' ','g'),70) q from pg_stat_statements where dbid=(select oid from pg_database where datname='$DB') order by total_exec_time desc limit ${LIMIT:-8}"
kill $NODE; wait $NODE 2>/dev/null

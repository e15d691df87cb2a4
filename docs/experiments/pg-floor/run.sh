#!/usr/bin/env bash
# The floor of Hookline's PostgreSQL schema: the writes one message needs,
# run by pgbench with nothing of Hookline around them (issue 21, BENCHMARKS.md).
#
# usage: run.sh HOOKLINE_BINARY [SECONDS] [CLIENTS] [BATCH] [CLAIM=1|0] [LOCK=1|0]
#   CLAIM=0: deliveries leased as they are inserted; LOCK=0: no locking read (see lifecycle.sql)
# needs: a PostgreSQL on $PGPORT (default 55433) at 127.0.0.1, user postgres, pgbench;
# prints PostgreSQL's CPU (all of the cluster's processes, from /proc) per settled message.
set -eu
BIN=$1; T=${2:-20}; C=${3:-4}; N=${4:-32}; CLAIM=${5:-1}; LOCK=${6:-1}; PORT=${PGPORT:-55433}
SCRIPT=$(dirname "$0")/lifecycle.sql
DB=floor_$$
psql -h 127.0.0.1 -p $PORT -U postgres -qc "create database $DB" >/dev/null
"$BIN" migrate --database-url postgres://postgres@127.0.0.1:$PORT/$DB >/dev/null
PM=$(psql -h 127.0.0.1 -p $PORT -U postgres -Atc "select pid from pg_stat_activity where backend_type = 'checkpointer'" | xargs -I{} awk '{print $4}' /proc/{}/stat)
pgcpu() { local t=0; for p in $PM $(pgrep -P $PM); do s=($(cut -d' ' -f14,15 /proc/$p/stat 2>/dev/null)); t=$((t + ${s[0]:-0} + ${s[1]:-0})); done; c=($(cut -d' ' -f16,17 /proc/$PM/stat)); echo $((t + c[0] + c[1])); }
P0=$(pgcpu)
pgbench -h 127.0.0.1 -p $PORT -U postgres -n -c $C -j 2 -T $T -D n=$N -D claim=$CLAIM -D lock=$LOCK -f "$SCRIPT" $DB >/dev/null
P1=$(pgcpu)
MSGS=$(psql -h 127.0.0.1 -p $PORT -U postgres -d $DB -Atc "select count(*) from attempts")
echo "batch=$N claim=$CLAIM lock=$LOCK messages_settled=$MSGS msgs/s=$((MSGS / T)) postgres_cpu_us_per_msg=$(( (P1-P0) * 1000000 / $(getconf CLK_TCK) / MSGS ))"
psql -h 127.0.0.1 -p $PORT -U postgres -qc "drop database $DB" >/dev/null

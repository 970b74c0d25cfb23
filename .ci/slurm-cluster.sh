#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, from Debian's slurm-wlm and munge, for the
# tests that submit to a real Slurm (tests/test_slurm_cluster.py). As root:
#
#     .ci/slurm-cluster.sh          # start munged, slurmctld, slurmd; wait until the node is idle
#     .ci/slurm-cluster.sh stop     # stop the daemons this script started
#
# The node is this machine (its CPUs and memory as `slurmd -C` reports them), in one
# partition `debug`; no accounting (sacct does not work, as on many small clusters), no
# cgroups (proctrack/linuxproc, task/none), short timeouts. Daemons are started directly
# (no systemd). A second call while the node is up does nothing. An /etc/slurm/slurm.conf
# that this script did not write is never touched. Any failure: one line on stderr, exit 1.
set -uo pipefail

MARK="# written by AutoDO .ci/slurm-cluster.sh"
CONF=/etc/slurm/slurm.conf
STATE=/var/spool/autodo-slurm
LOGS=/var/log/autodo-slurm

fail() { echo "slurm-cluster.sh: $*" >&2; exit 1; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -1; }

up() {
  case "$(node_state)" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

ours() { [ -f "$CONF" ] && grep -qxF "$MARK" "$CONF"; }

stop() {
  ours || fail "$CONF was not written by this script; not stopping anything"
  for daemon in slurmd slurmctld; do
    [ -f "$STATE/$daemon.pid" ] && kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null
  done
  return 0
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi
[ "$#" -eq 0 ] || fail "usage: $0 [stop]"

for tool in munged munge unmunge slurmctld slurmd sinfo scontrol; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] \
    || fail "$tool not found: apt-get install -y slurm-wlm munge"
done
export PATH="$PATH:/usr/sbin"

if ours && up; then exit 0; fi
[ "$(id -u)" = "0" ] || fail "needs root (it writes $CONF and starts the daemons)"
[ -f "$CONF" ] && ! ours && fail "$CONF exists and was not written by this script; not touching it"

# ---- munge: a key, and munged running as the munge user
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  key=/etc/munge/munge.key
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s "$key" ]; then
    mungekey --create --keyfile="$key" 2>/dev/null \
      || dd if=/dev/urandom of="$key" bs=1 count=1024 status=none || fail "cannot create $key"
  fi
  chown munge:munge "$key" && chmod 0400 "$key"
  runuser -u munge -- munged >/dev/null 2>&1 || fail "munged did not start (see /var/log/munge/munged.log)"
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munge does not work after starting munged"
fi

# ---- slurm.conf: this machine as the only node, as slurmd sees it
node=$(slurmd -C 2>/dev/null | head -1)
case "$node" in NodeName=*) ;; *) fail "slurmd -C did not describe this machine: $node" ;; esac
host=$(hostname -s)
install -d -m 0755 "$STATE" "$STATE/ctld" "$STATE/d" "$LOGS" /etc/slurm
cat > "$CONF.tmp" <<EOF
$MARK
ClusterName=autodo
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldTimeout=10
SlurmdTimeout=10
MessageTimeout=10
InactiveLimit=0
KillWait=30
MinJobAge=60
Waittime=0
EOF
mv "$CONF.tmp" "$CONF"

# ---- the daemons: a running one is kept (it re-reads the file), a missing one started
if scontrol ping 2>/dev/null | grep -q "is UP"; then
  scontrol reconfigure >/dev/null 2>&1
else
  # -c: a fresh controller; jobs of an earlier, killed cluster are not carried over
  slurmctld -c >/dev/null 2>&1 || fail "slurmctld did not start (see $LOGS/slurmctld.log)"
fi
if ! { [ -f "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null; }; then
  slurmd >/dev/null 2>&1 || fail "slurmd did not start (see $LOGS/slurmd.log)"
fi

for _ in $(seq 60); do
  up && exit 0
  case "$(node_state)" in
    down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 ;;
  esac
  sleep 1
done
fail "node $host is '$(node_state)', not idle, 60 s after starting the daemons (see $LOGS/)"

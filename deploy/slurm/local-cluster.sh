#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying `sweeps run --launcher slurm`
# and for its tests: munge, slurmctld and slurmd from Debian's packages, started without
# systemd, one node (this host) with 2 CPUs and 2 fake GPUs (gres.conf points them at
# /dev/null and /dev/zero: Slurm hands out CUDA_VISIBLE_DEVICES 0 and 1).
#
#   deploy/slurm/local-cluster.sh up       install if missing, configure, start, wait idle
#   deploy/slurm/local-cluster.sh down     stop the daemons (packages and configs stay)
#   deploy/slurm/local-cluster.sh status   the node as sinfo sees it
#
# Runs as root (apt-get, /etc/slurm, the daemons). Idempotent: `up` on a running cluster
# only checks it. It never overwrites a slurm.conf it did not write.
set -euo pipefail

NODE=$(hostname -s)
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by sweeps deploy/slurm/local-cluster.sh"
RUN=/run/slurm
LOGS=/var/log/slurm
LOCK=/run/lock/sweeps-local-slurm.lock
CPUS=${SWEEPS_SLURM_CPUS:-2}
WAIT_S=${SWEEPS_SLURM_WAIT_S:-120}

die() { echo "local-cluster: $*" >&2; exit 1; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v munged >/dev/null && command -v sbatch >/dev/null && return
  [ "$(id -u)" -eq 0 ] || die "Slurm is not installed and this is not root: run as root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # No service is started by the packages' scripts: the daemons are started below.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.sweeps
  chmod +x /usr/sbin/policy-rc.d.sweeps
  local had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ "$had_policy" -eq 1 ] || cp /usr/sbin/policy-rc.d.sweeps /usr/sbin/policy-rc.d
  apt-get install -y -qq munge slurm-wlm >/dev/null || {
    [ "$had_policy" -eq 1 ] || rm -f /usr/sbin/policy-rc.d
    die "apt-get install munge slurm-wlm failed"
  }
  [ "$had_policy" -eq 1 ] || rm -f /usr/sbin/policy-rc.d
  rm -f /usr/sbin/policy-rc.d.sweeps
}

write_config() {
  # Prints "changed" when a file was (re)written.
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching it"
  fi
  mkdir -p "$CONF_DIR"
  local slurm gres
  slurm=$(cat <<CONF
$MARK
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=4000 Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
)
  gres=$(printf '%s\nNodeName=%s Name=gpu File=/dev/null Count=1\nNodeName=%s Name=gpu File=/dev/zero Count=1\n' \
    "$MARK" "$NODE" "$NODE")
  local changed=0
  if [ "$(cat "$CONF" 2>/dev/null)" != "$slurm" ]; then
    printf '%s\n' "$slurm" >"$CONF"; changed=1
  fi
  if [ "$(cat "$CONF_DIR/gres.conf" 2>/dev/null)" != "$gres" ]; then
    printf '%s\n' "$gres" >"$CONF_DIR/gres.conf"; changed=1
  fi
  [ "$changed" -eq 0 ] || echo changed
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  [ -s /etc/munge/munge.key ] || {
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
    chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
  }
  mkdir -p /run/munge && chown munge:munge /run/munge
  su -s /bin/sh munge -c /usr/sbin/munged 9>&-  # the daemon keeps no hold of the lock
  munge -n | unmunge >/dev/null || die "munged does not answer"
}

stop_daemons() {
  local pidfile pid
  for pidfile in "$RUN/slurmd.pid" "$RUN/slurmctld.pid"; do
    if alive "$pidfile"; then
      pid=$(cat "$pidfile"); kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
  done
}

start_daemons() {
  mkdir -p "$RUN" "$LOGS" /var/spool/slurmctld /var/spool/slurmd
  alive "$RUN/slurmctld.pid" || /usr/sbin/slurmctld 9>&-
  alive "$RUN/slurmd.pid" || /usr/sbin/slurmd 9>&-
}

wait_idle() {
  local state=""
  for _ in $(seq $((WAIT_S * 2))); do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1 || true)
    case "$state" in
      idle|mix|alloc|comp) return ;;
      down*|drain*|drng*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.5
  done
  tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
  die "node $NODE is not up after ${WAIT_S}s (state: ${state:-none}); logs above"
}

up() {
  install_packages
  if [ "$(write_config)" = changed ]; then stop_daemons; fi
  start_munge
  start_daemons
  wait_idle
  sinfo -h -n "$NODE" -o "local-cluster: node %n %t, %c CPUs, %G, partition %P"
}

down() {
  stop_daemons
  if alive /run/munge/munged.pid; then kill "$(cat /run/munge/munged.pid)"; fi
  echo "local-cluster: stopped"
}

mkdir -p "$(dirname "$LOCK")"
exec 9>"$LOCK"
flock 9  # one `up` or `down` at a time (test processes start it in parallel)
case "${1:-}" in
  up) up ;;
  down) down ;;
  status) sinfo -N -o "%N %t %c %G %P" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

#!/bin/sh
# Creates the cgroup v1 pool that oyster-serverless runs each workerd in: COUNT cgroups named
# ${CGROUP_PREFIX}1..${CGROUP_PREFIX}COUNT in both the memory and the cpu hierarchy, and in the
# cpuacct hierarchy when it is mounted (it counts each invocation's CPU time).
#
#   sudo ./cgroupv1_setup.sh [COUNT] [MEMORY] [CPU_PERCENT]
#
#   COUNT        cgroups in the pool (default 20): at most this many requests run at once
#   MEMORY       memory limit of each, e.g. 100M or 1G (default 100M); workerd alone uses ~50M
#   CPU_PERCENT  CPU cap of each, in percent of one core (default 100); 5 makes a workerd start
#                take over half a second
#
# Environment: CGROUP_ROOT (default /sys/fs/cgroup), CGROUP_PREFIX (default workerd).
# Safe to run again: existing cgroups get the new limits.
set -eu

count=${1:-20}
memory=${2:-100M}
cpu_percent=${3:-100}
root=${CGROUP_ROOT:-/sys/fs/cgroup}
prefix=${CGROUP_PREFIX:-workerd}
period_us=100000

fail() { echo "cgroupv1_setup.sh: $*" >&2; exit 1; }

case $count in '' | *[!0-9]* | 0) fail "COUNT must be a positive integer, got '$count'" ;; esac
case $memory in '' | *[!0-9KMGkmg]* | [!0-9]*) fail "MEMORY must be bytes with an optional K/M/G suffix, got '$memory'" ;; esac
case $cpu_percent in '' | *[!0-9]* | 0) fail "CPU_PERCENT must be a positive integer, got '$cpu_percent'" ;; esac
case $prefix in '' | *[!A-Za-z0-9_.-]*) fail "CGROUP_PREFIX must be letters, digits, _ . or -, got '$prefix'" ;; esac
[ "$(id -u)" -eq 0 ] || fail "must run as root (it writes under $root)"
for controller in memory cpu; do
  [ -f "$root/$controller/cgroup.procs" ] || fail "no cgroup v1 $controller controller mounted at $root/$controller (on a cgroup v2 machine use cgroupv2_setup.sh)"
done

i=1
while [ "$i" -le "$count" ]; do
  name=$prefix$i
  mkdir -p "$root/memory/$name" "$root/cpu/$name"
  if [ -f "$root/cpuacct/cgroup.procs" ]; then mkdir -p "$root/cpuacct/$name"; fi
  echo "$memory" > "$root/memory/$name/memory.limit_in_bytes"
  # Without swap accounting a process could page out past its limit instead of being stopped.
  if [ -f "$root/memory/$name/memory.memsw.limit_in_bytes" ]; then
    echo "$memory" > "$root/memory/$name/memory.memsw.limit_in_bytes"
  fi
  echo "$period_us" > "$root/cpu/$name/cpu.cfs_period_us"
  echo $((cpu_percent * period_us / 100)) > "$root/cpu/$name/cpu.cfs_quota_us"
  i=$((i + 1))
done
echo "cgroup v1 pool ready: ${prefix}1..${prefix}${count}, memory $memory, cpu ${cpu_percent}% of one core each"

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

# The settings and their checks, shared with cgroupv2_setup.sh; it sits beside this script.
. "$(dirname "$0")/cgroup_setup_settings.sh"
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

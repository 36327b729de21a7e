#!/bin/sh
# Creates the cgroup v2 pool that oyster-serverless runs each workerd in: COUNT cgroups named
# ${CGROUP_PREFIX}1..${CGROUP_PREFIX}COUNT directly under the cgroup root, with the memory and
# cpu controllers enabled.
#
#   sudo ./cgroupv2_setup.sh [COUNT] [MEMORY] [CPU_PERCENT]
#
#   COUNT        cgroups in the pool (default 20): at most this many requests run at once
#   MEMORY       memory limit of each, e.g. 100M or 1G (default 100M); workerd alone uses ~50M
#   CPU_PERCENT  CPU cap of each, in percent of one core (default 100); 5 makes a workerd start
#                take over half a second
#
# Environment: CGROUP_ROOT (default /sys/fs/cgroup), CGROUP_PREFIX (default workerd).
# Safe to run again: existing cgroups get the new limits.
set -eu

# The settings and their checks, shared with cgroupv1_setup.sh; it sits beside this script.
. "$(dirname "$0")/cgroup_setup_settings.sh"
[ -f "$root/cgroup.controllers" ] || fail "no cgroup v2 hierarchy at $root (on a cgroup v1 machine use cgroupv1_setup.sh)"
# Only a cgroup below the hierarchy's root has a cgroup.type; such a CGROUP_ROOT (a delegated
# subtree) has just the controllers its own parent passes on to it.
parent=$(dirname "$root")
for controller in memory cpu; do
  grep -qw "$controller" "$root/cgroup.controllers" && continue
  [ -f "$root/cgroup.type" ] && grep -qw "$controller" "$parent/cgroup.controllers" &&
    fail "$parent does not delegate the $controller controller to $root: echo +$controller > $parent/cgroup.subtree_control"
  fail "the cgroup v2 hierarchy at $root has no $controller controller"
done

# Children only get the controllers their parent delegates. cgroup v2 lets a cgroup below the root
# either hold processes or delegate controllers, not both ("no internal processes"): the kernel
# refuses the write with EBUSY, which the shell reports only as an I/O error.
if ! { echo "+memory +cpu" > "$root/cgroup.subtree_control"; } 2>/dev/null; then
  held=$(tr '\n' ' ' < "$root/cgroup.procs")
  held=${held% }
  [ -n "$held" ] && fail "cannot delegate memory and cpu from $root: it holds processes ($held), and cgroup v2 lets a cgroup below the root either hold processes or delegate controllers; move them into a child cgroup, or choose another CGROUP_ROOT"
  fail "cannot enable the memory and cpu controllers in $root/cgroup.subtree_control"
fi

i=1
while [ "$i" -le "$count" ]; do
  dir=$root/$prefix$i
  mkdir -p "$dir"
  # Each pool cgroup gets the service's standby, and v2 lets a process join only a cgroup that
  # passes no controllers on to cgroups below it (EBUSY otherwise): the service would still hand
  # such a cgroup out, and fail every request it got.
  passed_on=$(cat "$dir/cgroup.subtree_control" 2>/dev/null || true)
  if [ -n "$passed_on" ]; then
    undo=$(printf ' -%s' $passed_on)
    fail "$dir passes controllers ($passed_on) on to the cgroups below it, so no process can join it: echo '${undo# }' > $dir/cgroup.subtree_control, or choose another CGROUP_PREFIX"
  fi
  echo "$memory" > "$dir/memory.max"
  # Without this a process could page out past its limit instead of being stopped.
  if [ -f "$dir/memory.swap.max" ]; then echo 0 > "$dir/memory.swap.max"; fi
  echo "$((cpu_percent * period_us / 100)) $period_us" > "$dir/cpu.max"
  i=$((i + 1))
done
echo "cgroup v2 pool ready: ${prefix}1..${prefix}${count}, memory $memory, cpu ${cpu_percent}% of one core each"

# Sourced by cgroupv1_setup.sh and cgroupv2_setup.sh, which take the same settings (see either's
# header): reads them from the arguments and the environment, and refuses bad ones before either
# script makes anything. Sets count, memory, cpu_percent, root, prefix and period_us, and fail.

count=${1:-20}
memory=${2:-100M}
cpu_percent=${3:-100}
root=${CGROUP_ROOT:-/sys/fs/cgroup}
prefix=${CGROUP_PREFIX:-workerd}
period_us=100000

# Names the script that was run, not this file.
fail() { echo "${0##*/}: $*" >&2; exit 1; }

case $count in '' | *[!0-9]* | 0) fail "COUNT must be a positive integer, got '$count'" ;; esac
case $memory in '' | *[!0-9KMGkmg]* | [!0-9]*) fail "MEMORY must be bytes with an optional K/M/G suffix, got '$memory'" ;; esac
case $cpu_percent in '' | *[!0-9]* | 0) fail "CPU_PERCENT must be a positive integer, got '$cpu_percent'" ;; esac
case $prefix in '' | *[!A-Za-z0-9_.-]*) fail "CGROUP_PREFIX must be letters, digits, _ . or -, got '$prefix'" ;; esac
[ "$(id -u)" -eq 0 ] || fail "must run as root (it writes under $root)"

#!/bin/sh
# The enclave image's start command: creates the cgroup pool for whichever cgroup version the
# enclave's kernel runs, then hands over to supervisord.
set -eu
cd /app
root=${CGROUP_ROOT:-/sys/fs/cgroup}
if grep -qw memory "$root/cgroup.controllers" 2>/dev/null; then
  ./cgroupv2_setup.sh "${POOL_SIZE:-20}" "${POOL_MEMORY:-100M}" "${POOL_CPU_PERCENT:-100}"
else
  ./cgroupv1_setup.sh "${POOL_SIZE:-20}" "${POOL_MEMORY:-100M}" "${POOL_CPU_PERCENT:-100}"
fi
exec supervisord -c /app/supervisord.conf

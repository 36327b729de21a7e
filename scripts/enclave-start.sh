#!/bin/sh
# The enclave image's start command: creates the cgroup pool for whichever cgroup version the
# enclave's kernel runs, generates the enclave's key for the attestation server, then hands over
# to supervisord. Arguments are passed on to supervisord.
#
# Environment (all optional):
#   POOL_SIZE, POOL_MEMORY, POOL_CPU_PERCENT  the pool's COUNT, MEMORY and CPU_PERCENT (20, 100M, 100)
#   CGROUP_ROOT, CGROUP_PREFIX                where and under which name the pool is made; the
#                                             service reads the same two
#   OYSTER_ENCLAVE_PROGRAMS, OYSTER_EXTRA_PROGRAMS  see supervisord.conf; the enclave's values
#                                             (true, none) unless set
set -eu

# The built service, supervisord.conf and the setup scripts sit together: /app in the image.
app=$(cd "$(dirname "$0")/.." && pwd)
cd "$app"

export OYSTER_ENCLAVE_PROGRAMS="${OYSTER_ENCLAVE_PROGRAMS:-true}"
export OYSTER_EXTRA_PROGRAMS="${OYSTER_EXTRA_PROGRAMS:-}"

# Detected, not assumed: the same test the service makes (v2 only if its unified hierarchy has the
# memory controller).
root=${CGROUP_ROOT:-/sys/fs/cgroup}
if grep -qw memory "$root/cgroup.controllers" 2>/dev/null; then
  setup=./cgroupv2_setup.sh
else
  setup=./cgroupv1_setup.sh
fi
"$setup" "${POOL_SIZE:-20}" "${POOL_MEMORY:-100M}" "${POOL_CPU_PERCENT:-100}"

# The attestation server vouches for a key made inside this enclave, at every start, so its secret
# half never exists anywhere else. The enclave's own programs are where the image puts them.
if [ "$OYSTER_ENCLAVE_PROGRAMS" = true ]; then
  /app/keygen --secret /app/id.sec --public /app/id.pub
fi

exec supervisord -c "$app/supervisord.conf" "$@"

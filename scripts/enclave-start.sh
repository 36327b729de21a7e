#!/bin/sh
# The enclave image's start command: creates the cgroup pool for whichever cgroup version the
# enclave's kernel runs, generates the enclave's signing key, then hands over to supervisord.
# Arguments are passed on to supervisord.
#
# Environment (all optional):
#   POOL_SIZE, POOL_MEMORY, POOL_CPU_PERCENT  the pool's COUNT, MEMORY and CPU_PERCENT (20, 100M, 100)
#   CGROUP_ROOT, CGROUP_PREFIX                where and under which name the pool is made; the
#                                             service reads the same two
#   OYSTER_ENCLAVE_PROGRAMS, OYSTER_EXTRA_PROGRAMS  see supervisord.conf; the enclave's values
#                                             (true, none) unless set
#   SIGNER_KEY_PATH, SIGNER_PUBLIC_KEY_PATH   where the new key's secret and public halves go
#                                             (/app/id.sec, /app/id.pub)
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

# The signing key, made inside this enclave at every start so its secret half exists nowhere else:
# the secret where the service reads it, the public key (x || y) where an attestation server that
# reads a file takes it from. The service asks the attestation server to attest this key, and
# refuses to start unless its document does (ATTESTATION_KEY_CHECK).
export SIGNER_KEY_PATH="${SIGNER_KEY_PATH:-$app/id.sec}"
export SIGNER_PUBLIC_KEY_PATH="${SIGNER_PUBLIC_KEY_PATH:-$app/id.pub}"
node "$app/dist/src/keygen.js" --secret "$SIGNER_KEY_PATH" --public "$SIGNER_PUBLIC_KEY_PATH"

exec supervisord -c "$app/supervisord.conf" "$@"

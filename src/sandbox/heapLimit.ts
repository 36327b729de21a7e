import { ServiceError } from '../errors.js';

const MiB = 1024 * 1024;
/**
 * What a workerd holds in its cgroup besides V8's old generation when that is full: its binary's
 * pages and its own allocations (about 37 MiB idle), V8's young generation and what a collection
 * near the limit needs on top (docs/architecture.md, "Near the memory limit", has the figures).
 */
const workerdBaseBytes = 64 * MiB;
/** The least old generation a workerd is given, whatever its cgroup. */
const minOldSpaceMb = 16;
/** V8's young generation is sized by this; its own default would put a full workerd far past its old generation. */
const semiSpaceMb = 2;

/**
 * V8's heap limits for a workerd in a cgroup with this memory limit: low enough that a function
 * whose objects outgrow them meets V8's limit, which ends workerd at once with a message of its
 * own, before the cgroup's. Near the cgroup's limit the kernel reclaims pages and V8 collects
 * again and again, which can last past the time limit. ArrayBuffers live outside V8's heap: for
 * them, the cgroup's limit is the only one. None without a cgroup limit.
 */
export function v8HeapFlags(cgroupLimitBytes: number | undefined): readonly string[] {
  if (cgroupLimitBytes === undefined) return [];
  const oldSpaceMb = Math.max(minOldSpaceMb, Math.floor((cgroupLimitBytes - workerdBaseBytes) / MiB));
  return [`--max-old-space-size=${oldSpaceMb}`, `--max-semi-space-size=${semiSpaceMb}`];
}

/**
 * The memory limit code runs with: what its limits.memory_mb asks for, where that is no more than
 * its cgroup's limit, which is the limit otherwise; an ask for more is refused before workerd starts.
 */
export function codeMemoryLimit(askedMb: number | undefined, cgroupLimitBytes: number | undefined): number | undefined {
  if (askedMb === undefined) return cgroupLimitBytes;
  const asked = askedMb * MiB;
  if (cgroupLimitBytes !== undefined && asked > cgroupLimitBytes) {
    throw new ServiceError('LIMIT_NOT_ALLOWED', {
      data: `limits.memory_mb ${askedMb} is more than the ${Math.floor(cgroupLimitBytes / MiB)} MiB this instance allows`,
    });
  }
  return asked;
}

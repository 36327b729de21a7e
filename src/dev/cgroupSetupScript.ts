import path from 'node:path';
import { projectRoot } from './projectRoot.js';

/** The project's script that makes a cgroup pool on a machine of this cgroup version. */
export function cgroupSetupScript(version: 1 | 2): string {
  return path.join(projectRoot, version === 2 ? 'cgroupv2_setup.sh' : 'cgroupv1_setup.sh');
}

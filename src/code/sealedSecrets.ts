import { ServiceError } from '../errors.js';
import { isSealed, type Sealing, UnsealError } from '../secrets/sealing.js';
import type { WorkerBinding, WorkerCode } from './workerCode.js';

/** Most sealed secrets one upload may have. */
export const maxSealedSecrets = 32;

/**
 * The code with each sealed secret_text opened, so that the function sees the plaintext as its
 * binding; code without one is returned as it is. A value that does not open is a 400 naming the
 * binding and why, never the value; sealed secrets where this instance has no sealing key, a 503.
 */
export function openSealedSecrets(code: WorkerCode, sealing: Sealing): WorkerCode {
  const sealed = (binding: WorkerBinding) => binding.type === 'secretText' && isSealed(binding.value);
  const count = code.settings.bindings.filter(sealed).length;
  if (count === 0) return code;
  // Each costs a curve multiplication on the service's own thread: bounded per upload.
  if (count > maxSealedSecrets)
    throw new ServiceError('SEALED_SECRET_INVALID', {
      data: { binding: null, reason: `${count} sealed secrets, more than ${maxSealedSecrets}` },
    });
  const bindings = code.settings.bindings.map((binding) => {
    if (binding.type !== 'secretText' || !sealed(binding)) return binding;
    if (sealing.state !== 'on') {
      const reason = sealing.state === 'off' ? 'sealed secrets are off (no SEALING_KMS_BLOB)' : sealing.reason;
      throw new ServiceError('SEALING_UNAVAILABLE', { data: { binding: binding.name, reason } });
    }
    try {
      return { ...binding, value: sealing.open(binding.name, binding.value) };
    } catch (error) {
      if (!(error instanceof UnsealError)) throw error;
      throw new ServiceError('SEALED_SECRET_INVALID', { data: { binding: binding.name, reason: error.reason } });
    }
  });
  return { ...code, settings: { ...code.settings, bindings } };
}

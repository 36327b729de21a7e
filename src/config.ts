import { createRequire } from 'node:module';
import path from 'node:path';
import { z } from 'zod';
import { StartupError } from './errors.js';

// The pinned workerd package: its binary's path and the newest compatibility date it accepts.
// Loaded through require because it is CommonJS with an __esModule marker, which Node's ESM loader
// and bundling test runners interpret differently.
const workerd = createRequire(import.meta.url)('workerd') as {
  readonly default: string;
  readonly compatibilityDate: string;
};

const port = z.coerce.number().int().min(0).max(65_535);
// Node's longest timer: a longer one fires after 1 ms instead, which would make a time limit
// end every invocation at once.
const maxTimerMs = 2 ** 31 - 1;
const positiveMs = z.coerce.number().int().positive().max(maxTimerMs);
const bytes = z.coerce.number().int().positive();
const flag = z.enum(['true', 'false', '1', '0']).transform((value) => value === 'true' || value === '1');

// The environment variables the service reads, with their defaults. Parsed once, at start-up.
const variables = z.object({
  PORT: port.default(6000),
  HOST: z.string().min(1).default('127.0.0.1'),
  ADMIN_PORT: port.optional(),
  ADMIN_HOST: z.string().min(1).default('127.0.0.1'),
  CGROUP_VERSION: z.enum(['1', '2']).transform(Number).optional(),
  CGROUP_ROOT: z.string().min(1).default('/sys/fs/cgroup'),
  CGROUP_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_.-]+$/, 'must be a plain cgroup name prefix (letters, digits, _ . -)')
    .default('workerd'),
  RUNTIME_PATH: z
    .string()
    .min(1)
    // Each workerd gets the path of its config as one line on stdin.
    .regex(/^[^\n]*$/, 'must not contain a line break')
    .default('./runtime/'),
  WORKERD_PATH: z.string().min(1).default(workerd.default),
  ATTESTATION_URL: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:1300/attestation/raw'),
  ATTESTATION_KEY_CHECK: flag.default(true),
  STORAGE_URL: z.url({ protocol: /^https?$/ }).default('http://127.0.0.1:3000/load'),
  EXECUTION_TIMEOUT_MS: positiveMs.default(30_000),
  UPSTREAM_TIMEOUT_MS: positiveMs.default(5_000),
  SHUTDOWN_GRACE_MS: positiveMs.default(10_000),
  REQUEST_TIMEOUT_MS: positiveMs.default(10_000),
  KEEP_ALIVE_TIMEOUT_MS: positiveMs.default(5_000),
  MAX_CONNECTIONS: z.coerce.number().int().positive().default(1_000),
  MAX_BODY_BYTES: bytes.default(1024 * 1024),
  MAX_CODE_BYTES: bytes.default(10 * 1024 * 1024),
  MAX_RESPONSE_BYTES: bytes.default(1024 * 1024),
  CODE_CACHE_MAX_BYTES: z.coerce
    .number()
    .int()
    .min(0)
    .default(64 * 1024 * 1024),
  IDLE_GC_MS: z.coerce.number().int().min(0).max(maxTimerMs).default(10_000),
  LEDGER_PATH: z.string().min(1).optional(),
  LEDGER_RETENTION_DAYS: z.coerce.number().int().positive().default(30),
  SPARES_MAX: z.coerce.number().int().min(0).default(4),
  SPARES_PER_CODE: z.coerce.number().int().positive().default(1),
  SPARE_IDLE_MS: positiveMs.default(60_000),
  ALLOW_PUBLIC_EGRESS: flag.default(true),
  SIGNER_KEY_PATH: z.string().min(1).optional(),
  SEALING_KMS_BLOB: z.string().min(1).optional(),
  SEALING_KMS_REGION: z
    .string()
    .regex(/^[a-z0-9-]+$/, 'must be an AWS region, e.g. us-east-1')
    .optional(),
  SEALING_KMS_ENDPOINT: z.url({ protocol: /^https?$/ }).optional(),
  COMPATIBILITY_DATE: z
    .string()
    .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date, YYYY-MM-DD')
    .refine(
      (date) => date <= workerd.compatibilityDate,
      `must not be after ${workerd.compatibilityDate}, the newest date the bundled workerd supports`,
    )
    .default(workerd.compatibilityDate),
  COMPATIBILITY_FLAGS: z
    .string()
    .regex(/^[a-z0-9_, ]*$/, 'must be compatibility flags (lowercase letters, digits, _), separated by commas')
    .transform((flags) => flags.split(/[ ,]+/).filter((flag) => flag !== ''))
    .default(['nodejs_compat']),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** The name of every environment variable the service reads: docs/configuration.md and .env.example list each. */
export const settingNames: readonly string[] = Object.keys(variables.shape);

const schema = variables
  .refine((e) => e.SEALING_KMS_BLOB === undefined || e.SEALING_KMS_REGION !== undefined, {
    message: 'must be set with SEALING_KMS_BLOB: it names the region of the KMS key',
    path: ['SEALING_KMS_REGION'],
  })
  .refine((e) => !e.ADMIN_PORT || e.ADMIN_PORT !== e.PORT, {
    message: 'must differ from PORT: the operator endpoints never share the public listener',
    path: ['ADMIN_PORT'],
  });

/** The service's settings, validated and typed; passed to every stage that needs one. */
export interface Config {
  /** TCP port the HTTP API listens on. */
  readonly port: number;
  /** Address the HTTP API listens on. */
  readonly host: string;
  /** TCP port of the operator endpoints (draining), a listener of their own; unset, there is none. */
  readonly adminPort: number | undefined;
  /** Address of the operator endpoints: loopback unless the operator says otherwise. */
  readonly adminHost: string;
  /** cgroup version of the pool, or undefined to detect it from the cgroup root. */
  readonly cgroupVersion: 1 | 2 | undefined;
  /** Where the cgroup file systems are mounted. */
  readonly cgroupRoot: string;
  /** Every cgroup whose name starts with this prefix belongs to the pool. */
  readonly cgroupPrefix: string;
  /** Directory for the per-request code and config files (absolute). */
  readonly runtimePath: string;
  /** The workerd binary. */
  readonly workerdPath: string;
  /** compatibilityDate of code whose metadata names none (one script, or an upload without the field). */
  readonly compatibilityDate: string;
  /** compatibilityFlags of code whose metadata names none. */
  readonly compatibilityFlags: readonly string[];
  /** The attestation server's raw document endpoint; public_key and nonce go in its query. */
  readonly attestationUrl: string;
  /** With a signer: refuse to start unless the attestation server's document attests the signer's key. */
  readonly attestationKeyCheck: boolean;
  readonly storageUrl: string;
  /** Wall-clock limit for one invocation, from workerd's start to its answer. */
  readonly executionTimeoutMs: number;
  /** Limit for each call to the attestation and storage servers. */
  readonly upstreamTimeoutMs: number;
  /** How long SIGTERM waits for in-flight requests before it kills their workers. */
  readonly shutdownGraceMs: number;
  /** Time a client has to send a whole request, headers and body; then it gets a 408. */
  readonly requestTimeoutMs: number;
  /** How long an idle kept-alive connection stays open. */
  readonly keepAliveTimeoutMs: number;
  /** Most client connections open at once; more are closed as they come. */
  readonly maxConnections: number;
  readonly maxBodyBytes: number;
  readonly maxCodeBytes: number;
  readonly maxResponseBytes: number;
  /** Most bytes of code kept in memory by code_id; 0 turns the cache off. */
  readonly codeCacheMaxBytes: number;
  /** Quiet time after a burst of invocations before one full garbage collection gives its memory back; 0 turns it off. */
  readonly idleGcMs: number;
  /** The SQLite file of the usage ledger (absolute); unset, no ledger is kept. */
  readonly ledgerPath: string | undefined;
  /** Days each invocation keeps its own ledger row before it is folded into hourly totals. */
  readonly ledgerRetentionDays: number;
  /** Most spares (workerd started ahead for cached code) at once; 0 turns them off. */
  readonly sparesMax: number;
  /** Most spares of one code_id's code at once. */
  readonly sparesPerCode: number;
  /** How long a spare no invocation takes lives. */
  readonly spareIdleMs: number;
  /** Whether user code may fetch public internet addresses (private and loopback ones never). */
  readonly allowPublicEgress: boolean;
  readonly logLevel: string;
  /** File holding the secp256k1 secret that signs every successful answer; unset, nothing is signed. */
  readonly signerKeyPath: string | undefined;
  /** File with the KMS CiphertextBlob of the image's master secret (base64); unset, sealed secrets are off. */
  readonly sealingKmsBlob: string | undefined;
  /** The region of the KMS key. */
  readonly sealingKmsRegion: string | undefined;
  /** KMS's URL when it is not the region's own (the development KMS, a proxy). */
  readonly sealingKmsEndpoint: string | undefined;
}

/** Parses the environment into a Config, or throws a StartupError that names every bad variable. */
export function parseConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const result = schema.safeParse(present);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new StartupError(`Invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  const e = result.data;
  return {
    port: e.PORT,
    host: e.HOST,
    adminPort: e.ADMIN_PORT,
    adminHost: e.ADMIN_HOST,
    cgroupVersion: e.CGROUP_VERSION as 1 | 2 | undefined,
    cgroupRoot: e.CGROUP_ROOT,
    cgroupPrefix: e.CGROUP_PREFIX,
    runtimePath: path.resolve(e.RUNTIME_PATH),
    workerdPath: e.WORKERD_PATH,
    compatibilityDate: e.COMPATIBILITY_DATE,
    compatibilityFlags: e.COMPATIBILITY_FLAGS,
    attestationUrl: e.ATTESTATION_URL,
    attestationKeyCheck: e.ATTESTATION_KEY_CHECK,
    storageUrl: e.STORAGE_URL,
    executionTimeoutMs: e.EXECUTION_TIMEOUT_MS,
    upstreamTimeoutMs: e.UPSTREAM_TIMEOUT_MS,
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    keepAliveTimeoutMs: e.KEEP_ALIVE_TIMEOUT_MS,
    maxConnections: e.MAX_CONNECTIONS,
    maxBodyBytes: e.MAX_BODY_BYTES,
    maxCodeBytes: e.MAX_CODE_BYTES,
    maxResponseBytes: e.MAX_RESPONSE_BYTES,
    codeCacheMaxBytes: e.CODE_CACHE_MAX_BYTES,
    idleGcMs: e.IDLE_GC_MS,
    ledgerPath: e.LEDGER_PATH === undefined ? undefined : path.resolve(e.LEDGER_PATH),
    ledgerRetentionDays: e.LEDGER_RETENTION_DAYS,
    sparesMax: e.SPARES_MAX,
    sparesPerCode: e.SPARES_PER_CODE,
    spareIdleMs: e.SPARE_IDLE_MS,
    allowPublicEgress: e.ALLOW_PUBLIC_EGRESS,
    logLevel: e.LOG_LEVEL,
    signerKeyPath: e.SIGNER_KEY_PATH,
    sealingKmsBlob: e.SEALING_KMS_BLOB,
    sealingKmsRegion: e.SEALING_KMS_REGION,
    sealingKmsEndpoint: e.SEALING_KMS_ENDPOINT,
  };
}

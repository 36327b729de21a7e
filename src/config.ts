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

const MiB = 1024 * 1024;
// Node's longest timer: a longer one fires after 1 ms instead, which would make a time limit
// end every invocation at once.
const maxTimerMs = 2 ** 31 - 1;

// The kinds of value the settings take, each parsed from the variable's text.
const port = z.coerce.number().int().min(0).max(65_535);
const positiveMs = z.coerce.number().int().positive().max(maxTimerMs);
const count = z.coerce.number().int().positive();
const countOrOff = z.coerce.number().int().min(0);
const flag = z.enum(['true', 'false', '1', '0']).transform((value) => value === 'true' || value === '1');
const text = z.string().min(1);
const httpUrl = z.url({ protocol: /^https?$/ });

/** One environment setting: a row of `settings`. */
export interface Setting {
  /** The environment variable. */
  readonly env: string;
  /** Parses and checks the variable's text into the Config field's value. */
  readonly type: z.ZodType;
  /** The value when the variable is unset or empty, as its text (a number stands for its digits); none: undefined. */
  readonly default?: string | number;
  /**
   * How docs/configuration.md writes the default where `default` in backticks (or `unset` without one) would not
   * say it: a default computed at start-up, or what being unset means.
   */
  readonly shownDefault?: string;
  /** What the Config field is, in a line. */
  readonly meaning: string;
}

/**
 * Every environment variable the service reads, by the name of its Config field, in the order
 * docs/configuration.md lists them. Parsed once, at start-up.
 */
export const settings = {
  port: { env: 'PORT', type: port, default: 6000, meaning: 'TCP port the HTTP API listens on.' },
  host: { env: 'HOST', type: text, default: '127.0.0.1', meaning: 'Address the HTTP API listens on.' },
  adminPort: {
    env: 'ADMIN_PORT',
    type: port,
    meaning: 'TCP port of the operator endpoints (draining), a listener of their own; unset, there is none.',
  },
  adminHost: {
    env: 'ADMIN_HOST',
    type: text,
    default: '127.0.0.1',
    meaning: 'Address of the operator endpoints: loopback unless the operator says otherwise.',
  },
  cgroupVersion: {
    env: 'CGROUP_VERSION',
    type: z.enum(['1', '2']).transform((version) => (version === '1' ? 1 : 2)),
    shownDefault: 'detected',
    meaning: 'cgroup version of the pool, or undefined to detect it from the cgroup root.',
  },
  cgroupRoot: {
    env: 'CGROUP_ROOT',
    type: text,
    default: '/sys/fs/cgroup',
    meaning: 'Where the cgroup file systems are mounted.',
  },
  cgroupPrefix: {
    env: 'CGROUP_PREFIX',
    type: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'must be a plain cgroup name prefix (letters, digits, _ . -)'),
    default: 'workerd',
    meaning: 'Every cgroup whose name starts with this prefix belongs to the pool.',
  },
  runtimePath: {
    env: 'RUNTIME_PATH',
    // Each workerd gets the path of its config as one line on stdin.
    type: text.regex(/^[^\n]*$/, 'must not contain a line break').transform((dir) => path.resolve(dir)),
    default: './runtime/',
    meaning: 'Directory for the per-request code and config files (absolute).',
  },
  workerdPath: {
    env: 'WORKERD_PATH',
    type: text,
    default: workerd.default,
    shownDefault: "the npm package's binary",
    meaning: 'The workerd binary.',
  },
  attestationUrl: {
    env: 'ATTESTATION_URL',
    type: httpUrl,
    default: 'http://127.0.0.1:1300/attestation/raw',
    meaning: "The attestation server's raw document endpoint; public_key and nonce go in its query.",
  },
  attestationKeyCheck: {
    env: 'ATTESTATION_KEY_CHECK',
    type: flag,
    default: 'true',
    meaning: "With a signer: refuse to start unless the attestation server's document attests the signer's key.",
  },
  attestationReuseMs: {
    env: 'ATTESTATION_REUSE_MS',
    type: countOrOff.max(maxTimerMs),
    default: 60_000,
    meaning:
      'How long the attestation document shown to the storage server is shown again; one it refuses is replaced at once; 0: a new one per download.',
  },
  storageUrl: {
    env: 'STORAGE_URL',
    type: httpUrl,
    default: 'http://127.0.0.1:3000/load',
    meaning: "The code storage server's load endpoint.",
  },
  executionTimeoutMs: {
    env: 'EXECUTION_TIMEOUT_MS',
    type: positiveMs,
    default: 30_000,
    meaning: "Wall-clock limit for one invocation, from workerd's start to its answer.",
  },
  cpuLimitMs: {
    env: 'CPU_LIMIT_MS',
    type: positiveMs,
    default: 30_000,
    meaning: "CPU time one invocation's workerd may use from its request on, when its code's limits.cpu_ms says none.",
  },
  cpuLimitMaxMs: {
    env: 'CPU_LIMIT_MAX_MS',
    type: positiveMs,
    default: 30_000,
    meaning: 'The most CPU time code may ask for (limits.cpu_ms); a larger ask is held to it.',
  },
  upstreamTimeoutMs: {
    env: 'UPSTREAM_TIMEOUT_MS',
    type: positiveMs,
    default: 5_000,
    meaning: 'Limit for each call to the attestation and storage servers.',
  },
  compatibilityDate: {
    env: 'COMPATIBILITY_DATE',
    type: z
      .string()
      .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a date, YYYY-MM-DD')
      .refine(
        (date) => date <= workerd.compatibilityDate,
        `must not be after ${workerd.compatibilityDate}, the newest date the bundled workerd supports`,
      ),
    default: workerd.compatibilityDate,
    shownDefault: `the bundled workerd's date (\`${workerd.compatibilityDate}\`)`,
    meaning: 'compatibilityDate of code whose metadata names none (one script, or an upload without the field).',
  },
  compatibilityFlags: {
    env: 'COMPATIBILITY_FLAGS',
    type: z
      .string()
      .regex(/^[a-z0-9_, ]*$/, 'must be compatibility flags (lowercase letters, digits, _), separated by commas')
      .transform((flags): readonly string[] => flags.split(/[ ,]+/).filter((flag) => flag !== '')),
    default: 'nodejs_compat',
    meaning: 'compatibilityFlags of code whose metadata names none.',
  },
  shutdownGraceMs: {
    env: 'SHUTDOWN_GRACE_MS',
    type: positiveMs,
    default: 10_000,
    meaning: 'How long SIGTERM waits for in-flight requests before it kills their workers.',
  },
  requestTimeoutMs: {
    env: 'REQUEST_TIMEOUT_MS',
    type: positiveMs,
    default: 10_000,
    meaning: 'Time a client has to send a whole request, headers and body; then it gets a 408.',
  },
  keepAliveTimeoutMs: {
    env: 'KEEP_ALIVE_TIMEOUT_MS',
    type: positiveMs,
    default: 5_000,
    meaning: 'How long an idle kept-alive connection stays open.',
  },
  maxConnections: {
    env: 'MAX_CONNECTIONS',
    type: count,
    default: 1_000,
    meaning: 'Most client connections held at once; at the cap the one stalled longest is closed for a new one.',
  },
  maxBodyBytes: { env: 'MAX_BODY_BYTES', type: count, default: MiB, meaning: 'Largest request body.' },
  maxCodeBytes: {
    env: 'MAX_CODE_BYTES',
    type: count,
    default: 10 * MiB,
    meaning: 'Largest code the storage server may answer.',
  },
  maxResponseBytes: {
    env: 'MAX_RESPONSE_BYTES',
    type: count,
    default: MiB,
    meaning: 'Largest answer a function may give.',
  },
  codeCacheMaxBytes: {
    env: 'CODE_CACHE_MAX_BYTES',
    type: countOrOff,
    default: 64 * MiB,
    meaning: 'Most bytes of code kept in memory by code_id; 0 turns the cache off.',
  },
  ledgerPath: {
    env: 'LEDGER_PATH',
    type: text.transform((file) => path.resolve(file)),
    meaning: 'The SQLite file of the usage ledger (absolute); unset, no ledger is kept.',
  },
  ledgerRetentionDays: {
    env: 'LEDGER_RETENTION_DAYS',
    type: count,
    default: 30,
    meaning: 'Days each invocation keeps its own ledger row before it is folded into hourly totals.',
  },
  admissionQueueMax: {
    env: 'ADMISSION_QUEUE_MAX',
    type: countOrOff,
    default: 64,
    meaning: 'Most requests waiting at once for a free cgroup; the next is answered 503 at once; 0: none waits.',
  },
  admissionWaitMs: {
    env: 'ADMISSION_WAIT_MS',
    type: positiveMs,
    default: 1_000,
    meaning: 'How long a request waits at most for a free cgroup before it is answered 503.',
  },
  sparesMax: {
    env: 'SPARES_MAX',
    type: countOrOff,
    default: 4,
    meaning: 'Most spares (workerd started ahead for cached code) at once; 0 turns them off.',
  },
  sparesPerCode: {
    env: 'SPARES_PER_CODE',
    type: count,
    default: 1,
    meaning: "Most spares of one code_id's code at once.",
  },
  spareIdleMs: {
    env: 'SPARE_IDLE_MS',
    type: positiveMs,
    default: 60_000,
    meaning: 'How long a spare no invocation takes lives.',
  },
  idleGcMs: {
    env: 'IDLE_GC_MS',
    type: countOrOff.max(maxTimerMs),
    default: 10_000,
    meaning: 'Quiet time after a burst before one full garbage collection gives its memory back; 0 turns it off.',
  },
  signerKeyPath: {
    env: 'SIGNER_KEY_PATH',
    type: text,
    meaning: 'File holding the secp256k1 secret that signs every successful answer; unset, nothing is signed.',
  },
  sealingKmsBlob: {
    env: 'SEALING_KMS_BLOB',
    type: text,
    meaning: "File with the KMS CiphertextBlob of the image's master secret (base64); unset, sealed secrets are off.",
  },
  sealingKmsRegion: {
    env: 'SEALING_KMS_REGION',
    type: z.string().regex(/^[a-z0-9-]+$/, 'must be an AWS region, e.g. us-east-1'),
    meaning: 'The region of the KMS key; required with SEALING_KMS_BLOB.',
  },
  sealingKmsEndpoint: {
    env: 'SEALING_KMS_ENDPOINT',
    type: httpUrl,
    shownDefault: "the region's",
    meaning: "KMS's URL when it is not the region's own (the development KMS, a proxy).",
  },
  allowPublicEgress: {
    env: 'ALLOW_PUBLIC_EGRESS',
    type: flag,
    default: 'true',
    meaning: 'Whether user code may fetch public internet addresses (private and loopback ones never).',
  },
  tailRequestHeaders: {
    env: 'TAIL_REQUEST_HEADERS',
    type: flag,
    default: 'false',
    meaning: "Whether each event of GET /admin/tail carries the request's headers (bodies never).",
  },
  logLevel: {
    env: 'LOG_LEVEL',
    type: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
    default: 'info',
    meaning: 'The pino level of the service log.',
  },
} as const satisfies Record<string, Setting>;

type Settings = typeof settings;

// A setting's schema as the environment meets it: unset, its default goes through the same parsing as an
// operator's text would; without a default, the field is undefined.
type FieldSchema<S extends Setting> = S extends { readonly default: string | number }
  ? z.ZodPrefault<S['type']>
  : z.ZodOptional<S['type']>;

function fieldSchema(setting: Setting): z.ZodType {
  return setting.default === undefined ? setting.type.optional() : setting.type.prefault(String(setting.default));
}

/** The service's settings, validated and typed; passed to every stage that needs one. */
export type Config = { readonly [K in keyof Settings]: z.output<FieldSchema<Settings[K]>> };

/** The name of every environment variable the service reads: docs/configuration.md and .env.example list each. */
export const settingNames: readonly string[] = Object.values(settings).map((setting) => setting.env);

// Keyed by variable, so that every error names the one to fix. Object.fromEntries loses the keys' types,
// which the mapped type gives back.
type Variables = { [K in keyof Settings as Settings[K]['env']]: FieldSchema<Settings[K]> };
const variables = Object.fromEntries(
  Object.values(settings).map((setting) => [setting.env, fieldSchema(setting)]),
) as Variables;

const schema = z
  .object(variables)
  .refine((e) => e.SEALING_KMS_BLOB === undefined || e.SEALING_KMS_REGION !== undefined, {
    message: 'must be set with SEALING_KMS_BLOB: it names the region of the KMS key',
    path: ['SEALING_KMS_REGION'],
  })
  .refine((e) => e.CPU_LIMIT_MS <= e.CPU_LIMIT_MAX_MS, {
    message: 'must not be more than CPU_LIMIT_MAX_MS, the most CPU time code may ask for',
    path: ['CPU_LIMIT_MS'],
  })
  .refine((e) => !e.ADMIN_PORT || e.ADMIN_PORT !== e.PORT, {
    message: 'must differ from PORT: the operator endpoints never share the public listener',
    path: ['ADMIN_PORT'],
  });

/** Parses the environment into a Config, or throws a StartupError that names every bad variable. */
export function parseConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const result = schema.safeParse(present);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new StartupError(`Invalid configuration:\n  ${problems.join('\n  ')}`);
  }
  const values: Readonly<Record<string, unknown>> = result.data;
  // Every field, an unset optional one too, so that a Config always has all of its keys.
  return Object.fromEntries(Object.entries(settings).map(([field, setting]) => [field, values[setting.env]])) as Config;
}

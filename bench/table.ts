// Renders a run's results as plain-text tables, for the terminal and the README.
import type { BenchResults } from './results.js';

/** Renders every section of the results. */
export function formatResults(results: BenchResults): string {
  const m = results.machine;
  const out: string[] = [];
  out.push(`oyster-serverless bench, ${m.date}`);
  out.push(
    `${m.os}, kernel ${m.kernel}, ${m.cores} cores (${m.cpu}), ${m.memoryGb} GB; Node ${m.node}, workerd ${m.workerd}, miniflare ${m.miniflare}`,
  );
  out.push(`command: ${results.command}`);
  for (const note of results.notes) out.push(`note: ${note}`);
  if (results.serviceSkipped) out.push(`SKIPPED the service sides: ${results.serviceSkipped}`);

  out.push(
    '',
    `Latency: ${results.settings.samples} sequential invocations per side, ${results.settings.gapMs} ms apart, sides alternating each round (ms)`,
  );
  out.push(
    table(
      ['side', 'p50', 'p95', 'p99', 'mean', 'min', 'max', 'failed'],
      results.latency.map((s) => [
        s.label,
        ms(s.summary.p50),
        ms(s.summary.p95),
        ms(s.summary.p99),
        ms(s.summary.mean),
        ms(s.summary.min),
        ms(s.summary.max),
        String(s.failures),
      ]),
    ),
  );

  out.push('', 'Ratios (median of the per-round ratios; ratio of the p50s for reference)');
  out.push(
    table(
      ['pair', 'median of pairs', 'p50 / p50', 'pairs'],
      results.ratios.map((r) => [
        `${r.numerator} / ${r.denominator}`,
        fixed(r.medianOfPairs, 3),
        fixed(r.ratioOfP50s, 3),
        String(r.pairs),
      ]),
    ),
  );

  if (results.throughput.length > 0) {
    out.push(
      '',
      `Throughput: closed loop, ${results.settings.durationS} s per side and concurrency, in alternating ${results.settings.sliceS} s slices`,
    );
    out.push(
      table(
        ['side', 'concurrency', 'ok/s', 'p50 ms', 'p99 ms', 'ok', 'errors', 'service CPU ms/ok'],
        results.throughput.map((t) => [
          t.label,
          String(t.concurrency),
          fixed(t.okPerS, 1),
          ms(t.p50Ms),
          ms(t.p99Ms),
          String(t.ok),
          formatErrors(t.errors),
          t.serviceCpuMsPerOk === undefined ? '-' : fixed(t.serviceCpuMsPerOk, 2),
        ]),
      ),
    );
  }

  const accounted = results.throughput.filter((t) => t.cpuMsPerOk !== undefined);
  if (accounted.length > 0) {
    out.push(
      '',
      'CPU per successful invocation under load (ms), by process, from /proc and the cgroups\' counters; "cores" is their total times ok/s',
    );
    out.push(
      table(
        ['side', 'concurrency', 'workerd', 'service or driver', 'upstreams', 'clients', 'total', 'cores'],
        accounted.map((t) => {
          const cpu = t.cpuMsPerOk!;
          const optional = (value: number | undefined, scale = 1) =>
            value === undefined ? '-' : fixed(value * scale, 2);
          return [
            t.label,
            String(t.concurrency),
            optional(cpu.workerd),
            fixed(cpu.process, 2),
            fixed(cpu.upstreams, 2),
            fixed(cpu.client, 2),
            optional(cpu.total),
            optional(cpu.total, t.okPerS / 1000),
          ];
        }),
      ),
    );
  }

  if (results.resources.length > 0) {
    out.push(
      '',
      'Service process (its own CPU and memory from /proc; workerd excluded; CPU per invocation less the idle background)',
    );
    out.push(
      table(
        [
          'side',
          'CPU ms/invocation (sequential)',
          'idle CPU ms/s',
          'RSS fresh MB',
          'after warm-up (idle)',
          'after latency',
          'end (idle)',
          'peak (VmHWM)',
        ],
        results.resources.map((r) => [
          r.label,
          fixed(r.cpuMsPerInvocation, 2),
          fixed(r.idleCpuMsPerS, 1),
          fixed(r.rssFreshMb, 1),
          fixed(r.rssAfterWarmupMb, 1),
          fixed(r.rssAfterLatencyMb, 1),
          fixed(r.rssEndMb, 1),
          fixed(r.peakRssMb, 1),
        ]),
      ),
    );
  }

  if (results.stages.length > 0) {
    out.push(
      '',
      "Stages over the latency section (ms): bare workerd's timed by its driver, the service's from its own Server-Timing header",
    );
    out.push(
      table(
        ['side', 'stage', 'p50', 'mean', 'p99'],
        results.stages.map((s) => [s.side, s.name, ms(s.p50Ms), ms(s.meanMs), ms(s.p99Ms)]),
      ),
    );
  }

  out.push('', 'Targets');
  out.push(
    table(
      ['target', 'value', 'limit', 'result'],
      results.targets.map((t) => [
        t.name,
        fixed(t.value, 3),
        `${t.comparison} ${t.limit}`,
        t.pass === undefined ? `n/a${t.note ? ` (${t.note})` : ''}` : t.pass ? 'PASS' : 'FAIL',
      ]),
    ),
  );
  out.push('', `bench took ${fixed(results.durationS, 0)} s`);
  return out.join('\n');
}

/** Left-aligns the first column and right-aligns the rest, padded to the widest cell. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const all = [header, ...rows];
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  const line = (row: readonly string[]) =>
    row
      .map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!)))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

function ms(value: number): string {
  return fixed(value, 1);
}

function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-';
}

function formatErrors(errors: Readonly<Record<string, number>>): string {
  const entries = Object.entries(errors);
  return entries.length === 0 ? '0' : entries.map(([kind, count]) => `${count} ${kind}`).join(', ');
}

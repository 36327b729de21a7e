// Summary statistics for latency samples, in milliseconds.

/** The numbers a side is reported with. */
export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly mean: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
}

/**
 * The p-th percentile (0..100) of values, interpolating linearly between the two nearest ranks
 * (the usual "type 7" definition, as numpy and spreadsheets use), so p50 of an even count is the
 * mean of the middle two. NaN when there are no values.
 */
export function percentile(values: readonly number[], p: number): number {
  if (!(p >= 0 && p <= 100)) throw new RangeError(`percentile must be within 0..100, got ${p}`);
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const below = Math.floor(rank);
  const above = Math.ceil(rank);
  return sorted[below]! + (sorted[above]! - sorted[below]!) * (rank - below);
}

/** The middle value (the mean of the middle two for an even count); NaN when there are none. */
export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Summarises samples, ignoring missing ones (failed invocations) and anything not finite. */
export function summarize(samples: ReadonlyArray<number | undefined>): Summary {
  const values = samples.filter((value): value is number => value !== undefined && Number.isFinite(value));
  const mean = values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0) / values.length;
  return {
    n: values.length,
    min: values.length === 0 ? Number.NaN : Math.min(...values),
    mean,
    p50: percentile(values, 50),
    p95: percentile(values, 95),
    p99: percentile(values, 99),
    max: values.length === 0 ? Number.NaN : Math.max(...values),
  };
}

/**
 * The ratio of two sides measured in the same rounds: numerator[i] / denominator[i] for every
 * round where both succeeded, so drift of the machine between rounds cancels out.
 */
export function pairedRatios(
  numerators: ReadonlyArray<number | undefined>,
  denominators: ReadonlyArray<number | undefined>,
): number[] {
  if (numerators.length !== denominators.length) {
    throw new RangeError(`paired samples must have equal lengths, got ${numerators.length} and ${denominators.length}`);
  }
  const ratios: number[] = [];
  numerators.forEach((numerator, i) => {
    const denominator = denominators[i];
    if (numerator === undefined || denominator === undefined || !(denominator > 0) || !Number.isFinite(numerator))
      return;
    ratios.push(numerator / denominator);
  });
  return ratios;
}

/** The median of the per-round ratios; NaN when no round has both sides. */
export function pairedRatioMedian(
  numerators: ReadonlyArray<number | undefined>,
  denominators: ReadonlyArray<number | undefined>,
): number {
  return median(pairedRatios(numerators, denominators));
}

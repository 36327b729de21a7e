import type { Service } from '../../src/service/service.js';

// The value of one of the service's metrics (one labelled series of it, when labels are given), 0 before any.
export async function metricValue(
  service: Service,
  name: string,
  labels: Readonly<Record<string, string>> = {},
): Promise<number> {
  const metric = await service.metrics.registry.getSingleMetric(name)!.get();
  const series = metric.values.find((value) =>
    Object.entries(labels).every(([label, wanted]) => value.labels[label] === wanted),
  );
  return series?.value ?? 0;
}

/**
 * The Node.js flags the service runs with. package.json's start script and supervisord.conf spell
 * them out as well; a test keeps them in step.
 *
 * --max-semi-space-size=1: under load V8 grows its young generation to 16 MiB semi-spaces and
 * keeps them, memory of the service's for no speed that shows in the benchmark
 * (docs/performance.md); every fork of the service copies the page tables of that memory too.
 * --expose-gc: the collection after a burst of invocations (src/idleCollector.ts) needs gc().
 */
export const serviceNodeFlags: readonly string[] = ['--max-semi-space-size=1', '--expose-gc'];

import path from 'node:path';

// The repository's root directory, for tests that run its scripts, read its files or start its build.
export const projectRoot = path.resolve(import.meta.dirname, '../..');

// The tests find the project's root as the scripts and the bench do.
export { projectRoot } from '../../src/dev/projectRoot.js';

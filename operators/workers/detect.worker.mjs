// Entry point of the `detectFacesInWorkers` pool threads. The task code is TypeScript, so this
// plain module registers the tsx loader in the worker before importing it, as
// decodeAlign.worker.mjs does.
import { register } from 'tsx/esm/api';

register();
const task = await import('./detect.worker.ts');

export default task.default;

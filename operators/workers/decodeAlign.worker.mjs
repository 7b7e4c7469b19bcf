// Entry point of the `decodeAndAlignInWorkers` pool threads. The task code is TypeScript, so
// this plain module registers the tsx loader in the worker before importing it. A worker of a
// process started by the `tsx` command does not inherit its loader. One started with
// `node --import=tsx` (as tap runs tests) does, and registering a second time does no harm there.
import { register } from 'tsx/esm/api';

register();
const task = await import('./decodeAlign.worker.ts');

export default task.default;

// Entry point of the `decodeAndAlignInWorkers` pool threads. The task code is TypeScript, so
// this plain module loads it through tsx. A worker thread gets no tsx hooks from its parent, not
// even when the parent ran with `--import=tsx` (Node 20.20, tsx 4.23), so the worker registers
// its own.
//
// It registers tsx's CommonJS hooks and `require`s the task, rather than registering the ESM
// hooks and `import`ing it. The ESM hooks run on separate loader threads, and every module of
// rxjs's ESM build passed through them when the task still imported rxjs. On a 2-core machine,
// starting a pool of two workers and aligning four images then took 0.75 CPU-seconds this way
// against 1.2 through `import`. The worker threads cost the same both ways, and the difference
// was in the loader threads and in V8's background threads. A pool starts anew for each stream,
// so each stream pays its start-up once.
// NOTE: loaded as CommonJS, the task module and its imports must not use top-level await, which
// tsx cannot compile to CommonJS. test/workerPool.test.ts starts the pool, so it fails on such
// an import. (`import.meta.url` works, because tsx rewrites it.)
//
// sharp and piscina are plain CommonJS packages of many files. Loading them before the hooks are
// registered keeps tsx's resolver out of each of those files, and the task module's own imports
// of them then come from the module cache. Loading the modules of two workers took about 0.19
// CPU-seconds this way against 0.27 with tsx registered first (2-core machine).
import { createRequire } from 'node:module';

import { register } from 'tsx/cjs/api';

const require = createRequire(import.meta.url);
require('sharp');
require('piscina');
register();
const task = require('./decodeAlign.worker.ts');

export default task.default;

/**
 * Child process of test/wasmThreads.test.ts: starts the wasm backend with the thread count
 * that SPHEREFACE_WASM_THREADS sets, runs one convolution, prints one JSON line with the
 * threads and a checksum of the result, and then returns without calling `process.exit`. The
 * test checks that the process ends by itself.
 */
import * as tf from '@tensorflow/tfjs-core';

import { initBackend } from '../../model/backend.ts';
import { wasmThreadsInUse } from '../../model/wasmThreads.ts';
import { uniformGenerator } from '../../lib/random.ts';

const backend = await initBackend('wasm');
const uniform = uniformGenerator(3);
const x = tf.tensor4d(Float32Array.from({ length: 8 * 28 * 24 * 3 }, () => 2 * uniform() - 1), [8, 28, 24, 3]);
const filter = tf.tensor4d(Float32Array.from({ length: 3 * 3 * 3 * 16 }, () => 2 * uniform() - 1), [3, 3, 3, 16]);
const y = tf.conv2d(x, filter, 1, 'same');
const values = await y.data();
let sumOfSquares = 0;
for (const value of values) sumOfSquares += value * value;
console.log(JSON.stringify({ threads: backend.threads, inUse: wasmThreadsInUse(), note: backend.threadsNote ?? null, sumOfSquares }));

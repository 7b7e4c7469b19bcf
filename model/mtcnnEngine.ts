/**
 * The MTCNN networks on ONNX Runtime (`onnxruntime-node`, CPU execution provider), and the choice
 * between that engine and TensorFlow.js for detection.
 *
 * `OnnxMtcnnNets` runs the graphs of `exportMtcnnOnnx`, built in memory from the caffemodels. It
 * takes and returns tfjs tensors like the tfjs nets, so the detector treats both alike.
 */
import os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import * as ort from 'onnxruntime-node';

import { createOrtSession } from './ortSession.ts';
import { log } from '../lib/log.ts';
import { ENGINE_NAMES, type EngineName } from './engine.ts';
import {
  assertLNetInput,
  assertNetInput,
  createMtcnn,
  defaultMtcnnDir,
  LNET_PATCHES,
  mapMtcnnParameters,
  ONET_INPUT,
  pnetOutputSize,
  readMtcnnCaffeModels,
  RNET_INPUT,
  type LNetOutput,
  type LoadMtcnnOptions,
  type MtcnnCaffeModels,
  type MtcnnEngineNets,
  type MtcnnParameters,
  type ONetOutput,
  type PNetOutput,
  type RNetOutput,
} from './mtcnn.ts';
import { exportMtcnnOnnx, MTCNN_ONNX_INPUT, type MtcnnNetName } from './mtcnnOnnx.ts';

export interface OnnxMtcnnOptions {
  /**
   * Threads ONNX Runtime uses inside one operator, default `os.availableParallelism()`. Worker
   * pools that run one detector per core pass 1.
   */
  readonly intraOpNumThreads?: number;
}

type Sessions = { readonly [net in MtcnnNetName]?: ort.InferenceSession };

/** Returns output `name` of a session run after checking that it is float32 with the expected dims. */
function outputOf(results: ort.InferenceSession.OnnxValueMapType, net: MtcnnNetName, name: string, dims: readonly number[]): Float32Array {
  const output = results[name];
  if (output === undefined) throw new Error(`${net}: ONNX Runtime returned no "${name}" output`);
  const found = output.dims.join(', ');
  if (output.type !== 'float32' || found !== dims.join(', ')) {
    throw new Error(`${net}: output "${name}" is ${output.type} [${found}], expected float32 [${dims.join(', ')}]`);
  }
  return output.data as Float32Array;
}

/**
 * The MTCNN networks as ONNX Runtime sessions. Each method checks its input as the tfjs nets do,
 * runs the session on a copy of the input's values and returns new tfjs tensors, which the
 * caller owns. An empty batch returns empty tensors without running a session.
 */
export class OnnxMtcnnNets implements MtcnnEngineNets {
  readonly engine = 'onnx';
  /** Threads ONNX Runtime uses inside one operator. */
  readonly threads: number;
  readonly lnet?: (input: tf.Tensor4D) => Promise<LNetOutput>;

  private sessions: Sessions | undefined;

  private constructor(sessions: Sessions, threads: number) {
    this.sessions = sessions;
    this.threads = threads;
    if (sessions.lnet !== undefined) this.lnet = (input) => this.runLNet(input);
  }

  /**
   * Exports each net of `parameters` (L-Net only when present) to ONNX and opens one CPU session
   * per net with every graph optimisation.
   *
   * @throws Error when `intraOpNumThreads` is not a positive integer or a session cannot be
   *   created. The sessions created before the failure are released.
   */
  static async create(parameters: MtcnnParameters, options: OnnxMtcnnOptions = {}): Promise<OnnxMtcnnNets> {
    const threads = options.intraOpNumThreads ?? os.availableParallelism();
    if (!Number.isInteger(threads) || threads < 1) throw new Error(`MTCNN on ONNX Runtime: intraOpNumThreads is ${threads}, expected an integer ≥ 1`);

    const nets: MtcnnNetName[] = parameters.lnet === undefined ? ['pnet', 'rnet', 'onet'] : ['pnet', 'rnet', 'onet', 'lnet'];
    const sessions: { [net in MtcnnNetName]?: ort.InferenceSession } = {};
    try {
      for (const net of nets) {
        const weights = parameters[net];
        if (weights === undefined) continue;
        try {
          sessions[net] = (await createOrtSession(exportMtcnnOnnx(net, weights), { intraOpNumThreads: threads })).session;
        } catch (error) {
          throw new Error(`${net}: ONNX Runtime could not create a session: ${(error as Error).message}`, { cause: error });
        }
      }
    } catch (error) {
      await Promise.allSettled(Object.values(sessions).map((session) => session.release()));
      throw error;
    }
    return new OnnxMtcnnNets(sessions, threads);
  }

  private session(net: MtcnnNetName): ort.InferenceSession {
    if (this.sessions === undefined) throw new Error(`${net}: called after dispose()`);
    const session = this.sessions[net];
    if (session === undefined) throw new Error(`${net}: no ONNX Runtime session for this net. Load the networks with { lnet: true }`);
    return session;
  }

  private async run(net: MtcnnNetName, input: tf.Tensor4D): Promise<ort.InferenceSession.OnnxValueMapType> {
    const session = this.session(net);
    const values = (await input.data()) as Float32Array;
    return session.run({ [MTCNN_ONNX_INPUT]: new ort.Tensor('float32', values, input.shape) });
  }

  async pnet(input: tf.Tensor4D): Promise<PNetOutput> {
    this.session('pnet');
    assertNetInput('pnet', input, 'any');
    const [n = 0, h = 0, w = 0] = input.shape;
    const size = pnetOutputSize(h, w);
    if (n === 0) return { prob: tf.zeros([0, size.height, size.width]), regression: tf.zeros([0, size.height, size.width, 4]) };

    const results = await this.run('pnet', input);
    const prob = outputOf(results, 'pnet', 'prob', [n, size.height, size.width]);
    const regression = outputOf(results, 'pnet', 'regression', [n, size.height, size.width, 4]);
    return { prob: tf.tensor3d(prob, [n, size.height, size.width]), regression: tf.tensor4d(regression, [n, size.height, size.width, 4]) };
  }

  async rnet(input: tf.Tensor4D): Promise<RNetOutput> {
    this.session('rnet');
    assertNetInput('rnet', input, { height: RNET_INPUT, width: RNET_INPUT });
    const n = input.shape[0];
    if (n === 0) return { prob: tf.zeros([0]), regression: tf.zeros([0, 4]) };

    const results = await this.run('rnet', input);
    const prob = outputOf(results, 'rnet', 'prob', [n]);
    const regression = outputOf(results, 'rnet', 'regression', [n, 4]);
    return { prob: tf.tensor1d(prob), regression: tf.tensor2d(regression, [n, 4]) };
  }

  async onet(input: tf.Tensor4D): Promise<ONetOutput> {
    this.session('onet');
    assertNetInput('onet', input, { height: ONET_INPUT, width: ONET_INPUT });
    const n = input.shape[0];
    if (n === 0) return { prob: tf.zeros([0]), regression: tf.zeros([0, 4]), landmarks: tf.zeros([0, 10]) };

    const results = await this.run('onet', input);
    const prob = outputOf(results, 'onet', 'prob', [n]);
    const regression = outputOf(results, 'onet', 'regression', [n, 4]);
    const landmarks = outputOf(results, 'onet', 'landmarks', [n, 10]);
    return { prob: tf.tensor1d(prob), regression: tf.tensor2d(regression, [n, 4]), landmarks: tf.tensor2d(landmarks, [n, 10]) };
  }

  private async runLNet(input: tf.Tensor4D): Promise<LNetOutput> {
    this.session('lnet');
    assertLNetInput(input);
    const n = input.shape[0];
    if (n === 0) return { offsets: tf.zeros([0, LNET_PATCHES, 2]) };

    const results = await this.run('lnet', input);
    return { offsets: tf.tensor3d(outputOf(results, 'lnet', 'offsets', [n, LNET_PATCHES, 2]), [n, LNET_PATCHES, 2]) };
  }

  /**
   * Releases the sessions in the background and logs a failure. The networks cannot be used
   * afterwards, and a second call does nothing.
   */
  dispose(): void {
    const sessions = this.sessions;
    this.sessions = undefined;
    if (sessions === undefined) return;
    for (const [net, session] of Object.entries(sessions)) {
      session.release().catch((error: unknown) => log.warn({ net, error: (error as Error).message }, 'could not release an MTCNN ONNX Runtime session'));
    }
  }
}

export interface LoadMtcnnEngineOptions extends LoadMtcnnOptions, OnnxMtcnnOptions {
  /** Engine of the networks. By default `DEFAULT_MTCNN_ENGINE`, with a fallback to the other engine. */
  readonly engine?: EngineName;
}

/**
 * The engine detection takes when none is requested. On the main thread with 2 threads each,
 * TensorFlow.js wasm detected 1.2× faster than ONNX Runtime in wall time (docs/BENCHMARKS.md,
 * "MTCNN on ONNX Runtime"), although ONNX Runtime used 6 % less CPU time.
 * NOTE: measured on one shared, heavily loaded 2-core machine. Worker pools with one thread per
 * worker, or an idle machine, may favour ONNX Runtime.
 */
export const DEFAULT_MTCNN_ENGINE: EngineName = 'tfjs';

/**
 * Checks an engine name from a caller that is not type-checked (a spec file, a worker message).
 *
 * @throws Error naming the value and the valid names.
 */
export function parseEngineName(value: unknown): EngineName {
  if (typeof value === 'string' && (ENGINE_NAMES as readonly string[]).includes(value)) return value as EngineName;
  throw new Error(`invalid inference engine "${String(value)}", expected one of ${ENGINE_NAMES.join(', ')}`);
}

function onEngine(models: MtcnnCaffeModels, engine: EngineName, options: OnnxMtcnnOptions): Promise<MtcnnEngineNets> | MtcnnEngineNets {
  return engine === 'onnx' ? OnnxMtcnnNets.create(mapMtcnnParameters(models), options) : createMtcnn(models);
}

/**
 * Loads det1–det3.caffemodel, and det4 with `{ lnet: true }`, from a folder (default
 * `<SPHEREFACE_MODELS>/mtcnn`) onto the requested engine. Without a request it takes
 * `DEFAULT_MTCNN_ENGINE` and falls back to the other engine with a warning when that one fails
 * to start. The choice is logged.
 *
 * @throws Error naming the value when `engine` is not an engine name, and the engine's error when
 *   a requested engine fails to start.
 */
export async function loadMtcnnEngine(dir: string = defaultMtcnnDir(), options: LoadMtcnnEngineOptions = {}): Promise<MtcnnEngineNets> {
  const requested = options.engine === undefined ? undefined : parseEngineName(options.engine);
  const models = await readMtcnnCaffeModels(dir, options);
  const sessionOptions = options.intraOpNumThreads === undefined ? {} : { intraOpNumThreads: options.intraOpNumThreads };

  if (requested !== undefined) {
    const nets = await onEngine(models, requested, sessionOptions);
    logChoice(nets, 'requested');
    return nets;
  }
  try {
    const nets = await onEngine(models, DEFAULT_MTCNN_ENGINE, sessionOptions);
    logChoice(nets, 'default');
    return nets;
  } catch (error) {
    const fallback: EngineName = DEFAULT_MTCNN_ENGINE === 'onnx' ? 'tfjs' : 'onnx';
    log.warn({ engine: DEFAULT_MTCNN_ENGINE, error: (error as Error).message }, `MTCNN failed to start on the default engine, so it runs on ${fallback}`);
    const nets = await onEngine(models, fallback, sessionOptions);
    logChoice(nets, `${DEFAULT_MTCNN_ENGINE} failed`);
    return nets;
  }
}

function logChoice(nets: MtcnnEngineNets, reason: string): void {
  const threads = nets instanceof OnnxMtcnnNets ? { threads: nets.threads } : {};
  log.info({ engine: nets.engine, ...threads, reason }, 'MTCNN engine selected');
}

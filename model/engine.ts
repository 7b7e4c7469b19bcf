/**
 * The inference engine choice: a network runs on TensorFlow.js (the selected backend) or on
 * ONNX Runtime, after `exportOnnx` has written it as an ONNX graph in memory.
 */
import { log } from '../lib/log.ts';
import { MobileFaceNet } from './mobilefacenet.ts';
import { exportOnnx } from './onnxExport.ts';
import { OnnxEmbeddingModel } from './onnxModel.ts';
import { loadEmbeddingModel } from './registry.ts';
import { SphereFace20 } from './sphereface20.ts';
import type { EmbeddingModel } from './types.ts';
import type { ImportedOnnxModel } from './onnxImport.ts';

function isImportedOnnxModel(model: EmbeddingModel): model is ImportedOnnxModel {
  return 'manifest' in model && 'alignment' in model && typeof model.embed === 'function';
}

export const ENGINE_NAMES = ['onnx', 'tfjs'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];

/** A loaded network with the engine it runs on. */
export type EngineModel = EmbeddingModel & { readonly engine: EngineName };

/** Wraps an ONNX Runtime session as an `EmbeddingModel` whose forward pass is `embed`. */
function onnxModel(session: OnnxEmbeddingModel): EngineModel {
  return {
    engine: 'onnx',
    name: session.name,
    inputSize: session.inputSize,
    channelOrder: session.channelOrder,
    normalization: session.normalization,
    embeddingSize: session.embeddingSize,
    predict() {
      throw new Error(`${session.name} runs on ONNX Runtime; call embed() instead of predict()`);
    },
    embed: (batch, n) => session.embed(batch, n),
    dispose() {
      session.dispose().catch((error: unknown) => log.warn({ error: (error as Error).message }, 'could not release the ONNX Runtime session'));
    },
  };
}

/**
 * Loads the network that `spec` names (`NAME:PATH`, as `loadEmbeddingModel` takes) on the
 * requested engine. Without a request it takes ONNX Runtime, which is 1.5–3× faster than the
 * wasm backend on a CPU, and falls back to TensorFlow.js with a warning when the network cannot
 * be exported or the session does not start. The choice is logged.
 *
 * @throws Error when `engine` is `onnx` and the network cannot run there.
 */
export async function loadEngineModel(spec: string, engine?: EngineName): Promise<EngineModel> {
  return selectEngine(await loadEmbeddingModel(spec), spec, engine);
}

/**
 * Puts a loaded network on the requested engine, by the rules of `loadEngineModel`. Takes
 * ownership of `model`: it is disposed when it moves to ONNX Runtime. `label` names the model
 * in ONNX Runtime's messages.
 *
 * @throws Error when `engine` is `onnx` and the network cannot run there.
 */
export async function selectEngine(model: EmbeddingModel, label: string, engine?: EngineName): Promise<EngineModel> {
  if (isImportedOnnxModel(model)) {
    // An imported ONNX graph has no TensorFlow.js version: it runs on ONNX Runtime or not at all.
    if (engine === 'tfjs') {
      model.dispose();
      throw new Error(`${model.name} is an imported ONNX model and runs only on ONNX Runtime; drop --engine tfjs`);
    }
    log.info({ engine: 'onnx', model: model.name, alignment: model.alignment, why: 'imported ONNX model' }, 'inference engine selected');
    return Object.assign(model, { engine: 'onnx' as const });
  }
  if (engine === 'tfjs') return tfjsModel(model, 'requested');
  if (!(model instanceof MobileFaceNet || model instanceof SphereFace20)) {
    if (engine === 'onnx') throw new Error(`${model.name} cannot be exported to ONNX; use --engine tfjs`);
    return tfjsModel(model, 'no ONNX export for this network');
  }
  try {
    const session = await OnnxEmbeddingModel.create(exportOnnx(model), label);
    model.dispose();
    log.info({ engine: 'onnx', model: session.name, threads: session.threads }, 'inference engine selected');
    return onnxModel(session);
  } catch (error) {
    if (engine === 'onnx') {
      model.dispose();
      throw error;
    }
    log.warn({ error: (error as Error).message }, 'ONNX Runtime could not run the model; using TensorFlow.js');
    return tfjsModel(model, 'ONNX Runtime failed');
  }
}

function tfjsModel(model: EmbeddingModel, why: string): EngineModel {
  log.info({ engine: 'tfjs', model: model.name, why }, 'inference engine selected');
  return {
    engine: 'tfjs',
    name: model.name,
    inputSize: model.inputSize,
    channelOrder: model.channelOrder,
    normalization: model.normalization,
    embeddingSize: model.embeddingSize,
    predict: (input) => model.predict(input),
    dispose: () => model.dispose(),
  };
}

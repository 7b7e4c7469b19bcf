/**
 * The public API of sphereface-ts, which `import … from 'sphereface-ts'` loads.
 *
 * - Faces: `embed`, `verify` and `createFaceVerifier` turn photos into features and decisions.
 * - Operators: one RxJS stage per export (`readImages`, `detectFaces`, `similarityAlign`,
 *   `batch`, `extractFeatures`, `kFoldVerify`, `trainStep`, …) with their record types.
 * - Pipelines: `runPipeline` runs a spec, and `defineStage`/`defineSource` declare custom operators.
 * - Datasets: readers of LFW pairs and landmarks, image folders and training lists.
 * - Models: network loading by spec, MTCNN, and the tensor backend.
 */
export * from './api/face.ts';

export * from './operators/alignInWorkers.ts';
export * from './operators/batch.ts';
export * from './operators/cached.ts';
export * from './operators/detectFaces.ts';
export * from './operators/detectFacesInWorkers.ts';
export * from './operators/extractFeatures.ts';
export * from './operators/flowControl.ts';
export * from './operators/kFoldVerify.ts';
export * from './operators/progress.ts';
export * from './operators/readImages.ts';
export * from './operators/records.ts';
export * from './operators/similarityAlign.ts';
export * from './operators/trainStep.ts';
export * from './operators/trainingBatches.ts';

export * from './pipelines/runPipeline.ts';
export * from './pipelines/spec.ts';
export { defineSource, defineStage, type OperatorDefinition, type OpenedStage, type PipelineContext } from './pipelines/operatorDefinition.ts';

export * from './datasets/imageFolder.ts';
export * from './datasets/lfw.ts';
export * from './datasets/training.ts';

export { initBackend, activeBackend, BACKEND_NAMES, BackendError, type BackendInfo, type BackendName, type BackendOptions } from './model/backend.ts';
export { loadEngineModel, ENGINE_NAMES, type EngineModel, type EngineName } from './model/engine.ts';
export { loadEmbeddingModel, knownModels, ModelSpecError } from './model/registry.ts';
export { loadModel, type LoadedModel, type LoadModelOptions } from './model/loadModel.ts';
export { SavedModelError, type ModelManifest } from './model/savedModel.ts';
export { loadMtcnn, type LoadMtcnnOptions, type MtcnnNets } from './model/mtcnn.ts';
export { detect, SPHEREFACE_MTCNN_SETTINGS, type Box, type Detection, type MtcnnOptions, type MtcnnSettings } from './model/mtcnnDetect.ts';
export type { EmbeddingModel } from './model/types.ts';
export { ArtifactCache } from './lib/artifactCache.ts';

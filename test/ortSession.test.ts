import t from 'tap';
import * as ort from 'onnxruntime-node';

import { DataType, encodeModel } from '../model/onnx/onnx.proto.ts';
import { createOrtSession } from '../model/ortSession.ts';

/** Builds a graph that doubles its input. */
function doublingModel(): Uint8Array {
  const two = new Float32Array([2]);
  return encodeModel({
    ir_version: 7,
    producer_name: 'ort-session-test',
    producer_version: '1',
    opset_import: [{ domain: '', version: 13 }],
    metadata_props: [],
    graph: {
      name: 'double',
      node: [{ name: 'mul', op_type: 'Mul', input: ['x', 'two'], output: ['y'], attribute: [] }],
      initializer: [{ name: 'two', dims: [1], data_type: DataType.FLOAT, raw_data: new Uint8Array(two.buffer) }],
      input: [{ name: 'x', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_value: 3 }] } } } }],
      output: [{ name: 'y', type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_value: 3 }] } } } }],
    },
  });
}

const cudaListed = (ort as unknown as { listSupportedBackends: () => Array<{ name: string; bundled: boolean }> })
  .listSupportedBackends()
  .some((backend) => backend.name === 'cuda');

t.test('a session starts on the CPU where CUDA cannot, and computes', async (t) => {
  const { session, provider } = await createOrtSession(doublingModel(), { intraOpNumThreads: 1 });
  t.teardown(() => session.release());
  // This machine lists CUDA but has no CUDA libraries, so the session runs on the CPU provider.
  t.equal(provider, 'cpu', `provider (CUDA listed: ${cudaListed})`);
  const out = await session.run({ x: new ort.Tensor('float32', new Float32Array([1, 2, 3]), [3]) });
  t.same(Array.from(out['y']?.data as Float32Array), [2, 4, 6]);
});

t.test("an invalid model fails with ONNX Runtime's own error", async (t) => {
  await t.rejects(createOrtSession(new Uint8Array([1, 2, 3])), /protobuf|parse|model/i);
});

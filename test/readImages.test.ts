import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { from, lastValueFrom, Subject, toArray, type Observable } from 'rxjs';
import sharp from 'sharp';
import t, { type Test } from 'tap';

import { orderedMergeMap } from '../lib/orderedMergeMap.ts';
import { lfwPaths } from '../lib/paths.ts';
import { decodeImage, imageRefs, readImages } from '../operators/readImages.ts';
import { isRejected, reject, type DecodedImage, type ImageRef, type Maybe, type Rejected } from '../operators/records.ts';

const lfwRoot = lfwPaths().images;
const aaronEckhart = path.join(lfwRoot, 'Aaron_Eckhart', 'Aaron_Eckhart_0001.jpg');

const fixtures = fs.mkdtempSync(path.join(os.tmpdir(), 'readImages-test-'));
t.teardown(() => fs.rmSync(fixtures, { recursive: true, force: true }));

function fixture(name: string, bytes: Uint8Array): ImageRef {
  const file = path.join(fixtures, name);
  fs.writeFileSync(file, bytes);
  return { id: name, path: file };
}

function collect<T>(stream: Observable<T>): Promise<T[]> {
  return lastValueFrom(stream.pipe(toArray()));
}

function decoded(t: Test, record: Maybe<DecodedImage> | undefined): DecodedImage {
  if (record === undefined || isRejected(record)) {
    t.fail(`expected a decoded image, got ${JSON.stringify(record)}`);
    throw new Error('not decoded');
  }
  return record;
}

function rejected(t: Test, record: Maybe<DecodedImage> | undefined): Rejected {
  if (record === undefined || !isRejected(record)) {
    t.fail(`expected a rejection, got ${record === undefined ? 'nothing' : `an image ${record.width}×${record.height}`}`);
    throw new Error('not rejected');
  }
  return record;
}

function pixelAt(image: DecodedImage, x: number, y: number): [number, number, number] {
  const offset = (y * image.width + x) * 3;
  return [image.rgb[offset] as number, image.rgb[offset + 1] as number, image.rgb[offset + 2] as number];
}

/** Raw 8-bit RGB(A) pixels from a per-pixel colour function. */
function rawImage(width: number, height: number, channels: 3 | 4, colour: (x: number, y: number) => number[]): Buffer {
  const pixels = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      pixels.set(colour(x, y), (y * width + x) * channels);
    }
  }
  return pixels;
}

// CRC-32 as PNG defines it (polynomial 0xEDB88320), computed bit by bit.
function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let bit = 0; bit < 8; bit += 1) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** Builds a PNG with a valid 8-bit RGB header of the given size and an IDAT that is not a zlib stream. */
function pngWithCorruptPixelData(width: number, height: number): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // colour type RGB
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([
    signature,
    pngChunk('IHDR', header),
    pngChunk('IDAT', Buffer.from('these bytes are not deflate data')),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

t.test('LFW image matches sharp raw decode', async (t) => {
  const image = decoded(t, await decodeImage({ id: 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg', path: aaronEckhart }));
  t.equal(image.width, 250);
  t.equal(image.height, 250);
  t.equal(image.rgb.length, 250 * 250 * 3);
  t.equal(image.id, 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg');

  const direct = await sharp(aaronEckhart).raw().toBuffer({ resolveWithObject: true });
  t.equal(direct.info.channels, 3);
  t.ok(Buffer.from(image.rgb).equals(direct.data), 'pixel bytes equal sharp(file).raw()');
});

t.test('EXIF orientation 6 rotates clockwise', async (t) => {
  // 200×100: left half red, right half blue. Orientation 6 means "rotate 90° clockwise to view",
  // so the left half ends up on top.
  const pixels = rawImage(200, 100, 3, (x) => (x < 100 ? [255, 0, 0] : [0, 0, 255]));
  const jpeg = await sharp(pixels, { raw: { width: 200, height: 100, channels: 3 } })
    .jpeg({ quality: 95 })
    .withMetadata({ orientation: 6 })
    .toBuffer();
  const header = await sharp(jpeg).metadata();
  t.equal(header.orientation, 6, 'fixture carries orientation 6');
  t.equal(header.width, 200, 'fixture is stored 200 wide');

  const image = decoded(t, await decodeImage(fixture('orientation6.jpg', jpeg)));
  t.equal(image.width, 100);
  t.equal(image.height, 200);

  const top = pixelAt(image, 50, 40);
  const bottom = pixelAt(image, 50, 160);
  t.ok(top[0] > 200 && top[2] < 50, `top is red, got ${top.join(',')}`);
  t.ok(bottom[2] > 200 && bottom[0] < 50, `bottom is blue, got ${bottom.join(',')}`);
});

t.test('truncated JPEG rejected, stream goes on', async (t) => {
  const bytes = fs.readFileSync(aaronEckhart);
  const cut = fixture('cut60.jpg', bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  const good: ImageRef = { id: 'good.jpg', path: aaronEckhart };

  let completed = false;
  const output: Maybe<DecodedImage>[] = [];
  await new Promise<void>((resolve, reject) => {
    from([cut, good])
      .pipe(readImages())
      .subscribe({
        next: (record) => output.push(record),
        error: reject,
        complete: () => {
          completed = true;
          resolve();
        },
      });
  });

  t.ok(completed, 'stream completes');
  t.equal(output.length, 2);
  const rejection = rejected(t, output[0]);
  t.equal(rejection.path, cut.path);
  t.equal(rejection.stage, 'readImages');
  t.match(rejection.reason, cut.path, 'reason names the path');
  t.match(rejection.reason, /failed to decode .*: \S/, 'reason carries the decoder message');
  t.equal(decoded(t, output[1]).id, 'good.jpg', 'next image still arrives');

  for (const fraction of [0.1, 0.3, 0.9]) {
    const ref = fixture(`cut${fraction * 100}.jpg`, bytes.subarray(0, Math.floor(bytes.length * fraction)));
    t.ok(isRejected(await decodeImage(ref)), `cut at ${fraction * 100} % is rejected`);
  }
});

t.test('transparent red becomes background', async (t) => {
  // Columns 0-3: red with alpha 0. Columns 4-5: blue with alpha 128. Columns 6-7: opaque green.
  const pixels = rawImage(8, 8, 4, (x) => (x < 4 ? [255, 0, 0, 0] : x < 6 ? [0, 0, 255, 128] : [0, 255, 0, 255]));
  const png = await sharp(pixels, { raw: { width: 8, height: 8, channels: 4 } }).png().toBuffer();
  const header = await sharp(png).metadata();
  t.equal(header.channels, 4, 'fixture has 4 channels');
  const ref = fixture('alpha.png', png);

  const onWhite = decoded(t, await decodeImage(ref));
  let redPixels = 0;
  for (let y = 0; y < 8; y += 1) {
    for (let x = 0; x < 4; x += 1) {
      const [r, g, b] = pixelAt(onWhite, x, y);
      if (r > 200 && g < 50 && b < 50) redPixels += 1;
    }
  }
  t.equal(redPixels, 0, 'no hidden red shows');
  t.same(pixelAt(onWhite, 0, 0), [255, 255, 255], 'transparent pixel is the default white');
  t.same(pixelAt(onWhite, 7, 7), [0, 255, 0], 'opaque pixel keeps its colour');

  // Half-transparent blue over white: each channel is c·a + 255·(1 − a) with a = 128/255.
  const alpha = 128 / 255;
  const expected = [0, 0, 255].map((c) => c * alpha + 255 * (1 - alpha));
  const blended = pixelAt(onWhite, 4, 3);
  for (let channel = 0; channel < 3; channel += 1) {
    t.ok(Math.abs((blended[channel] as number) - (expected[channel] as number)) <= 1, `blend channel ${channel}: ${blended[channel]} ≈ ${expected[channel]}`);
  }

  const onBlack = decoded(t, await decodeImage(ref, { background: { r: 0, g: 0, b: 0 } }));
  t.same(pixelAt(onBlack, 0, 0), [0, 0, 0], 'transparent pixel takes the given background');
});

t.test('grey PNG with alpha uses background', async (t) => {
  // Grey 200 with alpha 0, 128 and 255.
  const pixels = Buffer.from([200, 0, 200, 128, 200, 255]);
  const png = await sharp(pixels, { raw: { width: 3, height: 1, channels: 2 } }).toColourspace('b-w').png().toBuffer();
  const header = await sharp(png).metadata();
  t.equal(header.channels, 2, 'fixture is grey with alpha');

  const image = decoded(t, await decodeImage(fixture('grey-alpha.png', png), { background: { r: 0, g: 0, b: 255 } }));
  t.same(pixelAt(image, 0, 0), [0, 0, 255], 'transparent pixel is the blue background');
  const alpha = 128 / 255;
  t.same(pixelAt(image, 1, 0), [200 * alpha, 200 * alpha, 200 * alpha + 255 * (1 - alpha)].map(Math.round), 'half alpha blends');
  t.same(pixelAt(image, 2, 0), [200, 200, 200], 'opaque pixel keeps its grey');
});

t.test('CMYK JPEG of red decodes to red', async (t) => {
  const jpeg = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 255, g: 0, b: 0 } } })
    .toColourspace('cmyk')
    .jpeg({ quality: 95 })
    .toBuffer();
  const header = await sharp(jpeg).metadata();
  t.equal(header.space, 'cmyk', 'fixture is CMYK');
  t.equal(header.channels, 4, 'fixture has 4 channels');

  const image = decoded(t, await decodeImage(fixture('cmyk-red.jpg', jpeg)));
  t.equal(image.rgb.length, 32 * 32 * 3);
  // Red is C = 0, M = Y = 255 in CMYK, so a decoder that reads C, M, Y as R, G, B gives cyan
  // (0, 255, 255). Through libvips' fallback CMYK profile red comes back near (232, 0, 21).
  let notRed = 0;
  for (let pixel = 0; pixel < 32 * 32; pixel += 1) {
    const [r, g, b] = [image.rgb[pixel * 3] as number, image.rgb[pixel * 3 + 1] as number, image.rgb[pixel * 3 + 2] as number];
    if (!(r > 200 && g < 50 && b < 50)) notRed += 1;
  }
  t.equal(notRed, 0, `every pixel is red, first is ${pixelAt(image, 0, 0).join(',')}`);
});

t.test('grey JPEG gets three equal channels', async (t) => {
  const jpeg = await sharp(aaronEckhart).greyscale().toColourspace('b-w').jpeg().toBuffer();
  const header = await sharp(jpeg).metadata();
  t.equal(header.channels, 1, 'fixture has 1 channel');
  t.equal(header.width, 250);

  const image = decoded(t, await decodeImage(fixture('grey.jpg', jpeg)));
  t.equal(image.width, 250);
  t.equal(image.height, 250);

  const grey = await sharp(jpeg).extractChannel(0).raw().toBuffer();
  t.equal(grey.length, 250 * 250);
  let unequal = 0;
  let differentFromGrey = 0;
  for (let pixel = 0; pixel < 250 * 250; pixel += 1) {
    const [r, g, b] = [image.rgb[pixel * 3], image.rgb[pixel * 3 + 1], image.rgb[pixel * 3 + 2]];
    if (r !== g || g !== b) unequal += 1;
    if (r !== grey[pixel]) differentFromGrey += 1;
  }
  t.equal(unequal, 0, 'R = G = B everywhere');
  t.equal(differentFromGrey, 0, 'each channel equals the single grey channel');
});

t.test('16-bit samples divide by 257 and round', async (t) => {
  // 25829 / 257 = 100.50 rounds to 101, where dropping the low byte would give 100.
  const values = [0, 200, 255, 25700, 25829, 32896, 65279, 65535];
  const samples = new Uint16Array(values.length * 3);
  values.forEach((value, x) => samples.set([value, value, 65535 - value], x * 3));
  // sharp takes the raw sample depth from the array type, so a Uint16Array means 16 bits.
  const png = await sharp(samples, { raw: { width: values.length, height: 1, channels: 3 } })
    .toColourspace('rgb16')
    .png()
    .toBuffer();
  const header = await sharp(png).metadata();
  t.equal(header.depth, 'ushort', 'fixture is 16-bit');

  const image = decoded(t, await decodeImage(fixture('depth16.png', png)));
  t.equal(image.width, values.length);
  values.forEach((value, x) => {
    t.same(pixelAt(image, x, 0), [Math.round(value / 257), Math.round(value / 257), Math.round((65535 - value) / 257)], `sample ${value}`);
  });
  t.equal(pixelAt(image, 3, 0)[0], 100, '25700 becomes 100');
});

t.test('16-bit alpha flattens onto background', async (t) => {
  // Pixel 0: red with alpha 0. Pixel 1: red with alpha 32768 (about a half).
  const samples = new Uint16Array([65535, 0, 0, 0, 65535, 0, 0, 32768]);
  const png = await sharp(samples, { raw: { width: 2, height: 1, channels: 4 } }).toColourspace('rgb16').png().toBuffer();
  const header = await sharp(png).metadata();
  t.equal(header.depth, 'ushort', 'fixture is 16-bit');
  t.equal(header.channels, 4, 'fixture has alpha');

  const image = decoded(t, await decodeImage(fixture('alpha16.png', png), { background: { r: 10, g: 20, b: 30 } }));
  t.same(pixelAt(image, 0, 0), [10, 20, 30], 'transparent red becomes the background');
  const alpha = 32768 / 65535;
  const expected = [255 * alpha + 10 * (1 - alpha), 20 * (1 - alpha), 30 * (1 - alpha)].map(Math.round);
  t.same(pixelAt(image, 1, 0), expected, 'half alpha blends red and background');
});

t.test('oversized image rejected before decoding', async (t) => {
  // Both files have a valid header and pixel data that no decoder accepts. The small one shows
  // what decoding gives. The large one must be rejected for its size, which proves the size
  // check ran first.
  const small = fixture('corrupt-16.png', pngWithCorruptPixelData(16, 16));
  const smallResult = rejected(t, await decodeImage(small));
  t.match(smallResult.reason, /failed to decode/, 'corrupt pixel data fails in the decoder');

  const huge = fixture('corrupt-16384.png', pngWithCorruptPixelData(16384, 16384));
  const started = performance.now();
  const hugeResult = rejected(t, await decodeImage(huge));
  const elapsedMilliseconds = performance.now() - started;
  t.match(hugeResult.reason, huge.path, 'reason names the path');
  t.match(hugeResult.reason, '16384×16384', 'reason names the size');
  t.match(hugeResult.reason, '50000000', 'reason names the default limit');
  t.match(hugeResult.reason, /maxPixels/, 'reason says how to raise the limit');
  t.notMatch(hugeResult.reason, /failed to decode/, 'no decode was attempted');
  t.comment(`rejected in ${elapsedMilliseconds.toFixed(1)} ms`);
});

t.test('maxPixels limit is inclusive', async (t) => {
  const png = await sharp({ create: { width: 300, height: 200, channels: 3, background: '#808080' } }).png().toBuffer();
  const ref = fixture('300x200.png', png);

  const over = rejected(t, await decodeImage(ref, { maxPixels: 59_999 }));
  t.match(over.reason, '300×200 = 60000 pixels');
  t.match(over.reason, 'limit of 59999');

  const exact = decoded(t, await decodeImage(ref, { maxPixels: 60_000 }));
  t.equal(exact.width * exact.height, 60_000);
});

t.test('animated files give the first frame', async (t) => {
  const red = await sharp({ create: { width: 8, height: 6, channels: 3, background: '#ff0000' } }).png().toBuffer();
  const blue = await sharp({ create: { width: 8, height: 6, channels: 3, background: '#0000ff' } }).png().toBuffer();

  for (const format of ['gif', 'webp'] as const) {
    const animation = await sharp([red, blue], { join: { animated: true } })[format]().toBuffer();
    const header = await sharp(animation, { pages: -1 }).metadata();
    t.equal(header.pages, 2, `${format} fixture has 2 frames`);
    t.equal(header.height, 12, `${format} fixture stacks to 12 rows`);

    const image = decoded(t, await decodeImage(fixture(`animated.${format}`, animation)));
    t.equal(image.width, 8, `${format} width`);
    t.equal(image.height, 6, `${format} height is one frame`);
    let notRed = 0;
    for (let pixel = 0; pixel < 8 * 6; pixel += 1) {
      if (!((image.rgb[pixel * 3] as number) > 240 && (image.rgb[pixel * 3 + 2] as number) < 15)) notRed += 1;
    }
    t.equal(notRed, 0, `${format} pixels come from the red first frame`);
  }
});

t.test('unreadable files are rejected', async (t) => {
  const missing = path.join(fixtures, 'missing.jpg');
  const missingResult = rejected(t, await decodeImage({ id: 'missing.jpg', path: missing }));
  t.equal(missingResult.reason, `file not found: ${missing}`);

  const text = fixture('text.jpg', Buffer.from('plain text, not an image\n'));
  const textResult = rejected(t, await decodeImage(text));
  t.match(textResult.reason, `failed to read the image header of ${text.path}`);

  const folder = rejected(t, await decodeImage({ id: 'folder', path: fixtures }));
  t.equal(folder.reason, `not a regular file: ${fixtures}`);
});

t.test('order kept over 20 LFW files', async (t) => {
  const people = fs.readdirSync(lfwRoot).filter((name) => name.startsWith('A')).sort().slice(0, 20);
  const refs: ImageRef[] = people.map((name) => {
    const file = fs.readdirSync(path.join(lfwRoot, name)).sort()[0] as string;
    return { id: `${name}/${file}`, path: path.join(lfwRoot, name, file) };
  });
  const missing: ImageRef = { id: 'Nobody/Nobody_0001.jpg', path: path.join(lfwRoot, 'Nobody', 'Nobody_0001.jpg') };
  refs.splice(7, 0, missing);

  const output = await collect(from(refs).pipe(readImages({ concurrency: 2 })));
  t.same(output.map((record) => record.id), refs.map((ref) => ref.id), 'ids come out in input order');

  const rejection = rejected(t, output[7]);
  t.match(rejection.reason, missing.path, 'missing file rejection names the path');

  for (const [position, record] of output.entries()) {
    if (position === 7) continue;
    const image = decoded(t, record);
    const direct = await sharp((refs[position] as ImageRef).path).raw().toBuffer();
    t.ok(Buffer.from(image.rgb).equals(direct), `pixels at position ${position} belong to ${image.id}`);
  }
});

t.test('rejections pass through unchanged', async (t) => {
  const earlier = reject({ id: 'x', path: '/nowhere/x.jpg' }, 'someStage', 'no reason');
  const output = await collect(from<Maybe<ImageRef>[]>([earlier, { id: 'a', path: aaronEckhart }]).pipe(readImages()));
  t.equal(output[0], earlier, 'same object, first place');
  t.equal(decoded(t, output[1]).id, 'a');
});

t.test('invalid options throw at once', async (t) => {
  for (const maxPixels of [0, -5, 1.5, Number.NaN]) {
    t.throws(() => readImages({ maxPixels }), RangeError, `maxPixels ${maxPixels}`);
  }
  t.throws(() => readImages({ concurrency: 0 }), /concurrency must be a positive integer, got 0/);
  t.throws(() => readImages({ background: { r: 256, g: 0, b: 0 } }), /background\.r must be an integer from 0 to 255, got 256/);
  t.throws(() => readImages({ background: { r: 0, g: -1, b: 0 } }), /background\.g/);
  t.throws(() => decodeImage({ id: 'a', path: aaronEckhart }, { maxPixels: -1 }), /decodeImage: maxPixels must be a positive integer, got -1/);
});

t.test('imageRefs expands a glob in sorted order', async (t) => {
  const refs = await collect(imageRefs('Aaron_*/*.jpg', { cwd: lfwRoot }));

  const expected: string[] = [];
  for (const person of fs.readdirSync(lfwRoot).filter((name) => name.startsWith('Aaron_'))) {
    for (const file of fs.readdirSync(path.join(lfwRoot, person))) expected.push(`${person}/${file}`);
  }
  expected.sort();

  t.same(refs.map((ref) => ref.id), expected);
  t.equal(refs[0]?.path, path.join(lfwRoot, expected[0] as string), 'path is absolute');
});

t.test('imageRefs takes a list', async (t) => {
  const refs = await collect(
    imageRefs(['lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg', '/elsewhere/b.jpg', { id: 'given', path: 'c.jpg' }], { cwd: '/data' }),
  );
  t.same(refs, [
    { id: 'lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg', path: '/data/lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg' },
    { id: '../elsewhere/b.jpg', path: '/elsewhere/b.jpg' },
    { id: 'given', path: '/data/c.jpg' },
  ]);

  t.throws(() => imageRefs(['a.jpg', 'b.jpg', './a.jpg'], { cwd: '/data' }), /entries 0 and 2 have the same id 'a.jpg'/);
  await t.rejects(collect(imageRefs('no-such-folder/*.jpg', { cwd: lfwRoot })), /no file matches the pattern 'no-such-folder\/\*\.jpg'/);
});

t.test('orderedMergeMap bounds the window', async (t) => {
  const resolvers: ((value: string) => void)[] = [];
  let started = 0;
  let maxLive = 0;
  let emitted = 0;
  const output: string[] = [];
  let completed = false;

  const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

  from([0, 1, 2, 3, 4, 5, 6])
    .pipe(
      orderedMergeMap((value: number, index: number) => {
        started += 1;
        maxLive = Math.max(maxLive, started - emitted);
        return new Promise<string>((resolve) => {
          resolvers[index] = resolve;
        });
      }, 3),
    )
    .subscribe({
      next: (value) => {
        emitted += 1;
        output.push(value);
      },
      complete: () => {
        completed = true;
      },
    });

  t.equal(started, 3, 'three projections start');

  resolvers[2]?.('v2');
  resolvers[1]?.('v1');
  await settle();
  t.same(output, [], 'later results wait for the first');
  t.equal(started, 3, 'finished results waiting for the first hold their slots');

  resolvers[0]?.('v0');
  await settle();
  t.same(output, ['v0', 'v1', 'v2'], 'results come out in order once the first is done');
  t.equal(started, 6, 'three more start');

  for (const index of [5, 4, 3]) resolvers[index]?.(`v${index}`);
  await settle();
  t.same(output, ['v0', 'v1', 'v2', 'v3', 'v4', 'v5']);
  t.equal(started, 7, 'the last value starts');
  t.notOk(completed, 'not complete while a result is pending');

  resolvers[6]?.('v6');
  await settle();
  t.same(output, ['v0', 'v1', 'v2', 'v3', 'v4', 'v5', 'v6']);
  t.ok(completed, 'completes after the last result');
  t.equal(maxLive, 3, 'never more than three started and not yet emitted');
});

t.test('orderedMergeMap emits before completion', async (t) => {
  const source = new Subject<number>();
  const output: number[] = [];
  source.pipe(orderedMergeMap(async (value: number) => value * 10, 2)).subscribe((value) => output.push(value));

  source.next(1);
  await new Promise<void>((resolve) => setImmediate(resolve));
  t.same(output, [10], 'first result arrives while the source is still open');
  source.complete();
});

t.test('orderedMergeMap errors on a failed projection', async (t) => {
  const stream = from([1, 2, 3]).pipe(
    orderedMergeMap(async (value: number) => {
      if (value === 2) throw new Error('disk failed');
      return value;
    }, 2),
  );
  await t.rejects(collect(stream), /disk failed/);
  t.throws(() => orderedMergeMap(async (value: number) => value, 0), /concurrency must be a positive integer, got 0/);
});

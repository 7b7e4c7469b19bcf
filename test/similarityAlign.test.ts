import { readFile } from 'node:fs/promises';
import path from 'node:path';
import t from 'tap';
import sharp from 'sharp';
import { from, lastValueFrom, toArray } from 'rxjs';
import {
  applyAffine,
  fitSimilarity,
  matrixTwoNorm,
  SimilarityFitError,
  SPHEREFACE_TEMPLATE,
  squareTemplate,
  toColumnForm,
  type Affine,
} from '../lib/cp2tform.ts';
import { lfwPaths } from '../lib/paths.ts';
import { alignFace, similarityAlign, warpBilinear, type RgbImage } from '../operators/similarityAlign.ts';
import {
  isRejected,
  reject,
  type AlignedFace,
  type FivePoints,
  type LandmarkedImage,
  type Maybe,
  type Point,
} from '../operators/records.ts';

const AARON_ID = 'Aaron_Eckhart/Aaron_Eckhart_0001.jpg';
const AARON_LANDMARKS: FivePoints = [
  [107, 107],
  [147, 111],
  [124, 143],
  [103, 157],
  [139, 161],
];
// The cp2tform result for AARON_LANDMARKS onto the SphereFace template, computed by a separate
// reimplementation of Matlab's algorithm. It is the column-vector 2×3 matrix [a c tx; b d ty].
const AARON_FORWARD_COLUMNS = [
  [0.81690977, 0.09797321, -66.57541285],
  [-0.09797321, 0.81690977, -26.88688852],
] as const;

const identity: Affine = [
  [1, 0],
  [0, 1],
  [0, 0],
];

function translation(dx: number, dy: number): Affine {
  return [
    [1, 0],
    [0, 1],
    [dx, dy],
  ];
}

/** Builds an image whose G and B are R + 1 and R + 2, so a channel mix-up shows. */
function syntheticImage(width: number, height: number, value: (x: number, y: number) => number): RgbImage {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const base = value(x, y);
      rgb[(y * width + x) * 3] = base;
      rgb[(y * width + x) * 3 + 1] = base + 1;
      rgb[(y * width + x) * 3 + 2] = base + 2;
    }
  }
  return { width, height, rgb };
}

function pixel(image: RgbImage, x: number, y: number, channel: number): number {
  return image.rgb[(y * image.width + x) * 3 + channel]!;
}

async function loadAaron(): Promise<LandmarkedImage> {
  const paths = lfwPaths();
  const file = path.join(paths.images, AARON_ID);
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const listing = await readFile(paths.landmarks, 'utf8');
  const line = listing.split('\n').find((row) => row.startsWith(`${AARON_ID}\t`));
  if (line === undefined) throw new Error(`${paths.landmarks}: no line for ${AARON_ID}`);
  const [x1, y1, x2, y2, x3, y3, x4, y4, x5, y5] = line.trim().split('\t').slice(1).map(Number) as number[] as [
    number, number, number, number, number, number, number, number, number, number,
  ];
  return {
    id: AARON_ID,
    path: file,
    width: info.width,
    height: info.height,
    rgb: new Uint8Array(data.buffer, data.byteOffset, data.length),
    landmarks: {
      points: [
        [x1, y1],
        [x2, y2],
        [x3, y3],
        [x4, y4],
        [x5, y5],
      ],
      origin: 'one-based',
    },
  };
}

t.test('fitSimilarity on Aaron_Eckhart_0001 matches cp2tform', async (t) => {
  const fit = fitSimilarity(AARON_LANDMARKS, SPHEREFACE_TEMPLATE);
  const columns = toColumnForm(fit.forward);
  for (let row = 0; row < 2; row++) {
    for (let col = 0; col < 3; col++) {
      t.ok(
        Math.abs(columns[row]![col]! - AARON_FORWARD_COLUMNS[row]![col]!) < 1e-6,
        `forward[${row}][${col}] = ${columns[row]![col]}, expected ${AARON_FORWARD_COLUMNS[row]![col]}`,
      );
    }
  }
  t.equal(fit.reflective, false);

  const [[a, b]] = fit.forward;
  const scale = Math.hypot(a, b);
  const rotationDegrees = (Math.atan2(b, a) * 180) / Math.PI;
  t.ok(Math.abs(scale - 0.82276) < 1e-4, `scale ${scale}`);
  t.ok(Math.abs(rotationDegrees - -6.839) < 1e-4, `rotation ${rotationDegrees}°`);
});

t.test('fitSimilarity reproduces the Matlab cp2tform example', async (t) => {
  const input: Point[] = [
    [0, 0],
    [6, 3],
    [-2, 5],
  ];
  const base: Point[] = [
    [-1, -1],
    [0, -10],
    [4, 4],
  ];
  const expected = [
    [-0.0764, -1.619],
    [1.619, -0.0764],
    [-3.2156, 0.029],
  ];
  const fit = fitSimilarity(input, base);
  t.equal(fit.reflective, false, 'the non-reflective fit wins, as in Matlab');
  for (let row = 0; row < 3; row++) {
    for (let col = 0; col < 2; col++) {
      const value = fit.forward[row]![col]!;
      t.ok(Math.abs(value - expected[row]![col]!) < 1e-4, `T[${row}][${col}] = ${value}`);
    }
  }
});

t.test('fitSimilarity picks the reflective fit for a mirrored template', async (t) => {
  // Mirror the template about the vertical centre line of the 96-wide crop (1-based: x → 97 − x).
  const mirrored = SPHEREFACE_TEMPLATE.map(([x, y]): Point => [97 - x, y]);
  const fit = fitSimilarity(mirrored, SPHEREFACE_TEMPLATE);

  t.equal(fit.reflective, true);
  t.ok(fit.residual < 1e-9, `residual ${fit.residual}`);
  const [[a, b], [c, d], [tx, ty]] = fit.forward;
  t.ok(Math.abs(a - -1) < 1e-12 && Math.abs(d - 1) < 1e-12, `linear part [[${a}, ${b}], [${c}, ${d}]]`);
  t.ok(Math.abs(b) < 1e-12 && Math.abs(c) < 1e-12, 'no rotation');
  t.ok(Math.abs(tx - 97) < 1e-9 && Math.abs(ty) < 1e-9, `translation (${tx}, ${ty})`);
});

t.test('fitSimilarity skips a singular non-reflective fit', async (t) => {
  // For a square mirrored left to right, the best non-reflective similarity has zero scale.
  const base: Point[] = [
    [-1, -1],
    [1, -1],
    [1, 1],
    [-1, 1],
  ];
  const input = base.map(([x, y]): Point => [-x + 10, y + 20]);
  const fit = fitSimilarity(input, base);
  t.equal(fit.reflective, true);
  t.ok(fit.residual < 1e-12, `residual ${fit.residual}`);
});

t.test('fitSimilarity recovers a known transform', async (t) => {
  const scale = 0.6731;
  const angle = (17.25 * Math.PI) / 180;
  const [shiftX, shiftY] = [-58.125, 11.5];
  const cos = Math.cos(angle);
  const sin = Math.sin(angle);

  // Forward (detected → template): x = s(cos·u − sin·v) + shiftX, y = s(sin·u + cos·v) + shiftY.
  // Its inverse, written out by hand, gives the "detected" points.
  const detected = SPHEREFACE_TEMPLATE.map(([x, y]): Point => {
    const dx = (x - shiftX) / scale;
    const dy = (y - shiftY) / scale;
    return [cos * dx + sin * dy, -sin * dx + cos * dy];
  });
  const fit = fitSimilarity(detected, SPHEREFACE_TEMPLATE);
  const [[a, b], [c, d], [tx, ty]] = fit.forward;

  t.equal(fit.reflective, false);
  t.ok(Math.abs(Math.hypot(a, b) - scale) < 1e-9, `scale ${Math.hypot(a, b)}`);
  t.ok(Math.abs(Math.atan2(b, a) - angle) < 1e-9, `angle ${Math.atan2(b, a)}`);
  t.ok(Math.abs(a - scale * cos) < 1e-9 && Math.abs(d - scale * cos) < 1e-9, 'cosine terms');
  t.ok(Math.abs(c + scale * sin) < 1e-9, `c = ${c}`);
  t.ok(Math.abs(tx - shiftX) < 1e-9, `tx = ${tx}`);
  t.ok(Math.abs(ty - shiftY) < 1e-9, `ty = ${ty}`);
  t.ok(fit.residual < 1e-9, `residual ${fit.residual}`);

  // The inverse really is the inverse.
  for (const point of detected) {
    const [u, v] = applyAffine(fit.inverse, applyAffine(fit.forward, point));
    t.ok(Math.abs(u - point[0]) < 1e-9 && Math.abs(v - point[1]) < 1e-9, `round trip of ${point}`);
  }
});

t.test('fitSimilarity rejects degenerate point sets', async (t) => {
  const same: Point[] = Array.from({ length: 5 }, (): Point => [120.1, 130.7]);
  t.throws(() => fitSimilarity(same, SPHEREFACE_TEMPLATE), { name: 'SimilarityFitError', problem: 'degenerate-input' });

  const withNaN: Point[] = [[107, 107], [147, Number.NaN], [124, 143], [103, 157], [139, 161]];
  try {
    fitSimilarity(withNaN, SPHEREFACE_TEMPLATE);
    t.fail('expected a SimilarityFitError');
  } catch (error) {
    t.ok(error instanceof SimilarityFitError);
    t.equal((error as SimilarityFitError).problem, 'non-finite');
    t.match((error as Error).message, '(147, NaN)', 'the message shows the bad value');
  }

  const withInfinity: Point[] = [[107, 107], [147, 111], [Infinity, 143], [103, 157], [139, 161]];
  t.throws(() => fitSimilarity(withInfinity, SPHEREFACE_TEMPLATE), { name: 'SimilarityFitError', problem: 'non-finite' });
  t.throws(() => fitSimilarity(AARON_LANDMARKS, same), { name: 'SimilarityFitError', problem: 'degenerate-base' });
  t.throws(() => fitSimilarity(AARON_LANDMARKS.slice(0, 4), SPHEREFACE_TEMPLATE), { name: 'SimilarityFitError', problem: 'length-mismatch' });
  t.throws(() => fitSimilarity([[1, 2]], [[3, 4]]), { name: 'SimilarityFitError', problem: 'too-few-points' });
});

t.test('matrixTwoNorm is the largest singular value', async (t) => {
  t.equal(matrixTwoNorm([[3, 0], [0, 4]]), 4, 'not the Frobenius norm 5');
  t.ok(Math.abs(matrixTwoNorm([[1, 1], [1, 1]]) - 2) < 1e-15);
  // [[1, 2], [3, 4]]: AᵀA = [[10, 14], [14, 20]], largest eigenvalue 15 + √221.
  t.ok(Math.abs(matrixTwoNorm([[1, 2], [3, 4]]) - Math.sqrt(15 + Math.sqrt(221))) < 1e-14);
});

t.test('squareTemplate shifts x by 8 for 112×112', async (t) => {
  const { template, outputSize } = squareTemplate();
  t.same(outputSize, { height: 112, width: 112 });
  template.forEach(([x, y], k) => {
    const [x0, y0] = SPHEREFACE_TEMPLATE[k]!;
    t.ok(Math.abs(x - (x0 + 8)) < 1e-12, `point ${k} x`);
    t.equal(y, y0, `point ${k} y`);
  });
});

t.test('warpBilinear with identity reproduces the image', async (t) => {
  const image = syntheticImage(5, 4, (x, y) => 17 * x + 41 * y + 3);
  const out = warpBilinear(image, identity, { width: 5, height: 4 });
  t.same(Array.from(out), Array.from(image.rgb));
});

t.test('warpBilinear shifts by one column', async (t) => {
  const image = syntheticImage(5, 4, (x, y) => 17 * x + 41 * y + 3);
  // Forward x' = x + 1, so output column i samples input column i − 1.
  const out = { width: 5, height: 4, rgb: warpBilinear(image, translation(-1, 0), { width: 5, height: 4 }) };
  for (let y = 0; y < 4; y++) {
    for (let channel = 0; channel < 3; channel++) {
      t.equal(pixel(out, 0, y, channel), 0, `column 0 row ${y} is black`);
      for (let x = 1; x < 5; x++) {
        t.equal(pixel(out, x, y, channel), pixel(image, x - 1, y, channel), `(${x}, ${y}) channel ${channel}`);
      }
    }
  }
});

t.test('warpBilinear half-pixel shift averages neighbours', async (t) => {
  const image: RgbImage = {
    width: 3,
    height: 2,
    rgb: Uint8Array.from([10, 0, 255, 20, 1, 255, 31, 4, 255, 100, 9, 0, 200, 10, 0, 51, 20, 0]),
  };
  // Output column i samples input x = i − 0.5: half of column i − 1 plus half of column i, and
  // column 0 blends pixel 0 with the black outside. Worked out by hand, rounding half up.
  const right = warpBilinear(image, translation(-0.5, 0), { width: 3, height: 2 });
  t.same(Array.from(right), [5, 0, 128, 15, 1, 255, 26, 3, 255, 50, 5, 0, 150, 10, 0, 126, 15, 0]);

  // Output column i samples input x = i + 0.5: the last column blends with the black outside.
  const left = warpBilinear(image, translation(0.5, 0), { width: 3, height: 2 });
  t.same(Array.from(left), [15, 1, 255, 26, 3, 255, 16, 2, 128, 150, 10, 0, 126, 15, 0, 26, 10, 0]);

  // Vertical half pixel down: row 0 blends with the black row above.
  const down = warpBilinear(image, translation(0, -0.5), { width: 3, height: 2 });
  t.same(Array.from(down), [5, 0, 128, 10, 1, 128, 16, 2, 128, 55, 5, 128, 110, 6, 128, 41, 12, 128]);
});

t.test('warpBilinear gives 0 outside the image', async (t) => {
  const image = syntheticImage(4, 4, () => 200);
  const far = warpBilinear(image, translation(-1000, 37.5), { width: 4, height: 4 });
  t.ok(far.every((value) => value === 0), 'all black');

  // Sample points exactly one pixel outside (x = −1 and x = width) give 0, and the column half
  // a pixel outside gives half the value.
  const wide = warpBilinear(image, translation(-1, 0), { width: 7, height: 4 });
  const view = { width: 7, height: 4, rgb: wide };
  t.equal(pixel(view, 0, 0, 0), 0, 'x = −1 is outside');
  t.equal(pixel(view, 5, 0, 0), 0, 'x = width is outside');
  const halfOut = warpBilinear(image, translation(0.5, 0), { width: 4, height: 4 });
  t.equal(pixel({ width: 4, height: 4, rgb: halfOut }, 3, 2, 0), 100, 'x = width − 0.5 is half black');
});

t.test('warpBilinear rejects a short pixel buffer', async (t) => {
  const image = { width: 4, height: 4, rgb: new Uint8Array(10) };
  t.throws(() => warpBilinear(image, identity, { width: 2, height: 2 }), RangeError);
  t.throws(() => warpBilinear(syntheticImage(2, 2, () => 1), identity, { width: 0, height: 2 }), RangeError);
});

/** Bilinear sample of one channel in float64, 0 outside, written without the code under test. */
function naiveSample(image: LandmarkedImage, x: number, y: number, channel: number): number {
  const at = (col: number, row: number): number =>
    col < 0 || row < 0 || col >= image.width || row >= image.height
      ? 0
      : image.rgb[(row * image.width + col) * 3 + channel]!;
  const col = Math.floor(x);
  const row = Math.floor(y);
  const fx = x - col;
  const fy = y - row;
  const top = at(col, row) * (1 - fx) + at(col + 1, row) * fx;
  const bottom = at(col, row + 1) * (1 - fx) + at(col + 1, row + 1) * fx;
  return top * (1 - fy) + bottom * fy;
}

t.test('alignFace on a real LFW image', async (t) => {
  const image = await loadAaron();
  t.same(image.landmarks.points, AARON_LANDMARKS, 'landmark file line for Aaron_Eckhart_0001');
  t.equal(image.rgb.length, 250 * 250 * 3);

  const face = alignFace(image);
  t.equal(face.width, 96);
  t.equal(face.height, 112);
  t.equal(face.rgb.length, 112 * 96 * 3);
  t.equal(face.id, AARON_ID);

  // Invert the reference column-form matrix [m00 m01 m02; m10 m11 m12] by the 2×2 formula and
  // sample each output pixel at inverse(i + 1, j + 1) − 1.
  const [[m00, m01, m02], [m10, m11, m12]] = AARON_FORWARD_COLUMNS;
  const determinant = m00 * m11 - m01 * m10;
  let compared = 0;
  let exact = 0;
  let worst = 0;
  for (let j = 0; j < 112; j++) {
    for (let i = 0; i < 96; i++) {
      const x = i + 1 - m02;
      const y = j + 1 - m12;
      const u = (m11 * x - m01 * y) / determinant;
      const v = (-m10 * x + m00 * y) / determinant;
      for (let channel = 0; channel < 3; channel++) {
        const expected = Math.round(naiveSample(image, u - 1, v - 1, channel));
        const actual = face.rgb[(j * 96 + i) * 3 + channel]!;
        const difference = Math.abs(actual - expected);
        worst = Math.max(worst, difference);
        if (difference === 0) exact++;
        compared++;
      }
    }
  }
  // The reference matrix has 8 decimals, so a value within ~1e-6 of a rounding boundary may land
  // on the other side.
  t.ok(worst <= 1, `largest difference ${worst}`);
  t.ok(exact / compared > 0.999, `${exact} of ${compared} values equal`);

  // The crop lies inside the 250×250 photo, so the comparison above is not black against black.
  const black = face.rgb.filter((value) => value === 0).length;
  t.ok(black < face.rgb.length / 100, `${black} zero values in the crop`);
});

t.test('aligned landmarks land near the template', async (t) => {
  const image = await loadAaron();
  const face = alignFace(image);
  const mapped = image.landmarks.points.map((point) => applyAffine(face.transform, point));

  // The inverse-frame least-squares fit has zero mean residual in the input frame, so the
  // landmark centroid maps exactly onto the template centroid.
  const mean = (points: readonly Point[], axis: 0 | 1): number =>
    points.reduce((sum, point) => sum + point[axis], 0) / points.length;
  t.ok(Math.abs(mean(mapped, 0) - mean(SPHEREFACE_TEMPLATE, 0)) < 1e-9, 'centroid x');
  t.ok(Math.abs(mean(mapped, 1) - mean(SPHEREFACE_TEMPLATE, 1)) < 1e-9, 'centroid y');

  // The eye midpoint is about 1.9 px above the template's; this face's nose sits low.
  const eyes = (points: readonly Point[]): Point => [
    (points[0]![0] + points[1]![0]) / 2,
    (points[0]![1] + points[1]![1]) / 2,
  ];
  const [mx, my] = eyes(mapped);
  const [tx, ty] = eyes(SPHEREFACE_TEMPLATE);
  t.ok(Math.hypot(mx - tx, my - ty) < 2.5, `eye midpoint (${mx}, ${my}) vs (${tx}, ${ty})`);
  for (const k of [0, 1]) {
    const distance = Math.hypot(mapped[k]![0] - SPHEREFACE_TEMPLATE[k]![0], mapped[k]![1] - SPHEREFACE_TEMPLATE[k]![1]);
    t.ok(distance < 3, `eye ${k} is ${distance} px from the template`);
  }
});

t.test('alignFace with the square template gives 112×112', async (t) => {
  const image = await loadAaron();
  const face = alignFace(image, squareTemplate());
  t.equal(face.width, 112);
  t.equal(face.height, 112);
  t.equal(face.rgb.length, 112 * 112 * 3);

  // The square crop is the 96-wide crop with 8 extra columns on each side.
  const narrow = alignFace(image);
  let differences = 0;
  for (let j = 0; j < 112; j++) {
    for (let i = 0; i < 96 * 3; i++) {
      if (Math.abs(face.rgb[j * 112 * 3 + 8 * 3 + i]! - narrow.rgb[j * 96 * 3 + i]!) > 1) differences++;
    }
  }
  t.equal(differences, 0);
});

t.test('zero-based landmarks are shifted to one-based', async (t) => {
  const image = await loadAaron();
  const zeroBased: LandmarkedImage = {
    ...image,
    landmarks: { origin: 'zero-based', points: AARON_LANDMARKS.map(([x, y]): Point => [x - 1, y - 1]) as unknown as FivePoints },
  };
  const expected = alignFace(image);
  const actual = alignFace(zeroBased);
  for (let row = 0; row < 3; row++) {
    for (let col = 0; col < 2; col++) {
      t.ok(Math.abs(actual.transform[row]![col]! - expected.transform[row]![col]!) < 1e-9, `T[${row}][${col}]`);
    }
  }
});

t.test('similarityAlign rejects degenerate landmarks and goes on', async (t) => {
  const image = await loadAaron();
  const degenerate: LandmarkedImage = {
    ...image,
    id: 'degenerate',
    path: '/images/degenerate.jpg',
    landmarks: { origin: 'one-based', points: [[50, 60], [50, 60], [50, 60], [50, 60], [50, 60]] },
  };
  const withNaN: LandmarkedImage = {
    ...image,
    id: 'nan',
    path: '/images/nan.jpg',
    landmarks: { origin: 'one-based', points: [[50, 60], [NaN, 60], [70, 80], [40, 100], [70, 100]] },
  };
  const shortBuffer: LandmarkedImage = { ...image, id: 'short', path: '/images/short.jpg', rgb: new Uint8Array(12) };
  const earlier = reject({ id: 'unreadable', path: '/images/unreadable.jpg' }, 'readImages', 'truncated JPEG');

  // lastValueFrom resolves only when the stream completes, and rejects if it errors.
  const out: Array<Maybe<AlignedFace>> = await lastValueFrom(
    from<Array<Maybe<LandmarkedImage>>>([image, degenerate, earlier, withNaN, shortBuffer, image]).pipe(
      similarityAlign(),
      toArray(),
    ),
  );

  t.same(
    out.map((value) => (isRejected(value) ? `rejected:${value.id}:${value.stage}` : `face:${value.id}`)),
    [
      `face:${AARON_ID}`,
      'rejected:degenerate:similarityAlign',
      'rejected:unreadable:readImages',
      'rejected:nan:similarityAlign',
      'rejected:short:similarityAlign',
      `face:${AARON_ID}`,
    ],
  );

  const [, first, passed, second, third] = out;
  t.equal(passed, earlier, 'an earlier rejection passes through unchanged');
  if (!isRejected(first) || !isRejected(second) || !isRejected(third)) throw new Error('expected rejections');
  t.equal(first.path, '/images/degenerate.jpg');
  t.match(first.reason, '/images/degenerate.jpg');
  t.match(first.reason, '(50, 60), (50, 60)');
  t.match(second.reason, '(NaN, 60)');
  t.match(third.reason, 'pixel buffer has 12 bytes');
});

t.test('similarityAlign validates options at once', async (t) => {
  const image = await loadAaron();
  const fourPoints = SPHEREFACE_TEMPLATE.slice(0, 4) as unknown as FivePoints;
  t.throws(() => similarityAlign({ template: fourPoints }), { name: 'TypeError', message: /5 \(x, y\) points, got 4/ });
  t.throws(() => similarityAlign({ outputSize: { height: 0, width: 96 } }), { name: 'RangeError', message: /0×96/ });
  t.throws(() => similarityAlign({ outputSize: { height: 112, width: 95.5 } }), RangeError);

  const withNaN = [...SPHEREFACE_TEMPLATE] as Point[];
  withNaN[2] = [Number.NaN, 71.7];
  t.throws(() => similarityAlign({ template: withNaN as unknown as FivePoints }), { message: /template\[2\]/ });

  const allEqual = Array.from({ length: 5 }, (): Point => [40, 50]) as unknown as FivePoints;
  t.throws(() => similarityAlign({ template: allEqual }), { name: 'RangeError', message: /coincide/ });

  t.throws(() => alignFace(image, { template: fourPoints }), TypeError);
});

t.test('landmarks far outside the image are rejected', async (t) => {
  const aaron = await loadAaron();
  const farOut: FivePoints = [[100000, 107], ...AARON_LANDMARKS.slice(1)] as unknown as FivePoints;
  // 30 px past the right edge of a 250-pixel image is within the 25 % margin.
  const nearEdge: FivePoints = [[280, 107], ...AARON_LANDMARKS.slice(1)] as unknown as FivePoints;
  const records = await lastValueFrom(
    from([
      { ...aaron, landmarks: { points: farOut, origin: 'one-based' as const } },
      { ...aaron, landmarks: { points: nearEdge, origin: 'one-based' as const } },
    ]).pipe(similarityAlign(), toArray()),
  );
  const [first, second] = records;
  t.ok(first !== undefined && isRejected(first), 'far-out landmark rejected');
  if (first !== undefined && isRejected(first)) t.match(first.reason, /landmark \(100000, 107\).*250×250 image/);
  t.ok(second !== undefined && !isRejected(second), 'landmark within the margin accepted');
});

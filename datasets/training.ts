/**
 * Labelled image sets for training the face classifier, from three sources:
 * - a folder with one subfolder per identity (CASIA-WebFace ships this way),
 * - a Caffe ImageData list file of `path label` lines, as SphereFace's `get_list.m` writes it,
 * - the people of nine LFW View 2 folds, tested on the tenth (`lfwPeopleSplit`).
 *
 * Every reader returns samples sorted by label, then by id in UTF-16 code-unit order, so the same
 * files give the same labels and the same sample order on every run, machine and resume.
 * Identities removed on request (`exclude`, `minImagesPerIdentity`) are listed in the result,
 * and labels are assigned after removal, so they run 0..K−1 without gaps.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import fg from 'fast-glob';
import { log } from '../lib/log.ts';
import { readTextFile } from '../lib/textFile.ts';
import { IMAGE_EXTENSIONS } from './imageFolder.ts';
import { LfwMissingImagesError, type LfwPair, type LfwPairs } from './lfw.ts';

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/**
 * CASIA-WebFace identities that also appear in LFW. SphereFace's `get_list.m` removes them before
 * it assigns labels, which leaves 10,572 classes.
 */
export const CASIA_LFW_OVERLAP: readonly string[] = Object.freeze(['0166921', '1056413', '1193098']);

/** One training image. */
export interface TrainingSample {
  /** Absolute path of the image file. */
  readonly path: string;
  /** Class index from 0, the position of `identity` in `TrainingSet.identities`. */
  readonly label: number;
  readonly identity: string;
  /**
   * Path relative to the dataset root with `/` separators, e.g. `Name/Name_0001.jpg`. It is the
   * image id that `datasets/lfw.ts`, the landmark files and the artifact cache use.
   */
  readonly id: string;
}

/** Reason an identity of the source is not in the training set. */
export type RemovalReason = 'excluded' | 'too-few-images' | 'in-test-fold';

export interface RemovedIdentity {
  readonly identity: string;
  readonly reason: RemovalReason;
  /** Number of images the identity had in the source. */
  readonly images: number;
}

export interface TrainingSet {
  /** The folder or list file the set was read from, for messages. */
  readonly source: string;
  /** Identity names, indexed by label. */
  readonly identities: readonly string[];
  /** Samples sorted by label, then by `id` in code-unit order. */
  readonly samples: readonly TrainingSample[];
  /** Identities of the source left out, sorted by name in code-unit order. */
  readonly removed: readonly RemovedIdentity[];
  /** Names passed in `exclude` that the source does not contain, in the order given. */
  readonly notFound: readonly string[];
}

/** A line of a training list that does not have the expected form. */
export class TrainingListError extends Error {
  override readonly name = 'TrainingListError';

  constructor(
    readonly file: string,
    /** Line number, from 1. */
    readonly line: number,
    /** The offending text: the label, the path or the whole line. */
    readonly value: string,
    readonly problem: string,
    readonly expected: string,
    /** A sentence appended to the message, e.g. how many other lines have the same problem. */
    note = '',
  ) {
    super(`${file}:${line}: ${problem}: ${JSON.stringify(value)}. Expected ${expected}.${note === '' ? '' : ` ${note}`}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Shared steps
// ---------------------------------------------------------------------------------------------

/** Orders strings by UTF-16 code unit, as `<` does. Unlike `localeCompare`, it is the same everywhere. */
export function compareCodeUnits(a: string, b: string): number {
  if (a < b) return -1;
  if (a > b) return 1;
  return 0;
}

interface SourceImage {
  readonly id: string;
  readonly path: string;
}

/**
 * Checks `minImagesPerIdentity` and returns it, default 1.
 *
 * @throws RangeError unless it is a positive integer
 */
function minImagesOption(value: number | undefined): number {
  const minImages = value ?? 1;
  if (!Number.isSafeInteger(minImages) || minImages < 1) {
    throw new RangeError(`minImagesPerIdentity must be a positive integer, got ${value}`);
  }
  return minImages;
}

/**
 * Splits the identities of a source into the ones to keep and the ones in `exclude`. Returns the
 * names of `exclude` that the source does not contain as `notFound`, and logs a warning for them,
 * because a misspelt name would otherwise leave an identity in the set unnoticed.
 */
function applyExclusion(
  source: string,
  groups: ReadonlyMap<string, readonly SourceImage[]>,
  exclude: readonly string[],
): { kept: Map<string, readonly SourceImage[]>; removed: RemovedIdentity[]; notFound: string[] } {
  const excluded = new Set(exclude);
  const kept = new Map<string, readonly SourceImage[]>();
  const removed: RemovedIdentity[] = [];
  for (const [identity, images] of groups) {
    if (excluded.has(identity)) removed.push({ identity, reason: 'excluded', images: images.length });
    else kept.set(identity, images);
  }

  const notFound = [...excluded].filter((name) => !groups.has(name));
  if (notFound.length > 0) {
    log.warn({ source, notFound }, `${notFound.length} identity name(s) to exclude not found in ${source}: ${notFound.join(', ')}`);
  }
  return { kept, removed, notFound };
}

/** Moves identities with fewer than `minImages` images from `groups` to `removed`. */
function removeSmallIdentities(groups: Map<string, readonly SourceImage[]>, minImages: number, removed: RemovedIdentity[]): void {
  for (const [identity, images] of groups) {
    if (images.length < minImages) {
      removed.push({ identity, reason: 'too-few-images', images: images.length });
      groups.delete(identity);
    }
  }
}

/**
 * Assigns labels in the order of `identities` and sorts each identity's images by id.
 *
 * @throws Error when no identity is left, naming the source and what was removed
 */
function buildTrainingSet(
  source: string,
  identities: readonly string[],
  groups: ReadonlyMap<string, readonly SourceImage[]>,
  removed: readonly RemovedIdentity[],
  notFound: readonly string[],
): TrainingSet {
  if (identities.length === 0) {
    const reasons: Record<RemovalReason, string> = { excluded: 'excluded', 'too-few-images': 'with too few images or none', 'in-test-fold': 'in the test fold' };
    const counts = (Object.keys(reasons) as RemovalReason[])
      .map((reason) => [removed.filter((r) => r.reason === reason).length, reasons[reason]] as const)
      .filter(([count]) => count > 0)
      .map(([count, text]) => `${count} ${text}`);
    const removedNote = removed.length === 0 ? '' : ` (${removed.length} identities removed: ${counts.join(', ')})`;
    throw new Error(`no training identities left in ${source}${removedNote}; expected at least one identity with images`);
  }

  const samples = identities.flatMap((identity, label) => {
    const images = [...(groups.get(identity) ?? [])].sort((a, b) => compareCodeUnits(a.id, b.id));
    return images.map((image): TrainingSample => ({ path: image.path, label, identity, id: image.id }));
  });
  const sortedRemoved = [...removed].sort((a, b) => compareCodeUnits(a.identity, b.identity));
  return { source, identities, samples, removed: sortedRemoved, notFound };
}

/**
 * Returns the SHA-256 (hex) of a training set's rows (label, identity, id) in sample order. A
 * checkpoint stores it so that resuming on a different dataset is rejected. The rows use the id,
 * which is relative to the dataset root, not the absolute path, so the same dataset in another
 * folder or on another machine has the same fingerprint.
 */
export function fingerprint(set: TrainingSet): string {
  const hash = createHash('sha256');
  hash.update('sphereface-ts training set v1\n');
  for (const sample of set.samples) {
    hash.update(`${JSON.stringify([sample.label, sample.identity, sample.id])}\n`);
  }
  return hash.digest('hex');
}

/**
 * Builds a training set from images whose ids start with their identity folder
 * (`Identity/file.jpg`, as the `imageFolder` and `lfw` sources give them). Labels follow the
 * code-unit order of the identity names, as for `readIdentityFolders`.
 *
 * @throws Error naming the first id without an identity folder, or when `images` is empty
 */
export function trainingSetFromImages(source: string, images: ReadonlyArray<{ readonly id: string; readonly path: string }>): TrainingSet {
  const groups = new Map<string, SourceImage[]>();
  for (const image of images) {
    const slash = image.id.indexOf('/');
    if (slash <= 0) {
      throw new Error(`${source}: image id "${image.id}" has no identity folder; expected ids of the form Identity/file.jpg, as the imageFolder and lfw sources give`);
    }
    const identity = image.id.slice(0, slash);
    let group = groups.get(identity);
    if (group === undefined) {
      group = [];
      groups.set(identity, group);
    }
    group.push({ id: image.id, path: image.path });
  }
  const identities = [...groups.keys()].sort(compareCodeUnits);
  return buildTrainingSet(source, identities, groups, [], []);
}

// ---------------------------------------------------------------------------------------------
// Identity folders
// ---------------------------------------------------------------------------------------------

export interface IdentityFolderOptions {
  /** Identity (folder) names to leave out, e.g. `CASIA_LFW_OVERLAP`. */
  readonly exclude?: readonly string[];
  /** Image file extensions, without the dot, matched case-insensitively. Default: `IMAGE_EXTENSIONS`. */
  readonly extensions?: readonly string[];
  /** Identities with fewer images are removed. Default: 1, which removes folders without images. */
  readonly minImagesPerIdentity?: number;
}

/** Returns a fast-glob pattern for `*\/*.ext` with the given extensions. */
function imagePattern(extensions: readonly string[]): string {
  if (extensions.length === 0) throw new RangeError('extensions is empty; expected at least one image file extension such as "jpg"');
  const cleaned = extensions.map((extension) => {
    const bare = extension.startsWith('.') ? extension.slice(1) : extension;
    if (!/^[A-Za-z0-9]+$/.test(bare)) {
      throw new RangeError(`invalid image file extension ${JSON.stringify(extension)}; expected letters and digits such as "jpg"`);
    }
    return bare;
  });
  // A brace list needs two or more entries, otherwise fast-glob matches the braces literally.
  return cleaned.length === 1 ? `*/*.${cleaned[0]}` : `*/*.{${cleaned.join(',')}}`;
}

/**
 * Reads `root/Identity/image.ext`: one folder per identity. Labels follow the code-unit order of
 * the folder names that remain after `exclude` and `minImagesPerIdentity`. Files directly in
 * `root`, files deeper than one folder, other extensions and hidden entries are not read.
 *
 * @throws Error when `root` is not a folder or no identity is left
 */
export async function readIdentityFolders(root: string, options: IdentityFolderOptions = {}): Promise<TrainingSet> {
  const absoluteRoot = path.resolve(root);
  const minImages = minImagesOption(options.minImagesPerIdentity);
  const pattern = imagePattern(options.extensions ?? IMAGE_EXTENSIONS);

  const rootStat = await stat(absoluteRoot).catch(() => undefined);
  if (rootStat === undefined) throw new Error(`training images folder not found: ${absoluteRoot}`);
  if (!rootStat.isDirectory()) {
    throw new Error(`training images folder ${absoluteRoot} is a file; expected a folder with one subfolder per identity`);
  }

  // Folders are listed on their own so that identities without images are reported as removed.
  const folders = await fg('*', { cwd: absoluteRoot, onlyDirectories: true });
  const files = await fg(pattern, { cwd: absoluteRoot, onlyFiles: true, caseSensitiveMatch: false });

  const groups = new Map<string, SourceImage[]>(folders.map((folder) => [folder, []]));
  for (const relative of files) {
    const identity = relative.slice(0, relative.indexOf('/'));
    let images = groups.get(identity);
    if (images === undefined) {
      images = [];
      groups.set(identity, images);
    }
    images.push({ id: relative, path: path.join(absoluteRoot, relative) });
  }

  const { kept, removed, notFound } = applyExclusion(absoluteRoot, groups, options.exclude ?? []);
  removeSmallIdentities(kept, minImages, removed);
  const identities = [...kept.keys()].sort(compareCodeUnits);
  return buildTrainingSet(absoluteRoot, identities, kept, removed, notFound);
}

// ---------------------------------------------------------------------------------------------
// List files
// ---------------------------------------------------------------------------------------------

export interface TrainingListOptions {
  /** Identity names to leave out (see `readTrainingList` for what an identity is). */
  readonly exclude?: readonly string[];
  /** Folder that relative paths resolve against, and that every image must lie in. Default: the list's folder. */
  readonly root?: string;
}

interface ListEntry extends SourceImage {
  readonly line: number;
  readonly pathText: string;
  readonly label: number;
}

const LINE_FORM = 'a line "path label", e.g. "0000045/001.jpg 0", with the label after the last space or tab';
const LABEL_FORM = 'a non-negative integer class index after the last space or tab, e.g. "0000045/001.jpg 0"';

/** Number of `stat` calls in flight at once while checking that listed images exist. */
const STAT_CONCURRENCY = 64;

/**
 * Parses one non-blank line into its path and label. The label follows the last space or tab, as
 * Caffe's ImageData layer splits, so paths may contain spaces. Spaces and tabs at the end of the
 * line and between path and label are dropped.
 */
function parseListLine(file: string, base: string, line: number, text: string): ListEntry {
  const trimmed = text.replace(/[ \t]+$/, '');
  const separator = Math.max(trimmed.lastIndexOf(' '), trimmed.lastIndexOf('\t'));
  if (separator < 0) throw new TrainingListError(file, line, text, 'missing label', LINE_FORM);

  const pathText = trimmed.slice(0, separator).replace(/[ \t]+$/, '');
  const labelText = trimmed.slice(separator + 1);
  if (pathText === '') throw new TrainingListError(file, line, text, 'missing path', LINE_FORM);

  const label = Number(labelText);
  if (!/^[0-9]+$/.test(labelText) || !Number.isSafeInteger(label)) {
    throw new TrainingListError(file, line, labelText, 'invalid label', LABEL_FORM);
  }

  // Ids are relative to the root, like the ids of an identity folder, so an absolute path (as
  // `get_list.m` writes) must lie inside the root.
  const absolute = path.resolve(base, pathText);
  const id = path.relative(base, absolute).split(path.sep).join('/');
  if (id === '' || id === '..' || id.startsWith('../') || path.isAbsolute(id)) {
    throw new TrainingListError(file, line, pathText, `image path lies outside the root ${base}`, 'a path inside the root. Pass root with a folder that contains every listed image');
  }
  return { line, pathText, label, id, path: absolute };
}

/** Throws a `TrainingListError` for the first listed image (by line) that is not a file. */
async function checkListedFilesExist(file: string, base: string, entries: readonly ListEntry[]): Promise<void> {
  const missing: Array<{ entry: ListEntry; problem: string }> = [];
  for (let start = 0; start < entries.length; start += STAT_CONCURRENCY) {
    const chunk = entries.slice(start, start + STAT_CONCURRENCY);
    const problems = await Promise.all(
      chunk.map(async (entry) => {
        try {
          return (await stat(entry.path)).isFile() ? undefined : 'image path is not a file';
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code;
          return code === 'ENOENT' || code === 'ENOTDIR' ? 'image file not found' : `image file not readable (${String(code ?? error)})`;
        }
      }),
    );
    problems.forEach((problem, offset) => {
      if (problem !== undefined) missing.push({ entry: chunk[offset]!, problem });
    });
  }

  const first = missing[0];
  if (first === undefined) return;
  const others = missing.length > 1 ? `${missing.length - 1} more listed image(s) are missing or unreadable, the next on line ${missing[1]!.entry.line}.` : '';
  throw new TrainingListError(
    file,
    first.entry.line,
    first.entry.pathText,
    first.problem,
    `an image file at ${first.entry.path}. Relative paths resolve against ${base}, and the root option changes that folder`,
    others,
  );
}

/**
 * Returns a name for each label: the folder that contains its images when labels and parent folder
 * names match one to one (a CASIA-WebFace list, where the folder is the identity), otherwise the
 * label's decimal value.
 */
function identityNames(entries: readonly ListEntry[]): Map<number, string> {
  const folderOfLabel = new Map<number, string>();
  const labelOfFolder = new Map<string, number>();
  let oneToOne = true;
  for (const entry of entries) {
    const folder = entry.id.includes('/') ? path.posix.basename(path.posix.dirname(entry.id)) : undefined;
    if (folder === undefined) {
      oneToOne = false;
      break;
    }
    const knownFolder = folderOfLabel.get(entry.label);
    const knownLabel = labelOfFolder.get(folder);
    if ((knownFolder !== undefined && knownFolder !== folder) || (knownLabel !== undefined && knownLabel !== entry.label)) {
      oneToOne = false;
      break;
    }
    folderOfLabel.set(entry.label, folder);
    labelOfFolder.set(folder, entry.label);
  }

  const names = new Map<number, string>();
  for (const entry of entries) {
    names.set(entry.label, oneToOne ? folderOfLabel.get(entry.label)! : String(entry.label));
  }
  return names;
}

/** Returns the smallest label in 0..max that no entry uses, or undefined when the labels are dense. */
function firstLabelGap(labels: ReadonlySet<number>): number | undefined {
  for (let label = 0; label < labels.size; label++) {
    if (!labels.has(label)) return label;
  }
  return undefined;
}

/**
 * Reads a Caffe ImageData list: one `path label` line per image, as SphereFace's `get_list.m`
 * writes it. Rules:
 * - The label follows the last space or tab, so paths may contain spaces. It must be a
 *   non-negative decimal integer.
 * - Relative paths resolve against `root` (default: the list's folder). Every image must lie
 *   inside the root and exist as a file. An image listed twice is an error.
 * - Blank lines are skipped, CRLF endings and a UTF-8 byte order mark are accepted. `#` has no
 *   special meaning, as in Caffe.
 * - Identity: the name of the folder that contains the images when labels and parent folder names
 *   match one to one, so `exclude: CASIA_LFW_OVERLAP` works on a CASIA list. Otherwise the
 *   label's decimal value (`7` for `007`).
 * - Labels are renumbered 0..K−1 in ascending order of the file's labels, after `exclude`. A
 *   list with dense labels and nothing excluded keeps its labels. A list with gaps is accepted
 *   with a logged warning that names the first gap.
 * - Line order does not matter: samples are sorted by label, then id.
 *
 * @throws TrainingListError naming the file, the 1-based line and the value for a malformed
 *   line, a path outside the root, a duplicate or a missing image
 */
export async function readTrainingList(file: string, options: TrainingListOptions = {}): Promise<TrainingSet> {
  const absoluteFile = path.resolve(file);
  const base = path.resolve(options.root ?? path.dirname(absoluteFile));
  const text = await readTextFile(absoluteFile, 'training list', 'pass the path of a list file with one "path label" line per image');
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;

  const entries: ListEntry[] = [];
  const lineOfId = new Map<string, number>();
  body.split('\n').forEach((raw, index) => {
    const lineText = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (lineText.trim() === '') return;

    const entry = parseListLine(absoluteFile, base, index + 1, lineText);
    const earlier = lineOfId.get(entry.id);
    if (earlier !== undefined) {
      throw new TrainingListError(absoluteFile, entry.line, entry.pathText, `image listed twice (first on line ${earlier})`, 'each image once');
    }
    lineOfId.set(entry.id, entry.line);
    entries.push(entry);
  });
  if (entries.length === 0) throw new Error(`training list ${absoluteFile} lists no images; expected ${LINE_FORM}`);

  await checkListedFilesExist(absoluteFile, base, entries);

  const names = identityNames(entries);
  const groups = new Map<string, SourceImage[]>();
  for (const entry of entries) {
    const identity = names.get(entry.label)!;
    let images = groups.get(identity);
    if (images === undefined) {
      images = [];
      groups.set(identity, images);
    }
    images.push({ id: entry.id, path: entry.path });
  }

  const fileLabels = new Set(entries.map((entry) => entry.label));
  const gap = firstLabelGap(fileLabels);
  if (gap !== undefined) {
    log.warn({ source: absoluteFile, gap }, `labels in ${absoluteFile} are not dense: no image has label ${gap}. Renumbering them 0..${fileLabels.size - 1}`);
  }

  const { kept, removed, notFound } = applyExclusion(absoluteFile, groups, options.exclude ?? []);
  const labelOfIdentity = new Map([...names].map(([label, identity]) => [identity, label]));
  const identities = [...kept.keys()].sort((a, b) => labelOfIdentity.get(a)! - labelOfIdentity.get(b)!);
  return buildTrainingSet(absoluteFile, identities, kept, removed, notFound);
}

// ---------------------------------------------------------------------------------------------
// LFW people split
// ---------------------------------------------------------------------------------------------

export interface LfwPeopleSplitOptions {
  /** People with fewer images in the images folder are not trained on. Default: 1. */
  readonly minImagesPerIdentity?: number;
}

export interface LfwPeopleSplit {
  /** The people of the training folds with all their images, ids `Name/Name_NNNN.jpg`. */
  readonly train: TrainingSet;
  /** The test fold, from 1. */
  readonly testFold: number;
  /** The test fold's pairs, in file order. */
  readonly testPairs: readonly LfwPair[];
  /** The pairs of every other fold, in file order, for choosing a threshold. */
  readonly trainPairs: readonly LfwPair[];
  /** People of the training folds who also appear in the test fold, and so were not trained on. */
  readonly sharedWithTestFold: readonly string[];
}

/** Returns the person name of an LFW image id `Name/Name_NNNN.jpg`. */
function personOf(id: string): string {
  return id.slice(0, id.indexOf('/'));
}

/** Collects the people of `pairs`, from both images of every pair. */
function peopleOf(pairs: readonly LfwPair[]): Set<string> {
  const people = new Set<string>();
  for (const pair of pairs) {
    people.add(personOf(pair.left.id));
    people.add(personOf(pair.right.id));
  }
  return people;
}

/** Lists the images `Name/Name_NNNN.jpg` under `imagesDir`, grouped by person. Other files are not read. */
async function listLfwImages(imagesDir: string): Promise<Map<string, SourceImage[]>> {
  const files = await fg('*/*.jpg', { cwd: imagesDir, onlyFiles: true });
  const byPerson = new Map<string, SourceImage[]>();
  for (const relative of files) {
    const person = personOf(relative);
    const fileName = relative.slice(person.length + 1);
    if (!fileName.startsWith(`${person}_`) || !/^[0-9]{4,}\.jpg$/.test(fileName.slice(person.length + 1))) continue;

    let images = byPerson.get(person);
    if (images === undefined) {
      images = [];
      byPerson.set(person, images);
    }
    images.push({ id: relative, path: path.join(imagesDir, relative) });
  }
  return byPerson;
}

/**
 * Splits LFW by people for training on LFW itself: trains on every image in the images folder of
 * the people who appear in the folds other than `testFold`, and tests on the pairs of `testFold`.
 * View 2 folds are meant to be person-disjoint. A training-fold person who also appears in the
 * test fold is removed from training, listed in `sharedWithTestFold` and logged. Labels follow
 * the code-unit order of the remaining names. The images folder is `pairs.imagesDir`, so parse
 * the pairs with the folder to train from.
 *
 * @param testFold the test fold, from 1 to `pairs.folds`
 * @throws RangeError for a fold out of range or a pair file with one fold (View 1)
 * @throws LfwMissingImagesError when an image of any pair is not in the images folder
 */
export async function lfwPeopleSplit(pairs: LfwPairs, testFold: number, options: LfwPeopleSplitOptions = {}): Promise<LfwPeopleSplit> {
  if (pairs.folds < 2) {
    throw new RangeError(`${pairs.file} has ${pairs.folds} fold; a people split needs the View 2 pairs (pairs.txt, 10 folds)`);
  }
  if (!Number.isInteger(testFold) || testFold < 1 || testFold > pairs.folds) {
    throw new RangeError(`test fold ${testFold} is out of range; expected an integer from 1 to ${pairs.folds}`);
  }
  const minImages = minImagesOption(options.minImagesPerIdentity);

  const foldIndex = testFold - 1;
  const testPairs = pairs.pairs.filter((pair) => pair.fold === foldIndex);
  const trainPairs = pairs.pairs.filter((pair) => pair.fold !== foldIndex);
  const testPeople = peopleOf(testPairs);
  const trainPeople = peopleOf(trainPairs);

  const images = await listLfwImages(pairs.imagesDir);
  const listed = new Set([...images.values()].flatMap((group) => group.map((image) => image.id)));
  const missing = new Map<string, { line: number; id: string; path: string; reason: string }>();
  for (const pair of pairs.pairs) {
    for (const ref of [pair.left, pair.right]) {
      if (!listed.has(ref.id) && !missing.has(ref.id)) missing.set(ref.id, { line: pair.line, id: ref.id, path: ref.path, reason: 'not found' });
    }
  }
  if (missing.size > 0) throw new LfwMissingImagesError(pairs.file, pairs.imagesDir, [...missing.values()], 20);

  const sharedWithTestFold = [...trainPeople].filter((person) => testPeople.has(person)).sort(compareCodeUnits);
  if (sharedWithTestFold.length > 0) {
    log.warn(
      { pairs: pairs.file, testFold, people: sharedWithTestFold },
      `${sharedWithTestFold.length} people of the training folds also appear in test fold ${testFold}; they are not trained on`,
    );
  }

  const groups = new Map<string, readonly SourceImage[]>();
  const removed: RemovedIdentity[] = [];
  for (const person of trainPeople) {
    const personImages = images.get(person) ?? [];
    if (testPeople.has(person)) removed.push({ identity: person, reason: 'in-test-fold', images: personImages.length });
    else groups.set(person, personImages);
  }
  removeSmallIdentities(groups, minImages, removed);

  const source = `${pairs.imagesDir} (people of ${pairs.file} outside test fold ${testFold})`;
  const identities = [...groups.keys()].sort(compareCodeUnits);
  const train = buildTrainingSet(source, identities, groups, removed, []);
  return { train, testFold, testPairs, trainPairs, sharedWithTestFold };
}

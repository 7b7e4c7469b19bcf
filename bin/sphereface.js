#!/usr/bin/env node
// Entry point of the `sphereface` command. The sources are TypeScript, loaded through tsx so
// that no build step is needed after `npm ci`.
import { register } from 'tsx/esm/api';

register();
await import('../cli.ts');

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { App } from '../server.ts';

// The console's static files (src/console/ and the two libraries it is written with, Preact and
// htm, from Leash's own dependencies): public, as any sign-in page is, since they hold no data;
// every call the page makes is to the API with the token the person signs in with. A fixed list,
// read once at start: no path from the URL ever reaches the file system. The Content Security
// Policy lets the page run only these scripts (the import map by its hash) and talk only to its
// own origin, and keeps it out of frames.

const here = (file: string) => fileURLToPath(new URL(`../../console/${file}`, import.meta.url));
const resolve = createRequire(import.meta.url).resolve;

const FILES: Record<string, { path: string; type: string }> = {
  '/console/': { path: here('index.html'), type: 'text/html; charset=utf-8' },
  '/console/app.js': { path: here('app.js'), type: 'text/javascript; charset=utf-8' },
  '/console/style.css': { path: here('style.css'), type: 'text/css; charset=utf-8' },
  '/console/vendor/preact.mjs': { path: resolve('preact'), type: 'text/javascript; charset=utf-8' },
  '/console/vendor/hooks.mjs': { path: resolve('preact/hooks'), type: 'text/javascript; charset=utf-8' },
  '/console/vendor/htm.mjs': { path: resolve('htm'), type: 'text/javascript; charset=utf-8' },
};

/** The ES module build beside a package's CommonJS entry (htm's `dist/htm.js` → `dist/htm.mjs`). */
const moduleBuild = (path: string): string => path.replace(/\.js$/, '.mjs');

export async function consoleRoutes(app: App): Promise<void> {
  const files = new Map(Object.entries(FILES).map(([url, f]) => {
    const path = url.startsWith('/console/vendor/') ? moduleBuild(f.path) : f.path;
    return [url, { type: f.type, body: readFileSync(path) }] as const;
  }));
  const index = files.get('/console/')!.body.toString('utf8');
  const importMap = /<script type="importmap">([\s\S]*?)<\/script>/.exec(index)![1]!;
  const csp = [
    "default-src 'none'",
    `script-src 'self' 'sha256-${createHash('sha256').update(importMap).digest('base64')}'`,
    "style-src 'self'", "connect-src 'self'", "img-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
  ].join('; ');

  app.get('/console', { config: { access: 'public' }, schema: { hide: true } }, async (_request, reply) => reply.redirect('/console/', 302));
  for (const [url, file] of files) {
    app.get(url, { config: { access: 'public' }, schema: { hide: true } }, async (_request, reply) => {
      void reply
        .type(file.type)
        .header('content-security-policy', csp)
        .header('x-content-type-options', 'nosniff')
        .header('referrer-policy', 'no-referrer')
        .header('cache-control', 'no-cache');
      return reply.send(file.body);
    });
  }
}

import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { adminTokenFile, loadConfig } from '../config.ts';

// The API client commands' common part: the server's URL, the operator token, one call and
// its answer printed (stdout when it succeeded, stderr and exit code 1 when not).

export interface ClientFlags {
  url?: string;
  token?: string;
  dataDir?: string;
  ifMatch?: string;
  idempotencyKey?: string;
}

/** Where the server is: --url, else $LEASH_URL, else this machine at $PORT (8080). */
export const baseUrl = (flags: { url?: string }): string => flags.url ?? process.env.LEASH_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`;

/** The bearer for admin calls: --token, else $LEASH_ADMIN_TOKEN, else the embedded data dir's admin-token file. */
export function operatorToken(flags: ClientFlags): string {
  if (flags.token) return flags.token;
  if (process.env.LEASH_ADMIN_TOKEN) return process.env.LEASH_ADMIN_TOKEN;
  const file = adminTokenFile(loadConfig({ LEASH_DATA_DIR: flags.dataDir ?? process.env.LEASH_DATA_DIR }).dataDir);
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    throw new Error(`no operator token: pass --token, set LEASH_ADMIN_TOKEN, or run next to the data dir holding ${file}`);
  }
}

/** One admin call: its status and its body (parsed when it is JSON). */
export async function send(flags: ClientFlags, method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}): Promise<{ ok: boolean; status: number; text: string; json: unknown }> {
  const base = baseUrl(flags);
  const headers: Record<string, string> = { authorization: `Bearer ${operatorToken(flags)}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (flags.ifMatch) headers['if-match'] = `"${flags.ifMatch}"`;
  if (flags.idempotencyKey) headers['idempotency-key'] = flags.idempotencyKey;
  Object.assign(headers, extraHeaders);
  let url: URL;
  try {
    url = new URL(path, base);
  } catch {
    throw new Error(`${base} is not a URL (e.g. http://127.0.0.1:8080); set --url or LEASH_URL`);
  }
  let response: Response;
  try {
    response = await fetch(url, { method, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  } catch (err) {
    throw new Error(`cannot reach ${base} (${unreachable(err)}); is the server running? (set --url or LEASH_URL)`);
  }
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { ok: response.ok, status: response.status, text, json };
}

/** Prints an answer: stdout when it succeeded, stderr and exit code 1 when not. */
export function print(answer: { ok: boolean; text: string; json: unknown }): void {
  const out = answer.ok ? process.stdout : process.stderr;
  out.write(`${answer.json === undefined ? answer.text : JSON.stringify(answer.json, null, 2)}\n`);
  if (!answer.ok) process.exitCode = 1;
}

export async function call(flags: ClientFlags, method: string, path: string, body?: unknown): Promise<void> {
  print(await send(flags, method, path, body));
}

/** Why fetch could not get an answer, in words: it throws "fetch failed" with the reason as the cause. */
export function unreachable(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string; errors?: { code?: string }[] } }).cause;
  const code = cause?.code ?? cause?.errors?.[0]?.code; // several addresses tried (localhost): an AggregateError
  const words: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ECONNRESET: 'connection reset',
    ENOTFOUND: 'host not found',
    EAI_AGAIN: 'host not found',
    ETIMEDOUT: 'timed out',
    UND_ERR_CONNECT_TIMEOUT: 'timed out',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
  };
  return (code && words[code]) ?? code ?? cause?.message ?? (err as Error).message;
}

export const client = (cmd: Command) =>
  cmd
    .option('--url <url>', 'Leash base URL (default http://127.0.0.1:$PORT or $LEASH_URL)')
    .option('--token <token>', 'the operator token, or a person\'s token from the identity provider (default $LEASH_ADMIN_TOKEN, else the data dir\'s admin-token)')
    .option('--data-dir <dir>', 'where to find the embedded admin-token')
    .option('--if-match <version>', 'expected version (412 if it moved)')
    .option('--idempotency-key <key>', 'retry-safe key');

/** A JSON body from --data '<json>' or --file path ('-' for stdin). */
export function jsonBody(flags: { data?: string; file?: string }): unknown {
  const text = flags.data ?? (flags.file ? readFileSync(flags.file === '-' ? 0 : flags.file, 'utf8') : undefined);
  if (text === undefined) throw new Error('give the request body with --data \'<json>\' or --file <path>');
  return JSON.parse(text);
}

export const list = (value: string, previous: string[] = []) => [...previous, value];

import { readFileSync, writeFileSync } from 'node:fs';
import type { JWK } from 'jose';
import type { TokenAnswer } from '../tokens/request.ts';
import { baseUrl, operatorToken, unreachable } from './client.ts';
import { program } from './program.ts';

const keys = program.command('keys').description('local agent keys, for trying Leash without an identity provider');
keys
  .command('generate <file>')
  .description('write an ES256 private JWK (0600) to <file> and print the public JWK to pin at registration')
  .option('--kid <kid>', 'key id', 'k1')
  .action(async (file: string, flags: { kid: string }) => {
    const { generateAgentKey } = await import('../tokens/mint.ts');
    const { privateJwk, publicJwk } = await generateAgentKey(flags.kid);
    writeFileSync(file, `${JSON.stringify(privateJwk)}\n`, { mode: 0o600, flag: 'wx' });
    process.stdout.write(`${JSON.stringify(publicJwk)}\n`);
  });

// `leash token` mints a token the agent signs itself (an agent that brings its own key);
// `leash token request` gets one from Leash's token endpoint, `leash token exchange` one for a
// sub-agent, and `leash token introspect` asks whether a token is usable. Options are
// positional, so each reads its own --key, --agent and --details.

const token = program
  .command('token')
  .description('mint a short-lived agent token signed with a local private JWK (or: token request)')
  .enablePositionalOptions()
  .option('--key <file>', 'private JWK file (from `leash keys generate`); required')
  .option('--agent <id>', 'the agent; required')
  .option('--details <json>', 'authorization_details (RFC 9396), a JSON array; required')
  .option('--on-behalf-of <human>', 'delegating human: the token gets sub=<human>, act.sub=<agent>')
  .option('--human <id>', 'instead of an agent\'s token, a person\'s (sub=<id>), as the identity provider of LEASH_HUMAN_* would sign it; no --agent or --details')
  .option('--issuer <iss>', 'issuer pinned for the agent (or LEASH_HUMAN_ISSUER)', 'https://idp.example')
  .option('--audience <aud>', 'audience pinned for the agent (or LEASH_HUMAN_AUDIENCE)', 'leash')
  .option('--lifetime <seconds>', 'token lifetime', '120')
  .action(async (flags: { key?: string; agent?: string; details?: string; onBehalfOf?: string; human?: string; issuer: string; audience: string; lifetime: string }) => {
    const lifetime = Number(flags.lifetime);
    if (!Number.isInteger(lifetime) || lifetime < 1) throw new Error('--lifetime takes a whole number of seconds');
    if (flags.human !== undefined) {
      if (flags.key === undefined) throw new Error('required: --key');
      if (flags.agent !== undefined || flags.details !== undefined || flags.onBehalfOf !== undefined) throw new Error('--human mints a person\'s token: no --agent, --details or --on-behalf-of');
      const { mintHumanToken } = await import('../tokens/mint.ts');
      const human = await mintHumanToken({ privateJwk: readJwk(flags.key, '--key'), issuer: flags.issuer, audience: flags.audience, human: flags.human, lifetimeSeconds: lifetime });
      process.stdout.write(`${human}\n`);
      return;
    }
    const { key, agent, details } = tokenFlags(flags);
    const { mintAgentToken } = await import('../tokens/mint.ts');
    const token = await mintAgentToken({
      privateJwk: key,
      issuer: flags.issuer,
      audience: flags.audience,
      agent,
      ...(flags.onBehalfOf ? { onBehalfOf: flags.onBehalfOf } : {}),
      authorizationDetails: details,
      lifetimeSeconds: lifetime,
    });
    process.stdout.write(`${token}\n`);
  });

/** The key, agent and details every token command needs. */
function tokenFlags(flags: { key?: string; agent?: string; details?: string }) {
  const missing = (['key', 'agent', 'details'] as const).filter((k) => flags[k] === undefined);
  if (missing.length > 0) throw new Error(`required: ${missing.map((k) => `--${k}`).join(', ')}`);
  let details: unknown;
  try {
    details = JSON.parse(flags.details!);
  } catch {
    throw new Error('--details must be a JSON array (it is not JSON)');
  }
  if (!Array.isArray(details)) throw new Error('--details must be a JSON array');
  return { key: readJwk(flags.key!, '--key'), agent: flags.agent!, details };
}

/** A private JWK from a file (as `leash keys generate` writes it). */
function readJwk(file: string, flag: string): JWK {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${flag} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  try {
    return JSON.parse(text) as JWK;
  } catch {
    throw new Error(`${flag} ${file}: not a JSON Web Key (JSON)`);
  }
}

const urlOption = '--url <url>';
const urlHelp = 'Leash base URL (default http://127.0.0.1:$PORT or $LEASH_URL)';

/** The server's answer, or a failure naming the URL it could not reach. */
async function reaching<T>(base: string, ask: () => Promise<T>): Promise<T> {
  return ask().catch((err: Error) => {
    throw new Error(`cannot reach ${base} (${unreachable(err)}); is the server running? (set --url or LEASH_URL)`);
  });
}

/** An OAuth error answer fails the command with its code and description; a token is printed. */
function printToken(answer: TokenAnswer): void {
  if ('error' in answer) throw new Error(`${answer.error}: ${answer.error_description ?? ''}`);
  process.stdout.write(`${answer.access_token}\n`);
}

token
  .command('request')
  .description('get a token from Leash (POST /oauth/token): the agent authenticates with a client assertion signed by its key')
  .option('--key <file>', 'the agent\'s private JWK file; required')
  .option('--agent <id>', 'the agent; required')
  .option('--details <json>', 'authorization_details (RFC 9396), a JSON array; required')
  .option('--resource <uri>', 'the token\'s audience (RFC 8707); default the server\'s LEASH_TOKEN_AUDIENCE')
  .option(urlOption, urlHelp)
  .action(async (flags: { key?: string; agent?: string; details?: string; resource?: string; url?: string }) => {
    const { key, agent, details } = tokenFlags(flags);
    const base = baseUrl(flags);
    const { requestToken } = await import('../tokens/request.ts');
    printToken(await reaching(base, () => requestToken({ base, privateJwk: key, agent, details, ...(flags.resource ? { resource: flags.resource } : {}) })));
  });

token
  .command('exchange')
  .description('token exchange (RFC 8693): a token for a sub-agent (the parent hands on part of its Leash token; both sign an assertion with their own key), or with --grant a token acting for the human who granted the agent')
  .option('--key <file>', 'the (parent) agent\'s private JWK file; required')
  .option('--agent <id>', 'the (parent) agent, the client; required')
  .option('--subject-token <token>', 'the parent\'s Leash access token (a sub-agent\'s token)')
  .option('--actor <id>', 'the sub-agent (a sub-agent\'s token)')
  .option('--actor-key <file>', 'the sub-agent\'s private JWK file, which signs the actor token (a sub-agent\'s token)')
  .option('--grant <id>', 'instead: the id of a human\'s grant to --agent; the token acts for that human')
  .option('--details <json>', 'authorization_details for the new token, within the parent\'s token (or the grant) and the ceiling of the agent that carries it; required')
  .option('--resource <uri>', 'the token\'s audience (RFC 8707)')
  .option(urlOption, urlHelp)
  .action(async (flags: { key?: string; agent?: string; details?: string; subjectToken?: string; actor?: string; actorKey?: string; grant?: string; resource?: string; url?: string }) => {
    const { key, agent, details } = tokenFlags(flags);
    if (flags.grant !== undefined) {
      if (flags.subjectToken !== undefined || flags.actor !== undefined || flags.actorKey !== undefined) throw new Error('--grant exchanges a grant: no --subject-token, --actor or --actor-key');
      const base = baseUrl(flags);
      const { grantToken } = await import('../tokens/request.ts');
      printToken(await reaching(base, () => grantToken({ base, privateJwk: key, agent, details, grant: flags.grant!, ...(flags.resource ? { resource: flags.resource } : {}) })));
      return;
    }
    const missing = (['subjectToken', 'actor', 'actorKey'] as const).filter((k) => flags[k] === undefined);
    if (missing.length > 0) throw new Error(`required: ${missing.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`);
    const base = baseUrl(flags);
    const { exchangeToken } = await import('../tokens/request.ts');
    const actor = { agent: flags.actor!, privateJwk: readJwk(flags.actorKey!, '--actor-key') };
    printToken(await reaching(base, () => exchangeToken({ base, privateJwk: key, agent, details, subjectToken: flags.subjectToken!, actor, ...(flags.resource ? { resource: flags.resource } : {}) })));
  });

token
  .command('assertion')
  .description('print a one-minute client assertion (RFC 7523) signed by the agent\'s key, for calling /oauth/token with curl; each is good for one request')
  .option('--key <file>', 'the agent\'s private JWK file; required')
  .option('--agent <id>', 'the agent; required')
  .option(urlOption, `${urlHelp}; the assertion's aud is its token endpoint`)
  .action(async (flags: { key?: string; agent?: string; url?: string }) => {
    if (flags.key === undefined || flags.agent === undefined) throw new Error('required: --key, --agent');
    const { clientAssertion } = await import('../tokens/request.ts');
    process.stdout.write(`${await clientAssertion(baseUrl(flags), flags.agent, readJwk(flags.key, '--key'))}\n`);
  });

token
  .command('introspect <token>')
  .description('ask Leash whether a token is usable now (RFC 7662): {"active":false}, or true with its claims')
  .option('--token <bearer>', 'a PEP or operator token to ask with (default $LEASH_ADMIN_TOKEN, else the data dir\'s admin-token)')
  .option('--data-dir <dir>', 'where to find the embedded admin-token')
  .option(urlOption, urlHelp)
  .action(async (accessToken: string, flags: { token?: string; dataDir?: string; url?: string }) => {
    const base = baseUrl(flags);
    const { introspectToken } = await import('../tokens/request.ts');
    const answer = await reaching(base, () => introspectToken(base, operatorToken(flags), accessToken));
    if (typeof answer.active !== 'boolean') {
      process.exitCode = 1;
      process.stderr.write(`${JSON.stringify(answer)}\n`);
      return;
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  });

import { program } from './program.ts';
import './server-commands.ts';
import './registry-commands.ts';
import './audit-commands.ts';
import './token-commands.ts';
import './approval-commands.ts';
import './decision-commands.ts';
import './suggest-command.ts';

export { program };

/** Runs the command line (`leash.js`). A failure is one line on stderr, never a stack trace. */
export function runCli(argv: string[]): void {
  program.parseAsync(argv).catch((err: Error) => {
    process.stderr.write(`leash: ${err.message}\n`);
    process.exit(1);
  });
}

import { Command } from 'commander';

/**
 * The commands; importing this module runs none of them (`runCli` does; the tests read every command's help).
 * Each command imports what it runs when it runs: a client command (a few HTTP calls) does not load the
 * server, the stores and Cedar, which through tsx cost seconds of CPU at every start.
 */
export const program = new Command('leash').description('Leash: authorization for AI agents').showHelpAfterError()
  // Options are positional: a subcommand (token request) reads its own --key, --agent, --details.
  .enablePositionalOptions();

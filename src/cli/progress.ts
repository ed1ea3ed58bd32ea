import cliProgress from 'cli-progress';

/**
 * Progress of a long run, on stderr: a bar on a terminal, plain lines (at most one every two
 * seconds per stage, and one when a stage ends) when not, so logs stay readable.
 */
export function progress(stream: NodeJS.WriteStream = process.stderr): { update(stage: string, done: number, total: number): void; stop(): void } {
  if (stream.isTTY) {
    let bar: cliProgress.SingleBar | null = null;
    let current = '';
    return {
      update(stage, done, total) {
        if (stage !== current) {
          bar?.stop();
          current = stage;
          bar = new cliProgress.SingleBar({ stream, format: `${stage.padEnd(10)} [{bar}] {percentage}% {value}/{total}`, hideCursor: true }, cliProgress.Presets.shades_classic);
          bar.start(total, 0);
        }
        bar!.setTotal(total);
        bar!.update(done);
      },
      stop: () => bar?.stop(),
    };
  }
  let last = new Map<string, number>();
  const line = (stage: string, done: number, total: number) =>
    stream.write(`${stage}: ${done.toLocaleString('en-US')} of ${total.toLocaleString('en-US')} (${total ? Math.floor((done / total) * 100) : 100}%)\n`);
  return {
    update(stage, done, total) {
      const now = Date.now();
      if (done >= total || now - (last.get(stage) ?? 0) >= 2000) {
        last.set(stage, now);
        line(stage, done, total);
      }
    },
    stop: () => void (last = new Map()),
  };
}

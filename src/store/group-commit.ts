/**
 * Group commit: requests that arrive while a transaction is in flight are written together
 * in the next one, so one durable commit serves many callers. `commit` returns one outcome
 * per request (a value, or an Error for that request alone). If the whole batch fails, each
 * request is retried on its own, so one poisoned request never fails its neighbours.
 */
export class GroupCommitter<Req, Res> {
  private readonly queue: { request: Req; resolve: (r: Res) => void; reject: (e: unknown) => void }[] = [];
  private flushing = false;

  constructor(
    private readonly commit: (batch: Req[]) => Promise<(Res | Error)[]>,
    private readonly maxBatch = 256,
  ) {}

  submit(request: Req): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.queue.push({ request, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          await this.settle(batch);
        } catch (err) {
          if (batch.length === 1) {
            batch[0]!.reject(err);
            continue;
          }
          for (const pending of batch) await this.settle([pending]).catch(pending.reject);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private async settle(batch: typeof this.queue): Promise<void> {
    const outcomes = await this.commit(batch.map((p) => p.request));
    outcomes.forEach((outcome, i) => (outcome instanceof Error ? batch[i]!.reject(outcome) : batch[i]!.resolve(outcome)));
  }
}

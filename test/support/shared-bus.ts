import type { Bus } from '../../src/bus/bus.ts';

type Handler = (message: unknown) => void;

/**
 * Several in-process nodes on one broadcast whose delivery the test controls: per receiving
 * node, messages can be dropped or held back, as a lossy or slow network would. Messages go
 * through JSON, as over NATS.
 */
export class SharedBus {
  private readonly subs: { node: string; subject: string; handler: Handler }[] = [];
  /** Return true to lose this message on its way to `node`. */
  drop: (node: string, subject: string, message: any) => boolean = () => false;
  /** Milliseconds this message takes to reach `node`. */
  delay: (node: string, subject: string, message: any) => number = () => 0;

  for(node: string): Bus {
    return {
      description: `shared test bus (${node})`,
      publish: (subject, message) => {
        if (this.drop(node, '*out*', message)) return; // nothing leaves a cut-off node
        for (const sub of this.subs.filter((s) => s.subject === subject)) {
          if (this.drop(sub.node, subject, message)) continue;
          const copy = JSON.parse(JSON.stringify(message)) as unknown;
          const ms = this.delay(sub.node, subject, message);
          if (ms > 0) setTimeout(() => sub.handler(copy), ms);
          else queueMicrotask(() => sub.handler(copy));
        }
      },
      subscribe: (subject, handler) => {
        const sub = { node, subject, handler };
        this.subs.push(sub);
        return () => void this.subs.splice(this.subs.indexOf(sub), 1);
      },
      close: async () => {
        for (const sub of this.subs.filter((s) => s.node === node)) this.subs.splice(this.subs.indexOf(sub), 1);
      },
    };
  }
}

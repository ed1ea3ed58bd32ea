// A process with `leash serve`'s watchdog (bound from argv[3]) whose main thread then does
// what argv[2] says: 'block' stops turning the event loop, 'work' keeps it turning through
// 2.5 s of busy slices, 'idle' does nothing (the watchdog must not keep the process alive).
import { startWatchdog } from '../../src/cli/watchdog.ts';

const [mode, bound] = process.argv.slice(2);
startWatchdog({ boundMs: Number(bound), nodeId: 'fixture' });
if (mode === 'block') {
  setTimeout(() => {
    const end = Date.now() + 20_000;
    while (Date.now() < end); // as wedged as a deadlocked isolate: no JavaScript runs until it ends
    console.log('unblocked');
  }, 50);
} else if (mode === 'work') {
  const end = Date.now() + 2500;
  const slice = () => {
    const until = Date.now() + 50;
    while (Date.now() < until);
    if (Date.now() < end) setImmediate(slice);
    else console.log('done');
  };
  slice();
}

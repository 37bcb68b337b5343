// Test harness: a real relay per test file, development tokens, and the Rust todo CLI.
// Every wait is bounded; nothing listens or connects beyond 127.0.0.1.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const RELAY_BIN = process.env.SYNCLINE_RELAY_BIN || new URL('../../../target/debug/syncline-relay', import.meta.url).pathname;
export const TODO_BIN = process.env.SYNCLINE_TODO_BIN || new URL('../../../target/debug/syncline-todo', import.meta.url).pathname;
const ENV = { ...process.env, RUST_LOG: 'error' };

export const newDevice = () => randomBytes(16).toString('hex');   // 16 random bytes, lowercase hex

/** Starts `syncline-relay serve` on a free loopback port with a fresh data directory. */
export async function startRelay() {
  const dir = mkdtempSync(join(tmpdir(), 'syncline-js-'));
  const dataDir = join(dir, 'relay');
  const proc = spawn(RELAY_BIN, ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir], { env: ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  const addr = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`relay did not start in 15 s: ${stderr}`)), 15000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/^syncline-relay listening on (\S+)\n/);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`relay exited (${code}): ${stderr}`)); });
  });
  proc.stdout.resume();
  return {
    url: `ws://${addr}/v1/sync`,                                   // PROTOCOL.md "Transport"
    cliUrl: `ws://${addr}`,                                         // the CLI adds the path itself
    dataDir, dir,
    async token(device, { read = 'todos', write = 'todos', user = 'alice' } = {}) {
      const args = ['token', '--data-dir', dataDir, '--user', user, '--device', device, '--ttl', '600'];
      if (read) args.push('--read', read);
      if (write) args.push('--write', write);
      const { stdout } = await run(RELAY_BIN, args, { env: ENV, timeout: 15000 });
      return stdout.trim();
    },
    async stop() {
      if (proc.exitCode === null) {
        const exited = new Promise((r) => proc.once('exit', r));
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The Rust todo CLI on a store of its own under the relay's temp dir. */
export function todoCli(relay, name) {
  const store = join(relay.dir, name);
  const cli = async (...args) => (await run(TODO_BIN, ['--store', store, ...args], { env: ENV, timeout: 60000 })).stdout.trim();
  return {
    cli,
    device: () => cli('device'),
    add: (title) => cli('add', title),
    done: (id) => cli('done', id),
    list: async () => JSON.parse(await cli('list', '--json')),
    async sync() {
      const token = await relay.token(await cli('device'));
      return cli('sync', '--relay', relay.cliUrl, '--token', token, '--timeout', '30');
    },
  };
}

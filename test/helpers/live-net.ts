/**
 * client - router - server namespaces for the live (NFQUEUE) tests and bench, built by
 * scripts/live/netns.sh; traffic from scripts/live/traffic.py (system python3 with scapy).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { liveAvailable } from '../../src/input/live/netlink.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
export const NETNS_SH = `${root}scripts/live/netns.sh`;
export const TRAFFIC_PY = `${root}scripts/live/traffic.py`;
export const PYTHON = '/usr/bin/python3';
/** System tools first: npx puts node_modules/.bin (with an unrelated "nft") in front. */
const SYS_PATH = `/usr/sbin:/usr/bin:/sbin:/bin:${process.env['PATH'] ?? ''}`;
const env = { ...process.env, PATH: SYS_PATH };

/** Why the live tests cannot run here, or null when they can. */
export async function liveSkipReason(): Promise<string | null> {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'not root (needs network namespaces and CAP_NET_ADMIN)';
  for (const tool of ['ip', 'nft', 'iptables-nft', 'ip6tables-nft', 'ethtool']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`], { env }).status !== 0) return `${tool} is not installed`;
  }
  if (!existsSync(PYTHON) || spawnSync(PYTHON, ['-c', 'import scapy']).status !== 0) return `${PYTHON} with scapy is not installed`;
  const koffi = await liveAvailable();
  if (koffi) return koffi;
  return null;
}

export class LiveNet {
  readonly client: string;
  readonly router: string;
  readonly server: string;
  private serverProc: ChildProcess | null = null;

  constructor(readonly prefix: string) {
    this.client = `${prefix}-client`;
    this.router = `${prefix}-router`;
    this.server = `${prefix}-server`;
  }

  up(): void {
    execFileSync(NETNS_SH, ['up', this.prefix], { stdio: 'pipe', env });
  }

  /** Router rules: shadow | enforce | accept | conntrack | none, queues "A:B". */
  rules(mode: string, queues: string): void {
    execFileSync(NETNS_SH, ['rules', this.prefix, mode === 'accept' ? 'enforce' : mode, queues], { stdio: 'pipe', env });
  }

  down(): void {
    this.serverProc?.kill('SIGKILL');
    this.serverProc = null;
    spawnSync(NETNS_SH, ['down', this.prefix], { env });
  }

  /** Start the HTTP + UDP echo server in the server namespace. */
  async serve(): Promise<void> {
    const p = spawn('ip', ['netns', 'exec', this.server, PYTHON, TRAFFIC_PY, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.serverProc = p;
    await new Promise<void>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('server did not start in 10 s')), 10000);
      p.stdout!.on('data', (b: Buffer) => {
        if (b.toString().includes('ready')) { clearTimeout(timer); ok(); }
      });
      p.once('exit', (c) => { clearTimeout(timer); fail(new Error(`server exited ${c}`)); });
    });
  }

  /** Run traffic.py in the client namespace; its last stdout line is JSON. */
  traffic(args: string[], timeoutMs = 60000): Promise<Record<string, unknown>> {
    return new Promise((ok, fail) => {
      const p = spawn('ip', ['netns', 'exec', this.client, PYTHON, TRAFFIC_PY, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
      let out = '';
      let err = '';
      p.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
      p.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.once('exit', (code) => {
        clearTimeout(timer);
        const last = out.trim().split('\n').pop() ?? '';
        try {
          ok(JSON.parse(last) as Record<string, unknown>);
        } catch {
          fail(new Error(`traffic.py ${args.join(' ')} exited ${code}: ${err.slice(-400)}`));
        }
      });
    });
  }

  /** Packets that reached the server addressed to the phantom host 10.200.2.10 (crafted ones). */
  phantomCount(): number {
    const txt = execFileSync('ip', ['netns', 'exec', this.server, 'nft', 'list', 'table', 'netdev', 'ctsab_count'], { encoding: 'utf8', env });
    return Number(/counter packets (\d+)/.exec(txt)?.[1] ?? NaN);
  }

  /** Packets that left the router with mark 0x10 (enforce mode rules). */
  markedCount(): number {
    const txt = execFileSync('ip', ['netns', 'exec', this.router, 'nft', 'list', 'table', 'inet', 'ctsab_marks'], { encoding: 'utf8', env });
    return Number(/counter packets (\d+)/.exec(txt)?.[1] ?? NaN);
  }
}

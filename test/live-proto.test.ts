/** The NFQUEUE protocol code and the firewall policy, without a kernel (any user). */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  MessageWriter, NfqPacket, parsePacketMessage, VerdictBatcher, NF_ACCEPT, NF_DROP, NFQA_MARK, NFQA_PACKET_HDR,
  NFQA_PAYLOAD, NFQA_SKB_INFO, NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_VERDICT_BATCH, NLMSG_HDRLEN,
} from '../src/input/live/nfqueue.js';
import { parseQueues } from '../src/input/live/live.js';
import { LiveDecider } from '../src/input/live/decider.js';
import { SHADOW_MAGIC } from '../src/input/live/control.js';
import { ConntrackTable } from '../src/table/table.js';
import { H_COUNT } from '../src/table/layout.js';
import { Conntrack } from '../src/track/core.js';
import { ACTION_ACCEPT, ACTION_DROP, Policy, policyCidr } from '../src/ops/policy.js';
import { Packet, LINKTYPE_RAW } from '../src/input/packet/packet.js';
import { parseFrame } from '../src/input/packet/parse.js';
import { CT_ESTABLISHED, CT_INVALID, CT_NEW, CT_RELATED, CT_UNTRACKED, Verdict } from '../src/track/verdict.js';
import { tcp4, udp4 } from './helpers/frames.js';

/** A packet message as the kernel sends it: header, mark, payload. */
function packetMessage(queue: number, id: number, mark: number | null, payload: Uint8Array): Uint8Array {
  const w = new MessageWriter(4096);
  w.begin(NFQNL_MSG_PACKET, 0, queue);
  w.attrBytes(NFQA_PACKET_HDR, [id >>> 24, (id >>> 16) & 255, (id >>> 8) & 255, id & 255, 0x08, 0x00, 2]);
  if (mark !== null) w.attrU32(NFQA_MARK, mark);
  w.attrU32(NFQA_SKB_INFO, 0);
  w.attrBytes(NFQA_PAYLOAD, [...payload]);
  w.end();
  return w.buf.slice(0, w.len);
}

test('a packet message parses into id, queue, mark and the payload in place', (t) => {
  const frame = udp4({ src: '10.0.0.1', dst: '10.0.0.2', sport: 5000, dport: 53, payload: 'q' });
  const m = packetMessage(3, 0xfffffff0, 0x5ab00021, frame);
  const buf = new Uint8Array(m.length + 8);
  buf.set(m, 8);
  const p = new NfqPacket();
  const len = parsePacketMessage(buf, new DataView(buf.buffer), 8, buf.length, p);
  t.is(len, m.length);
  t.is(p.id, 0xfffffff0);
  t.is(p.queue, 3);
  t.is(p.hwProtocol, 0x0800);
  t.true(p.hasMark);
  t.is(p.mark, 0x5ab00021);
  t.deepEqual([...buf.subarray(p.payloadOff, p.payloadOff + p.payloadLen)], [...frame]);
  const pkt = new Packet();
  parseFrame(LINKTYPE_RAW, buf, p.payloadOff, p.payloadLen, pkt);
  t.is(pkt.reason, null);
  t.is(pkt.dport, 53);
});

test('truncated or foreign messages are refused without reading past the end', (t) => {
  const m = packetMessage(0, 7, null, new Uint8Array(40));
  const p = new NfqPacket();
  for (let cut = 0; cut < m.length; cut += 3) {
    const b = m.slice(0, cut);
    const len = parsePacketMessage(b, new DataView(b.buffer), 0, b.length, p);
    t.true(len === 0 || p.id === -1 || p.payloadOff + p.payloadLen <= cut);
  }
  const other = new Uint8Array(m);
  new DataView(other.buffer).setUint16(4, 2, true); // NLMSG_ERROR
  t.is(parsePacketMessage(other, new DataView(other.buffer), 0, other.length, p), other.length);
  t.is(p.id, -1);
});

/** Read back the verdict messages a batcher wrote: [type, verdict, id, mark|null]. */
function readVerdicts(w: MessageWriter): Array<[number, number, number, number | null]> {
  const out: Array<[number, number, number, number | null]> = [];
  const dv = w.dv;
  let o = 0;
  while (o < w.len) {
    const len = dv.getUint32(o, true);
    const type = dv.getUint16(o + 4, true) & 0xff;
    t0(dv.getUint16(o + 4, true) >> 8 === 3);
    let a = o + NLMSG_HDRLEN + 4;
    let verdict = -1, id = -1, mark: number | null = null;
    while (a < o + len) {
      const al = dv.getUint16(a, true);
      const at = dv.getUint16(a + 2, true);
      if (at === 2) { verdict = dv.getUint32(a + 4, false); id = dv.getUint32(a + 8, false); }
      if (at === NFQA_MARK) mark = dv.getUint32(a + 4, false);
      a += (al + 3) & ~3;
    }
    out.push([type, verdict, id, mark]);
    o += len;
  }
  return out;
}
function t0(ok: boolean): void {
  if (!ok) throw new Error('not an nfqueue message');
}

test('verdicts: runs of one verdict and mark become one batch verdict, in packet order', (t) => {
  const vb = new VerdictBatcher(1);
  vb.add(10, NF_ACCEPT, -1);
  vb.add(11, NF_ACCEPT, -1);
  vb.add(12, NF_ACCEPT, -1);
  vb.add(13, NF_DROP, -1);
  vb.add(14, NF_ACCEPT, 0x10);
  vb.add(15, NF_ACCEPT, 0x10);
  vb.add(16, NF_ACCEPT, -1);
  // flush() without a socket: close the last run by hand through a fake socket.
  const sent: Uint8Array[] = [];
  const fake = { send: (b: Uint8Array, n: number) => { sent.push(b.slice(0, n)); return n; } };
  t.is(vb.flush(fake as never), 0);
  t.is(sent.length, 1, 'one send for the whole batch');
  const w = new MessageWriter(sent[0]!.length);
  w.buf.set(sent[0]!);
  w.len = sent[0]!.length;
  t.deepEqual(readVerdicts(w), [
    [NFQNL_MSG_VERDICT_BATCH, NF_ACCEPT, 12, null],
    [NFQNL_MSG_VERDICT, NF_DROP, 13, null],
    [NFQNL_MSG_VERDICT_BATCH, NF_ACCEPT, 15, 0x10],
    [NFQNL_MSG_VERDICT, NF_ACCEPT, 16, null],
  ]);
  t.is(vb.batches, 4);
});

test('queue lists', (t) => {
  t.deepEqual(parseQueues('0-1'), [0, 1]);
  t.deepEqual(parseQueues('3'), [3]);
  t.deepEqual(parseQueues('0,2,5-6'), [0, 2, 5, 6]);
  t.throws(() => parseQueues('1-0'));
  t.throws(() => parseQueues('a'));
});

test('CIDRs, IPv4 and IPv6', (t) => {
  t.deepEqual(policyCidr('10.1.2.3/8'), { family: 2, addr: [0x0a000000, 0, 0, 0], mask: [0xff000000, 0, 0, 0] });
  const v6 = policyCidr('fd00:200::/56');
  t.is(v6.family, 10);
  t.deepEqual(v6.addr, [0xfd000200, 0, 0, 0]);
  t.deepEqual(v6.mask, [0xffffffff, 0xffffff00, 0, 0]);
  t.deepEqual(policyCidr('::1').addr, [0, 0, 0, 1]);
  t.throws(() => policyCidr('10.0.0.256'));
  t.throws(() => policyCidr('10.0.0.0/33'));
  t.throws(() => policyCidr('fd00::1::2'));
});

function decided(frame: Uint8Array, state: number, drop = false): { v: Verdict; pkt: Packet } {
  const pkt = new Packet();
  parseFrame(LINKTYPE_RAW, frame, 0, frame.length, pkt);
  const v = new Verdict();
  v.state = state;
  v.dir = state === CT_INVALID || state === CT_UNTRACKED ? -1 : 0;
  v.drop = drop;
  return { v, pkt };
}

test('policy: established and related pass, invalid drops, new ones by the first matching rule', (t) => {
  const p = new Policy({
    default: 'drop', connmark: true,
    rules: [
      { action: 'drop', src: '10.0.9.0/24' },
      { action: 'accept', proto: 'tcp', dst: ['10.0.0.0/16', 'fd00::/8'], dport: '80,8000-8999', mark: 7 },
      { action: 'accept', proto: 'udp', dport: 53, zone: 2 },
    ],
  });
  const web = tcp4({ src: '10.0.1.1', dst: '10.0.2.2', sport: 40000, dport: 8080, flags: 'S' });
  let { v, pkt } = decided(web, CT_NEW);
  t.is(p.decide(v, pkt, 0, 0), ACTION_ACCEPT);
  t.is(p.mark, 7);
  t.is(p.lastRule, 1);
  ({ v, pkt } = decided(tcp4({ src: '10.0.9.1', dst: '10.0.2.2', sport: 40000, dport: 80, flags: 'S' }), CT_NEW));
  t.is(p.decide(v, pkt, 0, 0), ACTION_DROP, 'first match wins');
  ({ v, pkt } = decided(tcp4({ src: '10.0.1.1', dst: '10.0.2.2', sport: 40000, dport: 22, flags: 'S' }), CT_NEW));
  t.is(p.decide(v, pkt, 0, 0), ACTION_DROP, 'no rule: the default');
  const dns = udp4({ src: '10.0.1.1', dst: '10.0.2.2', sport: 5000, dport: 53, payload: 'q' });
  ({ v, pkt } = decided(dns, CT_NEW));
  t.is(p.decide(v, pkt, 0, 0), ACTION_DROP, 'zone 0 is not zone 2');
  t.is(p.decide(v, pkt, 2, 0), ACTION_ACCEPT);
  ({ v, pkt } = decided(web, CT_ESTABLISHED));
  t.is(p.decide(v, pkt, 0, 7), ACTION_ACCEPT);
  t.is(p.mark, 7, 'connmark: established packets carry the connection\'s mark');
  ({ v, pkt } = decided(web, CT_RELATED));
  t.is(p.decide(v, pkt, 0, 0), ACTION_ACCEPT);
  t.is(p.mark, -1);
  ({ v, pkt } = decided(web, CT_INVALID));
  t.is(p.decide(v, pkt, 0, 0), ACTION_DROP);
  ({ v, pkt } = decided(web, CT_ESTABLISHED, true));
  t.is(p.decide(v, pkt, 0, 0), ACTION_DROP, 'a table-full drop stays a drop');
  ({ v, pkt } = decided(web, CT_UNTRACKED));
  t.is(p.decide(v, pkt, 0, 0), ACTION_ACCEPT);
});

test('policy: bad files are refused with the reason', (t) => {
  t.throws(() => new Policy({ rules: [{ action: 'allow' as never }] }), { message: /action/ });
  t.throws(() => new Policy({ rules: [{ action: 'accept', proto: 'icmp', dport: 80 }] }), { message: /ports need/ });
  t.throws(() => new Policy({ rules: [{ action: 'accept', proto: 'tcpx' }] }), { message: /unknown protocol/ });
  t.throws(() => new Policy({ rules: [{ action: 'accept', dport: '90-80' }] }), { message: /port range/ });
  t.throws(() => new Policy({ rules: [{ action: 'accept', src: 'nowhere' }] }), { message: /policy: "nowhere"/ });
  t.throws(() => new Policy({ defualt: 'drop' } as never), { message: /unknown key "defualt"/ });
  t.throws(() => new Policy({ invalid: 'maybe' as never }), { message: /invalid must be/ });
});

test('nfqueue command: option errors exit 2 with the reason', (t) => {
  const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
  const run = (...a: string[]): { code: number | null; err: string } => {
    const r = spawnSync(process.execPath, [cli, 'nfqueue', ...a], { encoding: 'utf8' });
    return { code: r.status, err: r.stderr };
  };
  let r = run('--shadow', '--enforce');
  t.is(r.code, 2);
  t.regex(r.err, /exclude each other/);
  r = run('--queues', '2-1');
  t.is(r.code, 2);
  t.regex(r.err, /bad queue range/);
  r = run('--enforce', '--policy', '/nonexistent/policy.json');
  t.is(r.code, 2);
  t.regex(r.err, /cannot read/);
  r = run('--copy-range', '10');
  t.is(r.code, 2);
  t.regex(r.err, /--copy-range/);
});

function deciderRun(dec: LiveDecider, msgs: Uint8Array[], vb: VerdictBatcher): void {
  const ct = dec.ct;
  ct.beginBatch();
  for (const m of msgs) {
    const buf = new Uint8Array(m);
    t1(dec.message(buf, new DataView(buf.buffer), 0, buf.length, 1_000_000, vb) === m.length);
  }
  ct.endBatch();
}
function t1(ok: boolean): void {
  if (!ok) throw new Error('message not consumed');
}

const A4 = '10.0.0.1';
const B4 = '10.0.0.2';
const syn = tcp4({ src: A4, dst: B4, sport: 40000, dport: 80, flags: 'S', seq: 1000, win: 64240, options: { mss: 1460, wscale: 7, sackPerm: true } });
const synack = tcp4({ src: B4, dst: A4, sport: 80, dport: 40000, flags: 'SA', seq: 5000, ack: 1001, win: 65160, options: { mss: 1460, wscale: 7, sackPerm: true } });
const ack = tcp4({ src: A4, dst: B4, sport: 40000, dport: 80, flags: 'A', seq: 1001, ack: 5001, win: 502 });
const mark = (state: number, dir: number): number => (SHADOW_MAGIC | ((state + 1) << 4) | dir) >>> 0;

test('shadow decider: agreement with the kernel\'s mark is checked per packet; a mismatch is reported with the packet', (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const ct = new Conntrack(table);
  const lines: string[] = [];
  const dec = new LiveDecider(ct, { mode: 'shadow', queue: 4, report: (l) => lines.push(l) });
  const vb = new VerdictBatcher(4);
  deciderRun(dec, [
    packetMessage(4, 1, mark(CT_NEW, 0), syn),
    packetMessage(4, 2, mark(CT_ESTABLISHED, 1), synack),
    packetMessage(4, 3, mark(CT_NEW, 0), ack), // wrong on purpose: ours is established/original
    packetMessage(4, 4, null, ack), // no kernel state
  ], vb);
  t.is(dec.packets, 4);
  t.is(dec.checked, 3);
  t.is(dec.noKernelState, 1);
  t.is(dec.mismatches, 1);
  t.is(lines.length, 1);
  t.regex(lines[0]!, /^mismatch queue 4 id 3: kernel new\/original, ours established\/original: tcp 10\.0\.0\.1:40000 > 10\.0\.0\.2:80 \[\.\] seq 1001 ack 5001/);
  t.is(dec.accepted, 4, 'shadow mode accepts everything: the kernel decides');
  ct.close();
});

test('enforce decider: policy verdicts and marks; a refused new connection leaves no entry', (t) => {
  const table = ConntrackTable.create({ max: 1024 });
  const ct = new Conntrack(table);
  const dec = new LiveDecider(ct, {
    mode: 'enforce',
    policy: { default: 'drop', connmark: true, rules: [{ action: 'accept', proto: 'tcp', dport: 80, mark: 0x10 }] },
  });
  const sent: Uint8Array[] = [];
  const fake = { send: (b: Uint8Array, n: number) => { sent.push(b.slice(0, n)); return n; } };
  const vb = new VerdictBatcher(0);
  const ssh = tcp4({ src: A4, dst: B4, sport: 40001, dport: 22, flags: 'S', seq: 1, win: 64240 });
  const bad = tcp4({ src: A4, dst: B4, sport: 40002, dport: 80, flags: 'SF', seq: 1, win: 64240 });
  deciderRun(dec, [
    packetMessage(0, 1, null, syn), packetMessage(0, 2, null, synack), packetMessage(0, 3, null, ack),
    packetMessage(0, 4, null, ssh), packetMessage(0, 5, null, bad),
  ], vb);
  vb.flush(fake as never);
  const w = new MessageWriter(sent[0]!.length);
  w.buf.set(sent[0]!);
  w.len = sent[0]!.length;
  t.deepEqual(readVerdicts(w), [
    [NFQNL_MSG_VERDICT_BATCH, NF_ACCEPT, 3, 0x10], // the new connection's mark, then its connmark
    [NFQNL_MSG_VERDICT_BATCH, NF_DROP, 5, null], // port 22 by the policy, SYN+FIN invalid
  ]);
  t.is(dec.dropped, 2);
  t.is(Atomics.load(table.i32, H_COUNT), 1, 'only the accepted connection is in the table');
  ct.close();
});

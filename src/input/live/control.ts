/**
 * The shared control block of the live (NFQUEUE) workers: one record of Q_WORDS int32 words per
 * queue. The main thread writes Q_STOP and Q_CRASH_AFTER; the queue's worker writes everything
 * else (single writer per record: it publishes its counters with Atomics.store once per receive
 * batch, the main thread reads them with Atomics.load).
 */
export const Q_STOP = 0; // 1: leave the loop (after verdicts for every packet received)
export const Q_STATE = 1; // QS_*
export const Q_FD = 2; // the queue's netlink socket (closed by the supervisor if the worker dies)
export const Q_WID = 3; // the worker's table worker record (for recovery)
export const Q_PACKETS = 4;
export const Q_ACCEPTED = 5;
export const Q_DROPPED = 6;
export const Q_NEW = 7;
export const Q_ESTABLISHED = 8;
export const Q_RELATED = 9;
export const Q_INVALID = 10;
export const Q_UNTRACKED = 11;
export const Q_SHADOW_CHECKED = 12; // packets compared with the kernel's state
export const Q_MISMATCH = 13;
export const Q_NO_KERNEL_STATE = 14; // shadow packets that carried no kernel state (no mark)
export const Q_RECV_ERRORS = 15;
export const Q_SEND_ERRORS = 16;
export const Q_BATCHES = 17; // receive batches
export const Q_VERDICT_MSGS = 18; // verdict messages sent (a batch verdict counts once)
export const Q_CRASH_AFTER = 19; // test hook: the worker exits after this many more packets (-1: never)
export const Q_HEARTBEAT = 20; // wall clock ms of the last loop turn (low 31 bits)
export const Q_BYTES_KIB = 21; // IP bytes seen, KiB
export const Q_RESTARTS = 22; // written by the supervisor: workers restarted on this queue
export const Q_KERNEL_CT = 23; // 1: the kernel attaches NFQA_CT (netlink glue), 0: marks
export const Q_DECIDE_US = 24; // time spent deciding (parse, track, policy, verdict building), µs
export const Q_TURN_US = 25; // time from the first packet of a turn received to its verdicts sent, µs
export const Q_WORDS = 32;

export const QS_STARTING = 0;
export const QS_RUNNING = 1;
export const QS_STOPPED = 2;
export const QS_FAILED = 3;

/**
 * Shadow mode: the kernel's ct state and direction, written into the packet mark by an nft rule
 * before the queue: SHADOW_MAGIC | (CT_* + 1) << 4 | direction.
 */
export const SHADOW_MAGIC = 0x5ab00000;
export const SHADOW_MAGIC_MASK = 0xffffff00;

export const COUNTER_NAMES: ReadonlyArray<[string, number]> = [
  ['packets', Q_PACKETS], ['accepted', Q_ACCEPTED], ['dropped', Q_DROPPED], ['new', Q_NEW],
  ['established', Q_ESTABLISHED], ['related', Q_RELATED], ['invalid', Q_INVALID], ['untracked', Q_UNTRACKED],
  ['shadowChecked', Q_SHADOW_CHECKED], ['mismatches', Q_MISMATCH], ['noKernelState', Q_NO_KERNEL_STATE],
  ['recvErrors', Q_RECV_ERRORS], ['sendErrors', Q_SEND_ERRORS], ['batches', Q_BATCHES],
  ['verdictMessages', Q_VERDICT_MSGS], ['kib', Q_BYTES_KIB], ['restarts', Q_RESTARTS],
  ['decideUs', Q_DECIDE_US], ['turnUs', Q_TURN_US],
];

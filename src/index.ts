/**
 * conntrack-sab: Linux-netfilter-style connection tracking on a SharedArrayBuffer table.
 *
 *   const table = ConntrackTable.create({ max: 65536 });
 *   const ct = new Conntrack(table);          // one per thread; attach others with table.handle()
 *   const v = ct.decide(frame);               // Ethernet frame, wall clock
 *   v.ctstate; v.direction; v.reason;
 */
export { ConntrackTable, type TableOptions, type TableHandle, type Discipline } from './table/table.js';
export { Conntrack, type ConntrackOptions, type DecideOptions } from './track/core.js';
export {
  Verdict, CTSTATE_NAMES, CT_NEW, CT_ESTABLISHED, CT_RELATED, CT_INVALID, CT_UNTRACKED, CT_HELD,
  FRAG_NONE, FRAG_HELD, FRAG_DONE, FRAG_DROP, FRAG_PASS, FRAG_NAMES,
} from './track/verdict.js';
export { Defrag, type DefragStores, type FragDropped } from './input/defrag/defrag.js';
export { Packet, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, LINKTYPE_NFLOG, LINKTYPE_IPV4, LINKTYPE_IPV6 } from './input/packet/packet.js';
export { parseFrame } from './input/packet/parse.js';
export { readCapture, openCapture, CaptureError, type CaptureReader, CaptureRecord, CaptureStream, GzipError, type CaptureSource } from './input/capture/reader.js';
export { replay, ReplayGc, type ReplayOptions, type ReplayResult } from './ops/replay.js';
export { EVENT_NEW, EVENT_UPDATE, EVENT_DESTROY, type EventSink } from './table/events.js';
export { formatEntry, formatEvent, formatStats, entryJson, type EntryJson, type ConnEntryJson, type TupleJson } from './ops/format.js';
export { SYSCTLS, findSysctl, type SysctlDef } from './table/sysctl.js';
export { TCP_STATE_NAMES } from './track/proto/tcp.js';
export { CtOps, CtMatcher, EntryDump, parseCidr, parseProto, tupleFromSpec, invertSpec, workerStats, type CtFilter, type CtOpsOptions, type OpOptions, type TupleSpec, type WalkOptions, type WorkerStats } from './ops/ops.js';
export { encodeSnapshot, decodeSnapshot, restoreSnapshot, saveSnapshotFile, loadSnapshotFile, saveSnapshot, loadSnapshot, isSnapshot, snapshotEntries, crc32, SnapshotError, type Snapshot, type RestoreOptions, type RestoreResult, type EncodeOptions } from './ops/snapshot.js';
export { prometheusText, formatPrometheus, metricsFromTable, metricsFromSnapshot, type MetricsSource } from './ops/metrics.js';
export { formatProcEntry, formatCount, zoneParts } from './ops/format.js';
export { ConntrackPool, WorkerDeathError, type PoolOptions, type ProcessOptions, type PoolReplayOptions, type PoolReplayResult, type BatchResult, type WorkerDeath } from './pool/pool.js';
export { PacketBatch, BatchVerdict, type BatchOptions } from './pool/batch.js';
export { startGc, GcHandle, GcEngine, gcCounters, type GcOptions, type StartGcOptions, type GcCounters } from './table/gc.js';
export { recoverDeadWorker, recoverDeadWorkers, reclaimOrphans, type RecoveryReport, type RecoveryOptions } from './table/recovery.js';
export { checkInvariants, formatInvariants, type InvariantReport, type InvariantResult } from './table/invariants.js';
export { subscribeEvents, eventStats, EventSubscription, ConnEvent, StallEvent, type ConnEventJson, type ConnEventKind, type StallEventJson, type StallKind, type SubscribeOptions, type EventRingStats } from './table/ecache.js';
// Per-slot extension access (connAcct, setConnLabel, setConnTimeoutPolicy, ...) stays internal: a
// slot is only safe inside a batch. The public way is CtOps (dump().acct(i), setLabel,
// setTimeoutPolicy) and the events' acct / timestamps.
export {
  defineTimeoutPolicy, attachTimeoutPolicyToZone, timeoutPolicies, extStats, type ConnAcct, type TimeoutPolicySpec, type ExtStats,
} from './table/ext.js';
export { ZONE_DIR_ORIG, ZONE_DIR_REPL, ZONE_DIR_BOTH, NamespaceView } from './table/zones.js';
export {
  compareWithKernel, compareWireWithKernel, compareFixture, compareFixtureDir, parseCtLine, parseLabel, formatDifference,
  type OracleComparison, type WireComparison, type FixtureComparison, type Difference, type CtLine, type KernelLabel, type Mismatch,
} from './ops/oracle.js';
export { ConntrackError, ConntrackRangeError, ERROR_CODES, isConntrackError, type ConntrackErrorCode } from './errors.js';
export {
  parseNatRule, parseNatRules, compileNat, type NatRule, type NatConfig, type NatInterface, type NatType,
} from './track/nat/rules.js';
export { NAT_REWROTE_SRC, NAT_REWROTE_DST, NAT_REWROTE_INNER } from './track/nat/nat.js';
export { bysourceCount, setNatPlacement, checkNatInvariants } from './track/nat/bysource.js';
export { LiveQueues, parseQueues, type LiveOptions, type LiveMode, type QueueCounters } from './input/live/live.js';
export { liveAvailable, LiveUnavailableError } from './input/live/netlink.js';
export { Policy, ACTION_ACCEPT, ACTION_DROP, type PolicySpec, type PolicyRule } from './ops/policy.js';

/**
 * The SharedArrayBuffer layout of a conntrack table, declared once.
 *
 * Every other module reaches shared memory through these constants. All offsets are in
 * 32-bit words of one Int32Array (`i32`) over the whole buffer; a Uint32Array (`u32`) over the
 * same buffer is used where values are unsigned (addresses, sequence numbers).
 *
 * Sections, in buffer order:
 *   header | sysctl words | statistics (per worker) | worker records | zone counters |
 *   namespace counters | lock stripes | hash buckets | entry slab
 */

export const MAGIC = 0x43545342; // 'CTSB'
export const LAYOUT_VERSION = 4; // 4: bucket lock stripes a cache line apart (LOCK_STRIDE); 3: per-record entry counts (W_CNT) and id ranges; 2: worker records of 80 words (liveness, event recovery), 48 header words, the park queue

// ---------------------------------------------------------------------------------------------
// Header (word offsets from 0).
export const H_MAGIC = 0;
export const H_VERSION = 1;
export const H_CAPACITY = 2; // entry slots in the slab (nf_conntrack_max upper bound)
export const H_BUCKETS = 3; // hash buckets, a power of two
export const H_LOCKS = 4; // lock stripes, a power of two
/**
 * Words from one bucket lock stripe to the next (section `locks`): one cache line each. Every TCP
 * packet takes its stripe; packed 16 to a line, two threads taking different stripes still
 * bounced the line between their cores (replay --workers 2: ~0.1 s of 2 s of CPU, bench/README.md).
 */
export const LOCK_STRIDE = 16;
export const H_MAX_WORKERS = 5; // worker records
// Confirmed (hashed) entries, the global part of a percpu_counter: each worker record keeps its
// own unfolded part in W_CNT, so the count is H_COUNT + the sum of every record's W_CNT (exact
// when no thread is inside a batch; table.count). Atomics.add by a folding worker, always while
// it holds a bucket lock stripe (so crash recovery, holding every stripe, sees it frozen).
export const H_COUNT = 6;
export const H_CLOCK = 7; // table clock, ms, uint32 wrapping; written by the driver, read by GC
export const H_EPOCH = 8; // QSBR global epoch; Atomics.add by reclaimers
export const H_KEY0 = 9; // hash secret, 64 bits (2 words), random per table
export const H_KEY1 = 10;
export const H_FREE_LOCK = 11; // lock word protecting H_FREE_HEAD / H_FREE_COUNT and E_LINK of free slots
export const H_FREE_HEAD = 12; // head of the shared free list (-1 = empty)
export const H_FREE_COUNT = 13;
export const H_NEXT_ID = 14; // conntrack id source; Atomics.add of ID_RANGE by a worker taking a range
export const H_DISCIPLINE = 15; // DISCIPLINE_*: reclamation scheme of this table
export const H_GC_WAKE = 16; // futex word (a counter): GC worker sleeps on it, inserters that hit a full table Atomics.add + notify
export const H_GC_CURSOR = 17; // next bucket the GC worker will scan; Atomics.store by the GC worker only
export const H_GC_STOP = 18; // set to 1 (Atomics.store, then a wake) to stop the GC worker; the GC clears it on exit
export const H_NS_MAX = 19; // namespace records
export const H_EVENTS = 20; // records in the main event ring (a power of two, 0 = no ring); fixed at creation (ecache.ts)
export const H_MAX_CHAIN = 21; // chain length cap on insert (kernel's MAX_CHAINLEN)
export const H_MAX_CREATED = 22; // nf_conntrack_max the slab was sized for
export const H_GC_WID = 23; // worker record + 1 of the running GC worker (0 = none); CAS by the GC on start, store on exit
export const H_GC_RUNS = 24; // GC runs (bounded slices) completed; Atomics.add by the GC worker, read by anyone
export const H_GC_SWEEPS = 25; // full passes over every bucket completed; Atomics.add by the GC worker
export const H_GC_INTERVAL = 26; // the GC's current adaptive interval (table-clock ms); Atomics.store by the GC worker
export const H_GC_BUSY_US = 27; // wall time spent inside GC runs, microseconds (uint32 wrapping); Atomics.add by the GC worker
// Crash recovery's orphan limbo (recovery.ts): retired slots of dead workers whose grace period
// had not passed yet, linked by E_LINK (-1 ends), each with its E_RETIRE tag. Both words are
// protected by H_FREE_LOCK.
export const H_ORPHAN_HEAD = 28; // first orphan slot + 1 (0 = empty)
export const H_ORPHAN_COUNT = 29;
export const H_EXT_BLOCKS = 30; // blocks in the extension slab (ext.ts); block 0 is never used; fixed at creation
export const H_EV_DESTROY = 31; // records in the DESTROY ring (a power of two, 0 = none); fixed at creation (ecache.ts)
// Zone limits (zones.ts): the default limit for zones without their own (ovs ct-set-limits
// default=N); 0 = none. Atomics.store by the table's owner, Atomics.load by inserters.
export const H_ZONE_DEFAULT_LIMIT = 32;
// Crash recovery's hand-off stacks (recovery.ts): slots a recovery could not put on the free list or
// the orphan list itself (their lock was held by another dead worker). Lock-free pushes
// (Atomics.compareExchange of the head, slot + 1, 0 = empty, linked by E_LINK as slot + 1); taken
// whole with Atomics.exchange by a holder of H_FREE_LOCK, which splices them in.
export const H_PEND_FREE = 33; // slots ready for the free list
export const H_PEND_ORPHAN = 34; // slots that still need a grace period (E_RETIRE holds the tag)
export const H_STALL_MS = 35; // liveness: a thread silent this long (wall ms) is stalled (0 = never); Atomics.store by the owner
export const H_STALLS = 36; // stalled threads detected (workers expelled from a grace period, subscribers overrun); Atomics.add
export const H_GC_DEATHS = 37; // GC workers found dead and replaced (recovery.ts); Atomics.add
// NAT (src/track/nat/): bysource buckets (a power of two, fixed at creation); the rule set's
// seqlock word (odd while being written; Atomics.add by the writer, who holds NAT_RULE_LOCK) and
// its length in bytes (written between the two seqlock adds).
export const H_NAT_BUCKETS = 38;
export const H_NAT_SEQ = 39;
export const H_NAT_LEN = 40;
// Bumped (Atomics.add) when H_NEXT_ID is raised past ids a worker may hold in its range
// (snapshot restore): workers drop their range when it changes. Read (Atomics.load) per insert.
export const H_ID_EPOCH = 41;
// Worker records ever claimed: 1 + the highest record id claimed so far (records above it have
// never counted anything). Raised with a compareExchange loop by registerWorker; read
// (Atomics.load) by inserters to bound the count's slack and the records they sum.
export const H_REC_HWM = 42;
export const HEADER_WORDS = 48; // 43..47 free

/** Ids a worker takes from H_NEXT_ID at once (ids stay unique, in order per worker). */
export const ID_RANGE = 256;
/** A worker folds its W_CNT into H_COUNT when it reaches +-COUNT_BATCH (percpu_counter batch), and at the end of every batch. */
export const COUNT_BATCH = 32;

/** Lookups take no reference; slots are reused only after a grace period (the talk's proposal). */
export const DISCIPLINE_NOREF = 0;
/** Every lookup takes a reference; slots are reusable at once; lookups re-check (kernel today). */
export const DISCIPLINE_REFCOUNT = 1;

// ---------------------------------------------------------------------------------------------
// Sysctl words: one int32 each, index from sysctl.ts (seconds for timeouts, 0/1 for switches).
export const SYSCTL_WORDS = 64;

// ---------------------------------------------------------------------------------------------
// Statistics: one block per worker (like the kernel's per-cpu stats), single writer each.
export const ST_FOUND = 0;
export const ST_INVALID = 1;
export const ST_INSERT = 2;
export const ST_INSERT_FAILED = 3;
export const ST_DROP = 4;
export const ST_EARLY_DROP = 5;
export const ST_ERROR = 6;
export const ST_SEARCH_RESTART = 7;
export const ST_CLASH_RESOLVE = 8;
export const ST_CHAIN_TOOLONG = 9;
export const ST_NEW = 10; // packets that created an entry
export const ST_IGNORE = 11; // untracked packets
export const ST_EXPIRED = 12; // entries removed because their timeout passed
export const ST_PACKETS = 13; // packets seen
export const ST_GC_EVICT = 14; // entries evicted by the GC worker under pressure
export const ST_SOFT_RECYCLE = 15; // ASSURED entries recycled past the soft timeout
export const ST_GRACE_PERIODS = 16; // grace periods completed by this worker
export const ST_SLOTS_RECYCLED = 17; // slots returned to the free list after a grace period
export const ST_NS_LIMIT = 18; // new connections refused: their namespace was at its limit (zones.ts)
export const ST_ZONE_LIMIT = 19; // new connections refused: their zone was at its limit (zones.ts)
export const ST_CSUM_OFFLOAD = 20; // packets accepted with an offloaded (partial-sum) checksum
export const ST_FRAG_HELD = 21; // fragments held in a reassembly queue (src/input/defrag)
export const ST_FRAG_REASM = 22; // datagrams reassembled
export const ST_FRAG_DROP = 23; // fragments dropped (overlap, too big, bad length, no room)
export const ST_FRAG_TIMEOUT = 24; // reassembly queues expired (ipfrag_time)
export const ST_FRAG_EVICT = 25; // reassembly queues evicted to stay under ipfrag_high_thresh
export const ST_EXPEDITED = 26; // expedited grace periods (an allocation found no free slot)
export const ST_STALL_EXPELLED = 27; // other workers this one expelled from a grace period (stalled inside a batch)
export const ST_RESUMED = 28; // times this worker found itself expelled and re-entered its batch
export const ST_NAT_FAILED = 29; // new connections dropped: NAT found no free tuple (nat/unique.ts) or lost it at confirm
export const STAT_WORDS = 32;
/** Names in the order of `conntrack -S`, then ours. */
export const STAT_NAMES: readonly string[] = [
  'found', 'invalid', 'insert', 'insert_failed', 'drop', 'early_drop', 'error',
  'search_restart', 'clash_resolve', 'chaintoolong', 'new', 'ignore', 'expired', 'packets',
  'gc_evict', 'soft_recycle', 'grace_periods', 'slots_recycled', 'ns_limit', 'zone_limit',
  'csum_offload', 'frag_held', 'frag_reasm', 'frag_drop', 'frag_timeout', 'frag_evict',
  'expedited_gp', 'stall_expelled', 'stall_resumed',
  'nat_failed',
];

// ---------------------------------------------------------------------------------------------
// Worker records: one per thread that touches the table (packet workers, GC, API callers).
export const W_STATE = 0; // QSBR: 0 = offline, else the global epoch seen when going online
export const W_ALIVE = 1; // 1 while a thread owns the record
export const W_INTENT = 2; // operation in progress (INTENT_*), for recovery after a crash
export const W_INTENT_SLOT = 3; // the slot that operation works on
export const W_LIMBO_HEAD = 4; // retired slots awaiting a grace period (linked by E_LINK), -1 = none
export const W_LIMBO_TAIL = 5;
export const W_LIMBO_COUNT = 6;
export const W_LIMBO_EPOCH = 7; // the newest retire epoch in the limbo list
export const W_CACHE_COUNT = 8; // free slots held in this worker's cache
export const W_PID = 9; // informational: threadId of the owner
// Recovery intents (recovery.ts), beside W_INTENT / W_INTENT_SLOT. All written by the owner
// only, with Atomics.store (ordered with the shared writes they describe), read by recovery after
// the owner died. Slots are stored + 1 so that 0 (a fresh record) means none.
export const W_KILL = 10; // Chains.kill in progress: (slot + 1) << 4 | KILL_STEP_*, 0 = none
export const W_RELEASE = 11; // slot + 1 whose last reference was dropped, on its way to limbo / cache
export const W_RECLAIM = 12; // slot + 1 that Qsbr.reclaim took off the limbo head and is freeing
export const W_ALLOC_OP = 13; // allocator op holding H_FREE_LOCK: ALLOC_OP_* | cache count before << 4
export const W_ALLOC_HEAD = 14; // H_FREE_HEAD when that op started (valid while W_ALLOC_OP != 0)
export const W_HELD = 15; // 'refcount' only: slot + 1 of the lookup reference this worker holds
export const W_CACHE = 16; // W_CACHE .. W_CACHE + CACHE_SLOTS - 1
export const CACHE_SLOTS = 48;
// Liveness and event obligations (ecache.ts, recovery.ts). Owner writes with Atomics.store.
export const W_BEAT = 64; // heartbeat: wall ms (low 31 bits) when the owner last entered a batch / a GC run
export const W_KILL_WHY = 65; // the KILL_* reason of the delete named by W_KILL
export const W_EV_D = 66; // DESTROY-ring record d + 1 this worker reserved (kept until its next DESTROY)
export const W_EV_M = 67; // main-ring record seq + 1 this worker reserved for that DESTROY's marker
export const W_EV_PARK = 68; // park-queue tail + 1 this worker is about to commit (under XC_EV_PARK_LOCK)
export const W_EV_RETRY = 69; // park-queue head + 1 this worker is delivering (under XC_EV_PARK_LOCK)
// The record's unfolded part of the entry count (H_COUNT): +1 per entry its owner linked, -1 per
// entry it unlinked, folded into H_COUNT at +-COUNT_BATCH and at the end of each batch. Plain
// stores by the owner, always under a bucket lock stripe (confirm, kill, fold); kept across
// owners (a record released or recovered keeps or zeroes it: recovery.ts). Racy reads elsewhere.
export const W_CNT = 70;
// 1 while the owner creates an entry close to nf_conntrack_max (chains.ts newEntry: within the
// records' slack of it): other inserters' exact counts include it, so concurrent inserts never
// pass the limit together. Atomics.store by the owner (set before its count, cleared once the
// entry is counted or given up), Atomics.load by others; cleared by recovery.
export const W_RES = 71;
// The record's unfolded parts of namespace and zone counters (zones.ts): ZC_SLOTS pairs (key,
// delta), key = (ZC_* << 17 | id) + 1, 0 = free. Like W_CNT: plain stores by the owner under a
// bucket lock stripe, folded into the counter word at +-COUNT_BATCH, on eviction and at the end
// of each batch; never for a namespace or zone with a limit (those count exactly, with a CAS).
export const W_ZC = 80;
export const ZC_SLOTS = 8;
export const ZC_NS = 0; // NS_COUNT of namespace id
export const ZC_ZONE = 1; // ZA_COUNT of zone id (zoneKey)
export const ZC_ZORIG = 2; // the zone counter (zones section) of original zone id
export const WORKER_WORDS = 96; // 6 cache lines
export const INTENT_NONE = 0;
export const INTENT_INSERT = 1;
export const INTENT_DELETE = 2;
// An insert is in progress while W_INTENT_SLOT holds its private slot + 1: set by
// SlotAllocator.alloc before the slot leaves the cache, cleared by confirm (under the bucket
// locks, once linked and counted) or by discard. W_INTENT is INTENT_NONE on the insert path;
// discard sets INTENT_INSERT | INTENT_UNCOUNTED around the drop of the creator's reference.
// (Entries are counted when confirm links them, not at allocation: nothing to give back.)
export const INTENT_UNCOUNTED = 1 << 7; // discard: dropping the creator's reference (may or may not be done)
// W_KILL steps, in order.
export const KILL_STEP_LOCKED = 1; // bucket locks held, entry CONFIRMED and ours to remove
export const KILL_STEP_UNLINKED = 2; // DYING, unlinked from both chains, zone and entry counts dropped (W_CNT)
// (3 and 4 were the H_COUNT decrement outside the locks; it is W_CNT under them now.)
export const KILL_STEP_EMITTING = 5; // the DESTROY event is being written (W_EV_* tell how far)
export const KILL_STEP_EMITTED = 6; // the DESTROY event is in the ring or parked; the table's reference still to put
export const KILL_STEP_DROPPING = 7; // dropping the table's reference (may or may not be done)
// W_ALLOC_OP codes.
export const ALLOC_OP_REFILL = 1;
export const ALLOC_OP_SPILL = 2;
export const ALLOC_OP_DRAIN = 3;

// ---------------------------------------------------------------------------------------------
// Zone and namespace accounting.
export const ZONES = 65536; // one counter word per 16-bit zone
/**
 * Where zone z's record is in the per-zone sections (the zone counters, ZA_* records): zones
 * z and z + 1 are 4096 records apart, so workers inserting into neighbouring zones (1, 2, ...)
 * never write one cache line (false sharing); zones 16 apart share one.
 */
export function zoneRec(z: number): number {
  return ((z & 15) << 12) | (z >>> 4);
}
export const NS_COUNT = 0; // entries charged to the namespace
export const NS_LIMIT = 1; // limit granted by the table owner (0 = none)
export const NS_WORDS = 2;
// NS_COUNT: entries of the namespace linked in the table; changed in confirm / kill under the
// entry's bucket locks, with a compareExchange against NS_LIMIT (so it never passes it).
// NS_LIMIT: Atomics.store by the table's owner (ConntrackTable.setNamespaceLimit), Atomics.load.
// A namespace's entry list head (slot + 1, 0 = empty) is in the nsHeads section, one word per
// namespace record; protected by the namespace's zone-list lock stripe (ZL_NS_STRIPES).

// Per-zone accounting and entry lists (zones.ts), ZA_WORDS per 16-bit zone. A connection's zone
// here is its "zone id": the original-direction zone, or the reply zone when only that is set
// (zoneKey() in zones.ts; the filter `zone` of ops.ts).
export const ZA_COUNT = 0; // linked entries of the zone; CAS against the limit in confirm, Atomics.sub in kill, both under the bucket locks
export const ZA_LIMIT = 1; // limit + 1 set by the table's owner (0 = none: H_ZONE_DEFAULT_LIMIT applies); Atomics.store / load
export const ZA_HEAD = 2; // entry list head (slot + 1, 0 = empty); the zone's lock stripe
export const ZA_WORDS = 3;
// Lock stripes of the zone and namespace entry lists (zones.ts): one lock word each. Zone z uses
// stripe z & (ZL_ZONE_STRIPES - 1), namespace n stripe ZL_ZONE_STRIPES + (n & (ZL_NS_STRIPES - 1)).
// Taken only by confirm / kill (after the bucket stripes), early_drop within a zone or namespace,
// and index walkers (CtOps), which never hold one while taking another lock.
export const ZL_ZONE_STRIPES = 128;
export const ZL_NS_STRIPES = 128;
export const ZL_LOCKS = ZL_ZONE_STRIPES + ZL_NS_STRIPES;
/** Word (from the zlocks section) of stripe s of a kind: stripes s and s + 1 are on different cache lines. */
export function zlStripe(s: number): number {
  return ((s & 7) << 4) | (s >>> 3); // 8 lines of 16 lock words per 128 stripes
}
// List links are slot numbers (circular doubly-linked lists). A value >= capacity names walker
// marker capacity + w: a worker's cursor in one list, MARKER_WORDS per worker record, written
// only under the list's lock stripe by its owner.
export const MK_PREV = 0;
export const MK_NEXT = 1;
// The list the marker is on: (kind << 17 | key) + 1, 0 = none. Written by its owner under that
// list's stripe; read by crash recovery's list rebuild (all list stripes held), which puts a live
// walker's marker back on its list.
export const MK_LIST = 2;
export const MARKER_WORDS = 3;

// ---------------------------------------------------------------------------------------------
// Lock words: 0 = unlocked, else (owner + 1) << 2 | LOCK_LOCKED or LOCK_CONTENDED.
export const LOCK_LOCKED = 1;
export const LOCK_CONTENDED = 2;

// ---------------------------------------------------------------------------------------------
// Hash chains. A bucket head or an entry's next word holds either a tuplehash reference
// (slot << 1 | direction, >= 0) or a nulls marker ~bucket (< 0) that ends the chain and names
// the bucket it belongs to, as the kernel's hlist_nulls does.
export const DIR_ORIGINAL = 0;
export const DIR_REPLY = 1;

// ---------------------------------------------------------------------------------------------
// A tuple: source address (4 words), destination address (4 words), ports word
// (source port or ICMP id << 16 | destination port or ICMP type << 8 | code).
// IPv4 addresses use word 0 and leave 1..3 zero.
export const T_SRC = 0;
export const T_DST = 4;
export const T_PORTS = 8;
export const TUPLE_WORDS = 9;

// ---------------------------------------------------------------------------------------------
// Connection entry, ENTRY_WORDS words. Which lock protects what:
//  - E_NEXT_*: the bucket lock of that direction's bucket (writers); readers use Atomics.load.
//  - tuples, E_HASH_*, E_PROTO, E_ZONE, E_NS: written before the entry is published, then fixed.
//  - E_STATUS: Atomics.or/and (bits change from several threads).
//  - E_TIMEOUT: Atomics.store by the packet path, read by GC.
//  - protocol private words: the bucket lock of the original tuple's bucket (TCP, SCTP);
//    UDP's stream word and GRE's timeouts are written once at creation.
//  - E_LINK, E_RETIRE: owned by whoever owns the slot off-table (allocator or limbo owner).
//    While the entry is in the table with IPS_SRC_NAT_DONE, E_LINK is instead its NAT bysource
//    link (next slot, -1 ends; the kernel's nf_conn.nat_bysource), under the bysource bucket's
//    NAT lock stripe: inserted by confirm, removed by kill, both holding the entry's bucket locks.
//  - E_ZPREV/E_ZNEXT, E_NPREV/E_NNEXT: the zone's / namespace's list lock stripe (ZL_*); set
//    in confirm, left as they were by kill (a walker standing on a removed entry may go on).
export const E_NEXT = 0; // E_NEXT + dir
export const E_HASH = 2; // E_HASH + dir: full 32-bit hash of that direction's tuple
export const E_STATUS = 4;
export const E_REFCNT = 5;
export const E_GEN = 6; // bumped each time the slot is allocated
export const E_TIMEOUT = 7; // deadline on the table clock (ms, uint32 wrapping)
export const E_PROTO = 8; // l3 family (bits 0-7) | l4 protocol (bits 8-15)
export const E_ZONE = 9; // original zone (bits 0-15) | reply zone (bits 16-31)
export const E_NS = 10; // namespace id
export const E_MARK = 11;
export const E_LINK = 12; // free list / limbo link; in the table: NAT bysource link (nat/bysource.ts)
export const E_RETIRE = 13; // QSBR epoch when retired
export const E_EXT = 14; // extension area offset (0 = none)
export const E_ID = 15; // conntrack id
export const E_TUPLE = 16; // E_TUPLE + dir * TUPLE_WORDS: the tuple of each direction
export const E_PRIV = 34; // protocol private area, PRIV_WORDS words
export const PRIV_WORDS = 14;
export const E_ZPREV = 48; // zone entry list (zones.ts): previous, next (slot, or a marker >= capacity)
export const E_ZNEXT = 49;
export const E_NPREV = 50; // namespace entry list (zones.ts): previous, next
export const E_NNEXT = 51;
export const ENTRY_WORDS = 52;
export const ENTRY_BYTES = ENTRY_WORDS * 4;

// Status bits, at the kernel's IPS_* positions.
export const IPS_EXPECTED = 1 << 0;
export const IPS_SEEN_REPLY = 1 << 1;
export const IPS_ASSURED = 1 << 2;
export const IPS_CONFIRMED = 1 << 3;
export const IPS_SRC_NAT = 1 << 4;
export const IPS_DST_NAT = 1 << 5;
export const IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT;
export const IPS_SRC_NAT_DONE = 1 << 7;
export const IPS_DST_NAT_DONE = 1 << 8;
export const IPS_DYING = 1 << 9;
export const IPS_FIXED_TIMEOUT = 1 << 10;
export const IPS_UNTRACKED = 1 << 12;
export const IPS_OFFLOAD = 1 << 14;
/** Ours: the slot is allocated (owned by a worker or in the table). */
export const IPS_ALLOCATED = 1 << 24;

// TCP private words (E_PRIV + ...). Protected by the original tuple's bucket lock.
export const TCP_STATE = 0; // state (bits 0-3) | last_dir (bit 4) | last_index (bits 5-7) |
//                             last_wscale (bits 8-11) | last_flags (bits 12-19) | retrans (bits 20-27)
export const TCP_LAST_SEQ = 1;
export const TCP_LAST_ACK = 2;
export const TCP_LAST_END = 3;
export const TCP_LAST_WIN = 4; // raw 16-bit window of the last recorded segment
export const TCP_DIR = 5; // TCP_DIR + dir * TCP_DIR_WORDS: per-direction window state (uint32 each)
export const TCP_DIR_WORDS = 4;
export const TD_END = 0;
export const TD_MAXEND = 1;
export const TD_MAXWIN = 2;
export const TD_MAXACK = 3;
/** Both directions' td_scale and IP_CT_TCP_FLAG_* flags: direction d in bits 16*d .. 16*d+15,
 *  td_scale in the low byte, flags in the high byte of that half. */
export const TCP_SCALE_FLAGS = TCP_DIR + 2 * TCP_DIR_WORDS; // 13, the last of PRIV_WORDS

// UDP private word.
export const UDP_STREAM_TS = 0; // table-clock ms after which a replied flow counts as a stream

// SCTP private words (E_PRIV + ...). Protected like TCP's by the original tuple's bucket lock
// (core.ts takes it around sctpPacket); a fresh, unconfirmed entry is private to its thread.
export const SCTP_STATE = 0; // state (bits 0-3) | SCTP_F_* flags (bits 4-7)
export const SCTP_VTAG = 1; // SCTP_VTAG + dir: the verification tag expected in that direction (uint32)

// GRE private words: the timeouts copied from the sysctls when the entry is created, then only
// read (written once before the entry is published).
export const GRE_TIMEOUT = 0; // seconds, unreplied
export const GRE_STREAM_TIMEOUT = 1; // seconds, once a reply was seen

// ---------------------------------------------------------------------------------------------
// Extensions (ext.ts): rarely used per-connection data in a block allocated on demand from the
// extension slab. An entry's E_EXT holds its block index (0 = none). Which lock protects what:
//  - X_LINK of free blocks, XC_EXT_FREE, XC_EXT_FREE_COUNT: the XC_EXT_LOCK lock word.
//  - E_EXT: a plain store while the entry is private (create), else Atomics.compareExchange
//    0 -> block (attach on demand); cleared by SlotAllocator.free when the slot is freed.
//  - X_FLAGS: Atomics.or (which extensions the block carries).
//  - X_ACCT counters: Atomics.add (low word, then a carry into the high word).
//  - X_TSTAMP: written at create (private) and once at destroy (the killing thread).
//  - X_LABELS: Atomics.or / Atomics.and. X_POLICY: Atomics.store / load. X_HELPER: reserved.
export const X_LINK = 0; // free: next free block (0 = end); in use: the owning slot + 1
export const X_FLAGS = 1; // EXT_* bits
export const X_ACCT = 2; // 8 words: per direction d, X_ACCT + 4*d: packets lo, hi, bytes lo, hi (uint32 each)
export const X_TSTAMP = 10; // start, stop: table clock ms (uint32 wrapping); stop 0 = still alive
export const X_LABELS = 12; // 4 words: connlabel bits 0..127, bit b in word b >> 5
export const X_POLICY = 16; // timeout policy index + 1 (0 = none)
export const X_HELPER = 17; // reserved for a helper id
export const EXT_WORDS = 18;
export const EXT_BYTES = EXT_WORDS * 4;
export const EXT_ACCT = 1;
export const EXT_TSTAMP = 2;
export const EXT_LABELS = 4;
export const EXT_TIMEOUT = 8;
export const EXT_HELPER = 16;

// Extension and event control words (one section, XC_WORDS). Protection as noted per word.
export const XC_EXT_LOCK = 0; // lock word (locks.ts) for the extension free list
export const XC_EXT_FREE = 1; // first free block (0 = none); XC_EXT_LOCK
export const XC_EXT_FREE_COUNT = 2; // XC_EXT_LOCK
export const XC_EXT_FAILED = 3; // allocations that found the slab empty; Atomics.add
export const XC_POLICY_LOCK = 4; // lock word for defining policies and the zone map
export const XC_ZONE_POLICIES = 5; // used zone map slots; Atomics.store under XC_POLICY_LOCK, Atomics.load by creators
export const XC_EV_HEAD = 8; // main ring reservations (31-bit wrapping counter); Atomics.add by producers
export const XC_EV_DHEAD = 9; // DESTROY ring reservations; Atomics.compareExchange by producers
export const XC_EV_SUBS = 10; // subscribers attached; Atomics.add/sub; producers skip all work at 0
export const XC_EV_LOST = 11; // NEW/UPDATE events subscribers lost (overwritten unread); Atomics.add by subscribers
export const XC_EV_PARK_LOCK = 12; // lock word for the parked list
// word 13 is free (it held the old parked-entry list head)
export const XC_EV_PARKED = 14; // DESTROY events parked now (a hint: PTAIL - PHEAD); Atomics.add/sub under XC_EV_PARK_LOCK
export const XC_EV_PARKED_TOTAL = 15; // entries ever parked; Atomics.add
export const XC_EV_EMITTED = 16; // events written (all types); Atomics.add
export const XC_EV_PHEAD = 17; // park queue: next parked record to deliver (counter); XC_EV_PARK_LOCK
export const XC_EV_PTAIL = 18; // park queue: next free parked record (counter); XC_EV_PARK_LOCK
export const XC_EV_OVERRUNS = 19; // subscribers overrun (backlog dropped: stalled, dead or too slow); Atomics.add
export const XC_EV_DROPPED = 20; // DESTROY events dropped for overrun subscribers; Atomics.add
export const XC_EV_TOMBS = 21; // records a recovery published as tombstones (dead producers); Atomics.add
export const XC_EV_PARK_FULL = 22; // DESTROY events that found the park queue full too; Atomics.add
export const XC_SUB = 32; // subscriber records, SUB_WORDS each
export const EV_SUBSCRIBERS = 16;
export const SB_STATE = 0; // SB_FREE, SB_CLAIMED (Atomics.compareExchange), SB_ATTACHED, SB_OVERRUN
export const SB_DTAIL = 1; // next DESTROY record this subscriber reads; Atomics.store by it, Atomics.load by producers
export const SB_BEAT = 2; // heartbeat: wall ms (low 31 bits) of its last poll; Atomics.store by it
export const SB_DROPPED = 3; // DESTROY records dropped for it by overruns; Atomics.add
export const SUB_WORDS = 4;
export const SB_FREE = 0;
export const SB_CLAIMED = 1;
export const SB_ATTACHED = 2;
/** Producers found it stalled or too far behind: its DESTROY backlog is dropped, it no longer
 *  holds the ring up; it re-attaches (counting the drop) when it polls again. */
export const SB_OVERRUN = 3;
export const XC_WORDS = XC_SUB + EV_SUBSCRIBERS * SUB_WORDS;

// Named timeout policies (ext.ts, the kernel's cttimeout): TIMEOUT_POLICIES records of
// POLICY_WORDS, written under XC_POLICY_LOCK and read with Atomics.load. Seconds; 0 = not set.
export const TIMEOUT_POLICIES = 16;
export const P_USED = 0; // 1 once defined
export const P_NAME = 1; // 8 words: the name, UTF-8, NUL-padded (at most 32 bytes)
export const P_TCP = 9; // 16 words, by TCP_CONNTRACK_* state
export const P_UDP = 25; // unreplied UDP / UDP-Lite
export const P_UDP_STREAM = 26;
export const P_ICMP = 27;
export const P_ICMPV6 = 28;
export const P_GENERIC = 29;
export const P_GRE = 30;
export const P_GRE_STREAM = 31;
export const POLICY_WORDS = 32;
/** Zone -> policy map: slots of zone << 8 | (policy + 1); 0 = empty. XC_POLICY_LOCK / Atomics.load. */
export const ZONE_POLICY_SLOTS = 64;

// Event records (ecache.ts): an image of the entry (ENTRY_WORDS) followed by an image of its
// extension block (EXT_WORDS). The entry's link/hash words, meaningless in a copy, carry the
// record header. Written with plain stores between two Atomics.store of REC_SEQ (a seqlock):
// ~seq while being written, seq (31-bit, >= 0) once published.
export const REC_SEQ = 0; // E_NEXT
export const REC_TYPE = 1; // EVENT_* | REC_MARKER
export const REC_NOW = 2; // table clock of the event
export const REC_TAG = 3; // producer's tag (replay: packet index; -1 none)
export const REC_LINK = E_LINK; // main-ring marker: DESTROY ring position; DESTROY record: main-ring seq
export const REC_WHY = E_RETIRE; // DESTROY: the KILL_* reason
export const REC_EXT = ENTRY_WORDS; // the extension image
export const REC_WORDS = ENTRY_WORDS + EXT_WORDS;
export const REC_MARKER = 1 << 8; // main-ring record standing for a DESTROY record
export const REC_TOMB = 1 << 10; // a record published by crash recovery in place of a dead producer's: skip it
/** With REC_TOMB in the main ring: it stood for a NEW/UPDATE now lost, or for the marker of a DESTROY delivered late; readers count it skipped. */
export const REC_TOMB_SKIPPED = 1 << 12;
/** A main-ring record reporting a stalled thread (liveness.ts), no entry image; its words: */
export const REC_STALL = 1 << 11;
export const REC_STALL_KIND = REC_WHY; // STALL_WORKER / STALL_SUBSCRIBER (events.ts)
export const REC_STALL_WHO = REC_LINK; // its worker record id / subscriber record index
export const REC_STALL_SILENT = E_ID; // wall ms since its last heartbeat when found
export const REC_STALL_LIMIT = E_MARK; // the table's stall time (H_STALL_MS) then
/** Parked DESTROY records (ecache.ts): a queue of images, so a parked event holds no entry slot. */
export const PARK_FACTOR = 4; // park queue records per DESTROY-ring record
export const REC_PARKED_AT = REC_SEQ; // park-queue record: wall ms (liveness.ts beatNow) it was parked; unused by the queue otherwise
/** A parked DESTROY waits at most this many stall times (H_STALL_MS): then the subscribers that leave no room are overrun. */
export const PARK_AGE_STALLS = 10;

// ---------------------------------------------------------------------------------------------
// NAT (src/track/nat/). The state of a NAT'd connection lives in its entry, as in the kernel's
// nf_conn since NAT left the extension area: the translated tuple is the reply tuple, the manips
// done are IPS_{SRC,DST}_NAT{,_DONE} in E_STATUS, and the bysource link is E_LINK (above). No
// entry word is added. Shared beside the entries: the rule set (JSON text, read by every thread
// under the H_NAT_SEQ seqlock), bysource bucket heads (slot, -1 empty) and their lock stripes.
export const NAT_RULE_BYTES = 32768; // room for the rule set's text
export const NAT_LOCKS = 64; // bysource lock stripes (the kernel's nf_nat_locks)
export const NAT_RULE_LOCK = NAT_LOCKS; // writers of the rule set
export const NAT_LOCK_COUNT = NAT_LOCKS + 1; // lock words (recovery releases a dead worker's)
// Where the bysource link lives (the bench's placement experiment): NAT_INLINE (E_LINK, the
// default) or NAT_IN_EXT (an extension block per NAT'd connection, link in X_HELPER, as the
// kernel had it before NAT moved into nf_conn). Set while the table is empty; Atomics.load.
export const NAT_PLACEMENT = NAT_LOCK_COUNT;
export const NAT_INLINE = 0;
export const NAT_IN_EXT = 1;
export const NAT_LOCK_WORDS = NAT_LOCK_COUNT + 1;
/** Bysource buckets for a table with `buckets` hash buckets: a quarter, at least NAT_LOCKS. */
export function natBucketsFor(buckets: number): number {
  return Math.max(NAT_LOCKS, buckets >>> 2);
}

export interface LayoutSizes {
  capacity: number;
  buckets: number;
  locks: number;
  maxWorkers: number;
  namespaces: number;
  /** NAT bysource buckets (H_NAT_BUCKETS). Default natBucketsFor(buckets). */
  natBuckets?: number;
  /** Extension blocks (H_EXT_BLOCKS; the slab holds one more: block 0 is never used). Default 0. */
  extBlocks?: number;
  /** Main event ring and DESTROY ring records (H_EVENTS, H_EV_DESTROY). Default 0. */
  eventRecords?: number;
  destroyRecords?: number;
}

export interface Sections {
  sysctl: number;
  stats: number;
  workers: number;
  zones: number;
  ns: number;
  locks: number;
  buckets: number;
  entries: number;
  /** Extension/event control words (XC_*), timeout policies, zone -> policy map. */
  xctl: number;
  policies: number;
  zonePolicies: number;
  /** Extension slab (block b at ext + b * EXT_WORDS), main event ring, DESTROY ring. */
  ext: number;
  events: number;
  destroys: number;
  parked: number;
  /** Zone accounting (ZA_WORDS per zone), namespace list heads, list lock stripes, walker markers. */
  zacct: number;
  nsHeads: number;
  zlocks: number;
  markers: number;
  /** NAT: rule text (NAT_RULE_BYTES), lock stripes (NAT_LOCK_WORDS), bysource heads. */
  natRules: number;
  natLocks: number;
  bysource: number;
  totalWords: number;
}

/** Word offsets of each section for the given sizes. */
export function sections(s: LayoutSizes): Sections {
  let off = HEADER_WORDS;
  const sysctl = off; off += SYSCTL_WORDS;
  const stats = off; off += STAT_WORDS * s.maxWorkers;
  const workers = off; off += WORKER_WORDS * s.maxWorkers;
  const zones = off; off += ZONES;
  const ns = off; off += NS_WORDS * s.namespaces;
  off = (off + 15) & ~15;
  const locks = off; off += s.locks * LOCK_STRIDE;
  // Keep each lock stripe run and the slab on their own cache lines.
  off = (off + 15) & ~15;
  const buckets = off; off += s.buckets;
  off = (off + 15) & ~15;
  const entries = off; off += ENTRY_WORDS * s.capacity;
  // Extensions and events, after everything above so that its offsets do not move.
  const xctl = off; off += XC_WORDS;
  const policies = off; off += POLICY_WORDS * TIMEOUT_POLICIES;
  const zonePolicies = off; off += ZONE_POLICY_SLOTS;
  const ext = off; off += EXT_WORDS * ((s.extBlocks ?? 0) + 1);
  off = (off + 15) & ~15;
  const events = off; off += REC_WORDS * (s.eventRecords ?? 0);
  const destroys = off; off += REC_WORDS * (s.destroyRecords ?? 0);
  const parked = off; off += REC_WORDS * PARK_FACTOR * (s.destroyRecords ?? 0);
  // Zone and namespace accounting and lists (zones.ts), after everything above.
  const zacct = off; off += ZA_WORDS * ZONES;
  const nsHeads = off; off += s.namespaces;
  off = (off + 15) & ~15;
  const zlocks = off; off += ZL_LOCKS;
  const markers = off; off += MARKER_WORDS * s.maxWorkers;
  // NAT (src/track/nat/), after everything above.
  off = (off + 15) & ~15;
  const natRules = off; off += NAT_RULE_BYTES >>> 2;
  const natLocks = off; off += NAT_LOCK_WORDS;
  off = (off + 15) & ~15;
  const bysource = off; off += s.natBuckets ?? natBucketsFor(s.buckets);
  return {
    sysctl, stats, workers, zones, ns, locks, buckets, entries,
    xctl, policies, zonePolicies, ext, events, destroys, parked, zacct, nsHeads, zlocks, markers,
    natRules, natLocks, bysource, totalWords: off,
  };
}

/** Bytes of shared memory per connection: the entry plus its share of the buckets (conntrack and NAT bysource). */
export function bytesPerConnection(capacity: number, buckets: number, natBuckets = natBucketsFor(buckets)): number {
  return ENTRY_BYTES + ((buckets + natBuckets) * 4) / capacity;
}

/** One kind of lock word: `count` words from `base` (word offsets), each a locks.ts lock. */
export interface LockWords {
  name: string;
  base: number;
  count: number;
  /** Words from one lock of the kind to the next. */
  stride: number;
}

/**
 * Every lock word of a table, in one registry: crash recovery releases a dead worker's in all of
 * them, and the invariant check requires all of them free at rest. A new lock word goes here.
 */
export function lockRegistry(sec: Sections, locks: number): LockWords[] {
  return [
    { name: 'free-list lock', base: H_FREE_LOCK, count: 1, stride: 1 },
    { name: 'bucket lock', base: sec.locks, count: locks, stride: LOCK_STRIDE },
    { name: 'zone-list lock', base: sec.zlocks, count: ZL_LOCKS, stride: 1 },
    { name: 'extension lock', base: sec.xctl + XC_EXT_LOCK, count: 1, stride: 1 },
    { name: 'timeout-policy lock', base: sec.xctl + XC_POLICY_LOCK, count: 1, stride: 1 },
    { name: 'parked-DESTROY lock', base: sec.xctl + XC_EV_PARK_LOCK, count: 1, stride: 1 },
  ];
}

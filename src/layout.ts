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
export const LAYOUT_VERSION = 1;

// ---------------------------------------------------------------------------------------------
// Header (word offsets from 0).
export const H_MAGIC = 0;
export const H_VERSION = 1;
export const H_CAPACITY = 2; // entry slots in the slab (nf_conntrack_max upper bound)
export const H_BUCKETS = 3; // hash buckets, a power of two
export const H_LOCKS = 4; // lock stripes, a power of two
export const H_MAX_WORKERS = 5; // worker records
export const H_COUNT = 6; // confirmed (hashed) entries; Atomics.add under the bucket locks
export const H_CLOCK = 7; // table clock, ms, uint32 wrapping; written by the driver, read by GC
export const H_EPOCH = 8; // QSBR global epoch; Atomics.add by reclaimers
export const H_KEY0 = 9; // hash secret, 64 bits (2 words), random per table
export const H_KEY1 = 10;
export const H_FREE_LOCK = 11; // lock word protecting H_FREE_HEAD / H_FREE_COUNT and E_LINK of free slots
export const H_FREE_HEAD = 12; // head of the shared free list (-1 = empty)
export const H_FREE_COUNT = 13;
export const H_NEXT_ID = 14; // conntrack id source; Atomics.add
export const H_DISCIPLINE = 15; // DISCIPLINE_*: reclamation scheme of this table
export const H_GC_WAKE = 16; // futex word: GC worker sleeps on it, inserters that hit a full table notify
export const H_GC_CURSOR = 17; // next bucket the GC worker will scan
export const H_GC_STOP = 18; // set to 1 to stop the GC worker
export const H_NS_MAX = 19; // namespace records
export const H_EVENTS = 20; // reserved for the event ring
export const H_MAX_CHAIN = 21; // chain length cap on insert (kernel's MAX_CHAINLEN)
export const H_MAX_CREATED = 22; // nf_conntrack_max the slab was sized for
export const HEADER_WORDS = 32;

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
export const STAT_WORDS = 32;
/** Names in the order of `conntrack -S`, then ours. */
export const STAT_NAMES: readonly string[] = [
  'found', 'invalid', 'insert', 'insert_failed', 'drop', 'early_drop', 'error',
  'search_restart', 'clash_resolve', 'chaintoolong', 'new', 'ignore', 'expired', 'packets',
  'gc_evict', 'soft_recycle', 'grace_periods', 'slots_recycled',
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
export const W_CACHE = 16; // W_CACHE .. W_CACHE + CACHE_SLOTS - 1
export const CACHE_SLOTS = 48;
export const WORKER_WORDS = 64;
export const INTENT_NONE = 0;
export const INTENT_INSERT = 1;
export const INTENT_DELETE = 2;

// ---------------------------------------------------------------------------------------------
// Zone and namespace accounting.
export const ZONES = 65536; // one counter word per 16-bit zone
export const NS_COUNT = 0; // entries charged to the namespace
export const NS_LIMIT = 1; // limit granted by the table owner (0 = none)
export const NS_WORDS = 2;

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
//  - protocol private words: the bucket lock of the original tuple's bucket (TCP);
//    UDP's stream word is written once at creation.
//  - E_LINK, E_RETIRE: owned by whoever owns the slot off-table (allocator or limbo owner).
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
export const E_LINK = 12; // free list / limbo link
export const E_RETIRE = 13; // QSBR epoch when retired
export const E_EXT = 14; // extension area offset (0 = none)
export const E_ID = 15; // conntrack id
export const E_TUPLE = 16; // E_TUPLE + dir * TUPLE_WORDS: the tuple of each direction
export const E_PRIV = 34; // protocol private area, PRIV_WORDS words
export const PRIV_WORDS = 14;
export const ENTRY_WORDS = 48;
export const ENTRY_BYTES = ENTRY_WORDS * 4;

// Status bits, at the kernel's IPS_* positions.
export const IPS_EXPECTED = 1 << 0;
export const IPS_SEEN_REPLY = 1 << 1;
export const IPS_ASSURED = 1 << 2;
export const IPS_CONFIRMED = 1 << 3;
export const IPS_SRC_NAT = 1 << 4;
export const IPS_DST_NAT = 1 << 5;
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

// ---------------------------------------------------------------------------------------------

export interface LayoutSizes {
  capacity: number;
  buckets: number;
  locks: number;
  maxWorkers: number;
  namespaces: number;
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
  const locks = off; off += s.locks;
  // Keep each lock stripe run and the slab on their own cache lines.
  off = (off + 15) & ~15;
  const buckets = off; off += s.buckets;
  off = (off + 15) & ~15;
  const entries = off; off += ENTRY_WORDS * s.capacity;
  return { sysctl, stats, workers, zones, ns, locks, buckets, entries, totalWords: off };
}

/** Bytes of shared memory per connection: the entry plus its share of the buckets. */
export function bytesPerConnection(capacity: number, buckets: number): number {
  return ENTRY_BYTES + (buckets * 4) / capacity;
}

/** Connection events (the kernel's ctnetlink NEW / UPDATE / DESTROY groups). */

/** Event type bit: a new connection was confirmed. */
export const EVENT_NEW = 1;
/** Event type bit: a connection changed (state, status, mark). */
export const EVENT_UPDATE = 2;
/** Event type bit: a connection left the table. */
export const EVENT_DESTROY = 4;
/**
 * Flag beside EVENT_UPDATE (EventSink's `flags`, bits above the type in ring records): the
 * protocol state changed. conntrack -E prints the state of an UPDATE only then.
 */
export const EVENT_F_PROTOINFO = 1 << 9;
/** Every event type (a subscription's default filter). */
export const EVENT_TYPES_ALL = EVENT_NEW | EVENT_UPDATE | EVENT_DESTROY;
/** Stall report kinds (StallEvent.kind): a packet worker or the GC stalled inside a batch / section. */
export const STALL_WORKER = 1;
/** Stall report kinds: an event subscriber stopped polling while it held the DESTROY ring up. */
export const STALL_SUBSCRIBER = 2;
export const EVENT_NAMES: Readonly<Record<number, string>> = { 1: 'NEW', 2: 'UPDATE', 4: 'DESTROY' };

/**
 * Receives events synchronously on the thread that caused them, while the entry's words
 * (at `e`) are intact. `now` is the table clock of the packet that caused it.
 */
export interface EventSink {
  event(type: number, e: number, now: number, flags?: number): void;
}

/**
 * What every command shares: the exit-code rule, error lines, the version banner, the progress
 * bar and the table-full warning.
 *
 * Exit codes, for every command: 0 success, 1 bad data (a missing, unreadable or corrupt input,
 * an output that cannot be written, a failed check), 2 usage (unknown option, bad value, missing
 * argument). Errors are one line on stderr: `conntrack-sab <command>: <file>: <what>`; usage
 * errors add a pointer to `--help`.
 */
import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { CaptureError } from '../input/capture/reader.js';
import type { ConntrackTable } from '../table/table.js';

export const EXIT_OK = 0;
export const EXIT_DATA = 1;
export const EXIT_USAGE = 2;

/** The package version (package.json, two levels above dist/src/cli). */
export const VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

/** conntrack-tools' banner, with our own name and version (`conntrack v1.4.8 (conntrack-tools): ...`). */
export function banner(what: string): string {
  return `conntrack-sab v${VERSION}: ${what}\n`;
}

/** An error the command reports as one line and exits with `code`. */
export class CliError extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

/** Usage error: the message plus the pointer to --help. */
export function usageLine(command: string | null, message: string): string {
  const who = command ? `conntrack-sab ${command}` : 'conntrack-sab';
  return `${who}: ${message}\nTry '${who} --help' for more information.\n`;
}

const ERRNO_TEXT: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ENXIO: 'No such device or address',
  EPERM: 'Operation not permitted',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
};

/** What went wrong with a file, as strerror says it (or the error's message). */
export function fileProblem(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (code && ERRNO_TEXT[code]) return ERRNO_TEXT[code]!;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** `<file>: <what>` for an input that could not be read (I/O error or not a capture): exit 1. */
export function inputError(file: string, e: unknown): CliError {
  if (e instanceof CliError) return e;
  return new CliError(`${file === '-' ? '(stdin)' : file}: ${fileProblem(e)}`, EXIT_DATA);
}

/** True for errors that mean the input is bad (not a bug): I/O errors and capture errors. */
export function isInputError(e: unknown): boolean {
  return e instanceof CaptureError || typeof (e as NodeJS.ErrnoException | null)?.code === 'string';
}

/**
 * A progress bar on stderr, only when stderr is a terminal, shown once a replay has run for a
 * second: packets, packets/s and (when the size is known) percent and ETA.
 */
export class Progress {
  private bar: cliProgress.SingleBar | null = null;
  private readonly t0 = Date.now();
  private readonly enabled: boolean;
  private last = 0;

  constructor(enabled: boolean) {
    this.enabled = enabled && process.stderr.isTTY === true;
  }

  update(done: number, total: number, packets: number): void {
    if (!this.enabled) return;
    const t = Date.now();
    if (t - this.t0 < 1000) return;
    if (t - this.last < 100 && this.bar) return;
    this.last = t;
    const secs = (t - this.t0) / 1000;
    const pps = Math.round(packets / secs);
    const payload = { packets: packets.toLocaleString('en-US'), pps: pps.toLocaleString('en-US') };
    if (!this.bar) {
      const known = total > 0;
      this.bar = new cliProgress.SingleBar({
        format: known
          ? 'replay [{bar}] {percentage}% | {packets} packets | {pps} packets/s | ETA {eta_formatted}'
          : 'replay {packets} packets | {pps} packets/s | {mib} MiB read',
        stream: process.stderr,
        etaBuffer: 50,
        hideCursor: false,
        clearOnComplete: true,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(known ? total : 1, 0, { ...payload, mib: 0 });
    }
    this.bar.update(total > 0 ? Math.min(done, total) : 0, { ...payload, mib: Math.round(done / 1048576) });
  }

  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/**
 * The kernel's rate-limited "nf_conntrack: table full, dropping packet": the first drop is
 * reported at once, later ones at most every 5 s (net_ratelimit's default interval), each
 * line counting the drops it stands for; a summary at the end.
 */
export class TableFullWarning {
  private drops = 0;
  private reported = 0;
  private lastWall = 0;

  constructor(private readonly command: string, private readonly max: number) {}

  /** A packet was dropped (table full); `frame` is its 1-based frame number. */
  drop(frame: number): void {
    this.drops++;
    const t = Date.now();
    if (this.lastWall !== 0 && t - this.lastWall < 5000) return;
    const more = this.drops - this.reported - 1;
    this.lastWall = t;
    this.reported = this.drops;
    process.stderr.write(
      `conntrack-sab ${this.command}: nf_conntrack: table full, dropping packet (frame ${frame}; nf_conntrack_max ${this.max}, raise it with --max)` +
      (more > 0 ? `; ${more} more dropped since the last message\n` : '\n'),
    );
  }

  /** The end-of-replay summary line ('' when nothing was dropped or early-dropped). */
  summary(table: ConntrackTable): string {
    const st = table.stats().total;
    const drop = st['drop'] ?? 0;
    const early = st['early_drop'] ?? 0;
    if (drop === 0 && early === 0) return '';
    return `conntrack-sab ${this.command}: table full (nf_conntrack_max ${this.max}): ${drop} packets dropped, ` +
      `${early} connections early-dropped to make room; raise --max\n`;
  }
}

/** Buffered, synchronous output that survives non-blocking pipes (EAGAIN) and closed readers. */
import { writeSync } from 'node:fs';

const pause = new Int32Array(new SharedArrayBuffer(4));

/** Write all of `data` to `fd`, waiting briefly whenever a non-blocking pipe is full. */
export function writeAllSync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) {
    try {
      off += writeSync(fd, data, off, data.length - off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        Atomics.wait(pause, 0, 0, 1); // the reader is behind: give it a millisecond
        continue;
      }
      if (code === 'EPIPE') return; // the reader went away (e.g. `| head`): drop the rest
      throw e;
    }
  }
}

/** Lines collected and written in 64 KiB chunks. */
export class LineWriter {
  private parts: string[] = [];
  private size = 0;
  constructor(private readonly fd: number) {}
  write(s: string): void {
    this.parts.push(s);
    this.size += s.length;
    if (this.size > 1 << 16) this.flush();
  }
  flush(): void {
    if (this.parts.length) writeAllSync(this.fd, Buffer.from(this.parts.join('')));
    this.parts = [];
    this.size = 0;
  }
}

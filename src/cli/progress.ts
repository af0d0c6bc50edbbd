/**
 * A one-line progress bar on stderr, drawn only when stderr is a terminal, so logs and pipes stay
 * clean. Redrawn at most ten times a second.
 */
export class Progress {
  private done = 0;
  private last = 0;
  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly total: number,
    private readonly label: string,
  ) {}

  static enabled(out: { isTTY?: boolean }, total: number, threshold = 20): boolean {
    return Boolean(out.isTTY) && total >= threshold;
  }

  tick(): void {
    this.done++;
    const now = Date.now();
    if (now - this.last < 100 && this.done < this.total) return;
    this.last = now;
    const width = 30;
    const filled = Math.round((this.done / this.total) * width);
    this.out.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${this.done}/${this.total} ${this.label}`);
  }

  finish(): void {
    this.out.write('\r\x1b[2K');
  }
}

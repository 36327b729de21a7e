/** Keeps the last maxBytes of a stream of chunks. */
export class OutputTail {
  #chunks: Buffer[] = [];
  #size = 0;

  constructor(readonly maxBytes: number) {}

  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    while (this.#chunks.length > 1 && this.#size - this.#chunks[0]!.length >= this.maxBytes) {
      this.#size -= this.#chunks.shift()!.length;
    }
  }

  text(): string {
    const all = Buffer.concat(this.#chunks, this.#size);
    return all.subarray(Math.max(0, all.length - this.maxBytes)).toString('utf8');
  }
}

/**
 * Vectors as stored (docs/adr/0007-knowledge-search.md): unit length, float32 little-endian in a bytea,
 * compared by dot product (= cosine). In memory, each is also kept as its sign bits (one bit per
 * dimension): the Hamming distance between sign sketches orders candidates, and the exact float vectors
 * of the best few are then read back from PostgreSQL to rank them.
 */

/** Unit length as float32 bytes; throws on a zero or non-finite vector (a provider fault). */
export function encodeVector(v: readonly number[]): Buffer {
  let n = 0;
  for (const x of v) n += x * x;
  n = Math.sqrt(n);
  if (!Number.isFinite(n) || n === 0) throw new Error('the embedding is zero or not finite');
  const f = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) f[i] = (v[i] ?? 0) / n;
  return Buffer.from(f.buffer, f.byteOffset, f.byteLength);
}

export function decodeVector(b: Uint8Array): Float32Array {
  // Copy: a Buffer from pg may sit at an offset that is not a multiple of 4.
  const copy = new Uint8Array(b.byteLength);
  copy.set(b);
  return new Float32Array(copy.buffer, 0, Math.floor(b.byteLength / 4));
}

/** Dot product of two unit vectors (their cosine); 0 when the dimensions differ. */
export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) * (b[i] as number);
  return s;
}

/** Sign bits of a vector, 32 dimensions a word. */
export function signSketch(v: Float32Array, out = new Uint32Array(Math.ceil(v.length / 32)), offset = 0): Uint32Array {
  for (let w = 0; w < Math.ceil(v.length / 32); w++) {
    let bits = 0;
    for (let j = 0; j < 32; j++) {
      const x = v[w * 32 + j];
      if (x !== undefined && x > 0) bits |= 1 << j;
    }
    out[offset + w] = bits >>> 0;
  }
  return out;
}

const POP16 = new Uint8Array(65536);
for (let i = 1; i < 65536; i++) POP16[i] = (POP16[i >> 1] as number) + (i & 1);

/** Number of differing bits between sketch `a` and the `words`-long sketch at `offset` of `b`. */
export function hamming(a: Uint32Array, b: Uint32Array, offset: number, words: number): number {
  let d = 0;
  for (let w = 0; w < words; w++) {
    const x = ((a[w] as number) ^ (b[offset + w] as number)) >>> 0;
    d += (POP16[x & 0xffff] as number) + (POP16[x >>> 16] as number);
  }
  return d;
}

/**
 * Vectors as stored (docs/adr/0007-knowledge-search.md): unit length, float32 little-endian in a bytea,
 * compared by dot product (= cosine). In memory, each is also kept as its sign bits (one bit per
 * dimension) and as an int8 code (one byte per dimension and a scale): the Hamming distance between sign
 * sketches picks candidates, their codes re-rank them in memory, and the exact float vectors of only the
 * best few are read back from PostgreSQL to rank them.
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

/** Bytes before the int8 codes in a stored code: the float32 scale (a code times it is the component). */
const CODE_HEADER = 4;

/**
 * A unit vector as a float32 scale and one signed byte a dimension (its largest component maps to ±127):
 * a dot product with it is within about 3e-4 of the exact one at 1,536 dimensions, a quarter of the bytes.
 */
export function quantize(v: Float32Array): Buffer {
  let max = 0;
  for (const x of v) max = Math.max(max, Math.abs(x));
  const scale = max > 0 ? max / 127 : 1;
  const out = Buffer.alloc(CODE_HEADER + v.length);
  out.writeFloatLE(scale, 0);
  for (let i = 0; i < v.length; i++) out.writeInt8(Math.round((v[i] as number) / scale), CODE_HEADER + i);
  return out;
}

/** The scale and codes of a stored code (the codes share the buffer's memory). */
export function decodeCode(b: Uint8Array): { scale: number; codes: Int8Array } {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { scale: view.getFloat32(0, true), codes: new Int8Array(b.buffer, b.byteOffset + CODE_HEADER, b.byteLength - CODE_HEADER) };
}

/** Dot product of a float query with the `dim` codes at `offset` of `codes`, times their scale. */
export function dotCode(q: Float32Array, codes: Int8Array, offset: number, scale: number): number {
  let s = 0;
  for (let i = 0; i < q.length; i++) s += (q[i] as number) * (codes[offset + i] as number);
  return s * scale;
}

// s3rver 3.7 (an S3-compatible test server) ships JavaScript without type declarations.
declare module 's3rver' {
  import type { AddressInfo } from 'node:net';
  interface S3rverOptions {
    port?: number;
    address?: string;
    silent?: boolean;
    directory: string;
    configureBuckets?: { name: string; configs: string[] }[];
  }
  export default class S3rver {
    constructor(opts: S3rverOptions);
    run(): Promise<AddressInfo>;
    close(): Promise<void>;
  }
}

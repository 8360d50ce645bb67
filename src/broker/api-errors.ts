import type { ServerResponse } from 'node:http';

export type ApiFormat = 'openai' | 'anthropic';

const OPENAI_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'invalid_request_error',
  429: 'rate_limit_error',
};
const ANTHROPIC_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  529: 'overloaded_error',
};

/**
 * Answers in the caller's own API error shape, so OpenClaw surfaces the message to the user as it
 * would a provider's (issue 5: budget refusals "with the provider's own error shape").
 */
export function sendApiError(res: ServerResponse, format: ApiFormat, status: number, code: string, message: string, retryAfterSeconds?: number): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body =
    format === 'anthropic'
      ? { type: 'error', error: { type: ANTHROPIC_TYPES[status] ?? 'api_error', message: `[clawplane] ${message}` } }
      : { error: { message: `[clawplane] ${message}`, type: OPENAI_TYPES[status] ?? 'server_error', code, param: null } };
  const text = JSON.stringify(body);
  const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), 'x-clawplane-error': code };
  if (retryAfterSeconds !== undefined) headers['retry-after'] = String(Math.ceil(retryAfterSeconds));
  res.writeHead(status, headers);
  res.end(text);
}

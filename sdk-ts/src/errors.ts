// What can go wrong, as one error type: the server's stable error code (a WebSocket error frame,
// an RFC 9457 problem document or an OAuth error), plus the client-side conditions the SDK adds.

import type { ErrorCode } from "./protocol.js";

/**
 * A stable code: one of the server's `ErrorCode`s, an OAuth error (`invalid_grant`), or one the
 * SDK raises itself (`disconnected`, `timeout`, `network`, `signed_out`).
 */
export type TidingsErrorCode = ErrorCode | "invalid_grant" | "disconnected" | "timeout" | "network" | "signed_out";

export class TidingsError extends Error {
  readonly code: TidingsErrorCode | string;
  /** The HTTP status for REST failures. */
  readonly status?: number;
  /** With `rate_limited`: how long to wait before trying again. */
  readonly retryAfterMs?: number;

  constructor(code: TidingsErrorCode | string, message: string, status?: number, retryAfterMs?: number) {
    super(message);
    this.name = "TidingsError";
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }

  /**
   * Whether trying the same request again later may succeed. Sends keep their `client_msg_id`
   * across retries, so retrying a send the server already stored is harmless.
   */
  get retryable(): boolean {
    return ["unavailable", "internal", "disconnected", "timeout", "network", "rate_limited", "slow_consumer", "token_expired"].includes(
      this.code,
    );
  }
}

/**
 * The password was right, but the account uses two-factor sign-in: complete the sign-in with
 * `TidingsClient.completeSecondFactor(error.mfaToken, code)` (a TOTP or recovery code) within
 * `expiresIn` seconds.
 */
export class SecondFactorRequired extends TidingsError {
  constructor(
    readonly mfaToken: string,
    readonly expiresIn: number,
    readonly username: string,
  ) {
    super("second_factor_required", "this account needs a code from its authenticator app", 401);
    this.name = "SecondFactorRequired";
  }
}

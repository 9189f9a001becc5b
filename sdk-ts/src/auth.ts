// Tokens: registration, the password grant, refresh with rotation and sign-out
// (docs/protocol.md section 2). Refreshes are serialized, across browser tabs too (Web Locks),
// because presenting a spent refresh token signs the whole device out.

import { SecondFactorRequired, TidingsError } from "./errors.js";
import type {
  Account,
  OidcProvider,
  OidcProviderList,
  SecondFactorRequired as SecondFactorChallenge,
  TokenResponse,
} from "./protocol.js";
import { problemOf, type Fetch, type TokenSource } from "./rest.js";
import type { KeyValueStorage } from "./storage.js";

export interface StoredTokens {
  access_token: string;
  refresh_token: string;
  /** When the access token expires, ms since the epoch (client clock). */
  expires_at: number;
  /** The token's lifetime in ms, to refresh at 80% of it. */
  lifetime_ms: number;
  user_id: number;
  device_id: number;
  username: string;
}

type LockManager = { request<T>(name: string, cb: () => Promise<T>): Promise<T> };

export class Auth implements TokenSource {
  private refreshing: Promise<void> | null = null;
  private listeners = new Set<(t: StoredTokens | null) => void>();

  constructor(
    private readonly baseUrl: string,
    private readonly storage: KeyValueStorage,
    private readonly fetchImpl: Fetch,
    private readonly key = "tidings.tokens",
  ) {}

  get tokens(): StoredTokens | null {
    const raw = this.storage.get(this.key);
    if (!raw) return null;
    try {
      return JSON.parse(raw) as StoredTokens;
    } catch {
      return null;
    }
  }

  /** Called with the new tokens after every sign-in and refresh, and with null on sign-out. */
  onChange(fn: (t: StoredTokens | null) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private save(t: StoredTokens | null): void {
    if (t) this.storage.set(this.key, JSON.stringify(t));
    else this.storage.remove(this.key);
    for (const fn of this.listeners) fn(t);
  }

  private async tokenRequest(form: Record<string, string>): Promise<TokenResponse> {
    let res: Response;
    try {
      res = await this.fetchImpl(this.baseUrl.replace(/\/$/, "") + "/oauth/token", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(form).toString(),
      });
    } catch (e) {
      throw new TidingsError("network", `network error: ${(e as Error).message}`);
    }
    if (!res.ok) throw await problemOf(res);
    return (await res.json()) as TokenResponse;
  }

  private store(r: TokenResponse, username: string): StoredTokens {
    const t: StoredTokens = {
      access_token: r.access_token,
      // Every sign-in this SDK makes (password, refresh) returns one; only bots go without.
      refresh_token: r.refresh_token ?? "",
      expires_at: Date.now() + r.expires_in * 1000,
      lifetime_ms: r.expires_in * 1000,
      user_id: r.user_id,
      device_id: r.device_id,
      username,
    };
    this.save(t);
    return t;
  }

  async register(username: string, password: string, invite_code?: string): Promise<Account> {
    const res = await this.fetchImpl(this.baseUrl.replace(/\/$/, "") + "/api/v1/accounts", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(invite_code ? { username, password, invite_code } : { username, password }),
    }).catch((e: Error) => {
      throw new TidingsError("network", `network error: ${e.message}`);
    });
    if (!res.ok) throw await problemOf(res);
    return (await res.json()) as Account;
  }

  /**
   * The password grant: a new device. For an account with two-factor sign-in the server answers
   * `mfa_required` instead of tokens; this throws `SecondFactorRequired` carrying the challenge
   * for `completeSecondFactor`.
   */
  async signIn(username: string, password: string, deviceName?: string): Promise<StoredTokens> {
    const form: Record<string, string> = { grant_type: "password", username, password };
    if (deviceName) form.device_name = deviceName;
    let res: Response;
    try {
      res = await this.fetchImpl(this.baseUrl.replace(/\/$/, "") + "/oauth/token", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(form).toString(),
      });
    } catch (e) {
      throw new TidingsError("network", `network error: ${(e as Error).message}`);
    }
    if (res.status === 401) {
      const body = (await res.clone().json().catch(() => ({}))) as Partial<SecondFactorChallenge>;
      if (body.error === "mfa_required" && body.mfa_token) {
        throw new SecondFactorRequired(body.mfa_token, body.expires_in ?? 0, username.toLowerCase());
      }
    }
    if (!res.ok) throw await problemOf(res);
    return this.store((await res.json()) as TokenResponse, username.toLowerCase());
  }

  /** The second step of a two-factor sign-in: the challenge and a TOTP or recovery code. */
  async completeSecondFactor(challenge: SecondFactorRequired, code: string, deviceName?: string): Promise<StoredTokens> {
    const body: Record<string, string> = { mfa_token: challenge.mfaToken, code };
    if (deviceName) body.device_name = deviceName;
    let res: Response;
    try {
      res = await this.fetchImpl(this.baseUrl.replace(/\/$/, "") + "/api/v1/sign-in/second-factor", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (e) {
      throw new TidingsError("network", `network error: ${(e as Error).message}`);
    }
    if (!res.ok) throw await problemOf(res);
    return this.store((await res.json()) as TokenResponse, challenge.username);
  }

  /**
   * Single sign-on: trades the one-time code that the server's OpenID Connect callback put in
   * the page's URL fragment (`#oidc_code=...`) for tokens of a new device.
   */
  async signInWithOidcCode(code: string): Promise<StoredTokens> {
    const base = this.baseUrl.replace(/\/$/, "");
    const network = (e: Error): never => {
      throw new TidingsError("network", `network error: ${e.message}`);
    };
    const res = await this.fetchImpl(base + "/api/v1/oidc/exchange", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ code }),
    }).catch(network);
    if (!res.ok) throw await problemOf(res);
    const tokens = (await res.json()) as TokenResponse;
    // The token response does not name the account; the stored tokens do.
    const me = await this.fetchImpl(base + "/api/v1/account", {
      headers: { authorization: `Bearer ${tokens.access_token}` },
    }).catch(network);
    if (!me.ok) throw await problemOf(me);
    const account = (await me.json()) as Account;
    return this.store(tokens, account.username);
  }

  /** The OpenID Connect providers the server offers for sign-in (none when it cannot say). */
  async oidcProviders(): Promise<OidcProvider[]> {
    try {
      const res = await this.fetchImpl(this.baseUrl.replace(/\/$/, "") + "/api/v1/oidc/providers");
      if (!res.ok) return [];
      return ((await res.json()) as OidcProviderList).providers;
    } catch {
      return [];
    }
  }

  /** Revokes the refresh token (which signs the device out) and forgets the tokens. */
  async signOut(): Promise<void> {
    const t = this.tokens;
    this.save(null);
    if (!t) return;
    try {
      await this.fetchImpl(this.baseUrl.replace(/\/$/, "") + "/oauth/revoke", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token: t.refresh_token, token_type_hint: "refresh_token" }).toString(),
      });
    } catch {
      // Offline: the tokens are forgotten locally; the device stays listed until removed.
    }
  }

  /** Forgets the tokens without telling the server (the server already signed us out). */
  forget(): void {
    this.save(null);
  }

  /** Whether the access token is past 80% of its lifetime. */
  private stale(t: StoredTokens): boolean {
    return Date.now() >= t.expires_at - t.lifetime_ms * 0.2;
  }

  async accessToken(): Promise<string> {
    const t = this.tokens;
    if (!t) throw new TidingsError("signed_out", "not signed in");
    if (this.stale(t)) {
      await this.refresh(t.refresh_token);
      const fresh = this.tokens;
      if (!fresh) throw new TidingsError("signed_out", "not signed in");
      return fresh.access_token;
    }
    return t.access_token;
  }

  /**
   * Exchanges the refresh token for a new pair. `seen` is the refresh token the caller found
   * stale: if another tab or call already rotated it, there is nothing to do.
   */
  refresh(seen?: string): Promise<void> {
    if (this.refreshing) return this.refreshing;
    const run = async () => {
      const t = this.tokens;
      if (!t) throw new TidingsError("signed_out", "not signed in");
      if (seen && t.refresh_token !== seen && !this.stale(t)) return;
      try {
        const r = await this.tokenRequest({ grant_type: "refresh_token", refresh_token: t.refresh_token });
        this.store(r, t.username);
      } catch (e) {
        if (e instanceof TidingsError && e.code === "invalid_grant") {
          // The device is gone (signed out elsewhere, or the token was reused): sign in again.
          this.save(null);
          throw new TidingsError("signed_out", e.message);
        }
        throw e;
      }
    };
    const locks = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
    this.refreshing = (locks ? locks.request(`${this.key}.refresh`, () => run()) : run()).finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }
}

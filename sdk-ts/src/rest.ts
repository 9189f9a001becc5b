// The REST API (docs/protocol.md section 14) as typed calls. Every authenticated call asks the
// `Auth` for a fresh access token first and retries once after a refresh when the server says
// the token expired, so a long-lived page never sees an expiry.

import { TidingsError } from "./errors.js";
import type {
  Account,
  RecoveryCodes,
  TwoFactorEnrolment,
  TwoFactorStatus,
  ConversationSettings,
  ReactionList,
  UpdateConversationSettingsRequest,
  AddMembersResult,
  BlockList,
  Conversation,
  ConversationList,
  DeviceList,
  FileLink,
  FriendList,
  FriendRequestList,
  FriendRequestResult,
  GroupInfo,
  HistoryPage,
  InviteLink,
  JoinGroupResult,
  Member,
  MessageBody,
  MessageReaders,
  PrivacySettings,
  PushSettings,
  PushSubscription,
  PushSubscriptionList,
  VapidKey,
  Problem,
  Profile,
  Role,
  SearchResults,
  SendAck,
  UpdateGroupRequest,
  UserSearchResults, IceServers, OidcLinkStart } from "./protocol.js";

export type Fetch = typeof fetch;

export interface TokenSource {
  /** A valid access token, refreshed when close to expiry. */
  accessToken(): Promise<string>;
  /** Forces a refresh (after the server said the token expired). */
  refresh(): Promise<void>;
}

export async function problemOf(res: Response): Promise<TidingsError> {
  let body: Partial<Problem> & { error?: string; error_description?: string } = {};
  try {
    body = await res.json();
  } catch {
    // A body that is not JSON still gets a clear error below.
  }
  const code = body.code ?? body.error ?? (res.status === 401 ? "unauthenticated" : "internal");
  const message = body.detail ?? body.error_description ?? `HTTP ${res.status}`;
  return new TidingsError(code, message, res.status, body.retry_after_ms ?? undefined);
}

export class Rest {
  constructor(
    readonly baseUrl: string,
    private readonly tokens: TokenSource,
    private readonly fetchImpl: Fetch,
  ) {}

  url(path: string): string {
    return this.baseUrl.replace(/\/$/, "") + path;
  }

  /** An authenticated request; JSON in and out, problem documents turned into errors. */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    if (res.status === 204 || res.headers.get("content-length") === "0") return undefined as T;
    return (await res.json()) as T;
  }

  /** Like `request` but returns the response (downloads). */
  async raw(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.tokens.accessToken();
      const h: Record<string, string> = { authorization: `Bearer ${token}`, ...headers };
      if (body !== undefined) h["content-type"] = "application/json";
      let res: Response;
      try {
        res = await this.fetchImpl(this.url(path), {
          method,
          headers: h,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        throw new TidingsError("network", `network error: ${(e as Error).message}`);
      }
      if (res.ok) return res;
      const err = await problemOf(res);
      if (attempt === 0 && res.status === 401 && err.code === "token_expired") {
        await this.tokens.refresh();
        continue;
      }
      throw err;
    }
  }

  account = () => this.request<Account>("GET", "/api/v1/account");
  profile = (userId?: number) => this.request<Profile>("GET", userId ? `/api/v1/users/${userId}` : "/api/v1/profile");
  updateProfile = (p: { display_name?: string; status_text?: string }) => this.request<Profile>("PATCH", "/api/v1/profile", p);
  searchUsers = (q: string, limit = 20) =>
    this.request<UserSearchResults>("GET", `/api/v1/users?q=${encodeURIComponent(q)}&limit=${limit}`);
  devices = () => this.request<DeviceList>("GET", "/api/v1/devices");
  /** Starts linking an identity of OpenID Connect provider `id` to this account: send the browser to `authorize_url`. */
  oidcLink = (id: string) => this.request<OidcLinkStart>("POST", `/api/v1/oidc/providers/${encodeURIComponent(id)}/link`);
  signOutDevice = (deviceId: number) => this.request<void>("DELETE", `/api/v1/devices/${deviceId}`);
  changePassword = (current_password: string, new_password: string) =>
    this.request<void>("POST", "/api/v1/account/password", { current_password, new_password });
  // Account security (docs/accounts.md).
  twoFactor = () => this.request<TwoFactorStatus>("GET", "/api/v1/account/two-factor");
  beginTwoFactor = (password: string) => this.request<TwoFactorEnrolment>("POST", "/api/v1/account/two-factor", { password });
  confirmTwoFactor = (code: string) => this.request<RecoveryCodes>("POST", "/api/v1/account/two-factor/confirm", { code });
  regenerateRecoveryCodes = (code: string) => this.request<RecoveryCodes>("POST", "/api/v1/account/two-factor/recovery-codes", { code });
  disableTwoFactor = (password: string, code: string) => this.request<void>("POST", "/api/v1/account/two-factor/disable", { password, code });
  deleteAccount = (password: string, code?: string) => this.request<void>("DELETE", "/api/v1/account", code ? { password, code } : { password });
  /** The account export: one JSON document, as a Blob to save. */
  exportAccount = async (): Promise<Blob> => (await this.raw("GET", "/api/v1/account/export")).blob();
  privacy = () => this.request<PrivacySettings>("GET", "/api/v1/privacy");
  updatePrivacy = (p: Partial<PrivacySettings>) => this.request<PrivacySettings>("PATCH", "/api/v1/privacy", p);

  // Push notifications (docs/push.md).
  vapidKey = () => this.request<VapidKey>("GET", "/api/v1/push/vapid");
  setPushSubscription = (s: PushSubscription) => this.request<void>("PUT", "/api/v1/push/subscription", s);
  deletePushSubscription = () => this.request<void>("DELETE", "/api/v1/push/subscription");
  pushSubscriptions = () => this.request<PushSubscriptionList>("GET", "/api/v1/push/subscriptions");
  pushSettings = () => this.request<PushSettings>("GET", "/api/v1/push/settings");
  setPushSettings = (s: PushSettings) => this.request<PushSettings>("PUT", "/api/v1/push/settings", s);

  /** STUN/TURN servers for `RTCPeerConnection` (TURN credentials expire at `expires_at`). */
  iceServers = () => this.request<IceServers>("GET", "/api/v1/rtc/ice-servers");
  blocks = () => this.request<BlockList>("GET", "/api/v1/blocks");
  block = (userId: number) => this.request<void>("PUT", `/api/v1/blocks/${userId}`);
  unblock = (userId: number) => this.request<void>("DELETE", `/api/v1/blocks/${userId}`);
  friends = () => this.request<FriendList>("GET", "/api/v1/friends");
  removeFriend = (userId: number) => this.request<void>("DELETE", `/api/v1/friends/${userId}`);
  friendRequests = () => this.request<FriendRequestList>("GET", "/api/v1/friend-requests");
  sendFriendRequest = (user_id: number, note?: string) =>
    this.request<FriendRequestResult>("POST", "/api/v1/friend-requests", note ? { user_id, note } : { user_id });
  acceptFriendRequest = (userId: number) => this.request<void>("POST", `/api/v1/friend-requests/${userId}/accept`);
  declineFriendRequest = (userId: number) => this.request<void>("POST", `/api/v1/friend-requests/${userId}/decline`);
  cancelFriendRequest = (userId: number) => this.request<void>("DELETE", `/api/v1/friend-requests/${userId}`);

  conversations = () => this.request<ConversationList>("GET", "/api/v1/conversations");
  conversation = (id: number) => this.request<Conversation>("GET", `/api/v1/conversations/${id}`);
  openDirect = (user_id: number) => this.request<Conversation>("POST", "/api/v1/conversations/direct", { user_id });
  createGroup = (title: string, members: number[]) =>
    this.request<Conversation>("POST", "/api/v1/conversations", { title, members });
  history = (id: number, before?: number, limit = 50) =>
    this.request<HistoryPage>("GET", `/api/v1/conversations/${id}/messages?limit=${limit}${before ? `&before=${before}` : ""}`);
  sendRest = (id: number, client_msg_id: string, body: MessageBody) =>
    this.request<SendAck>("POST", `/api/v1/conversations/${id}/messages`, { client_msg_id, body });
  readers = (id: number, seq: number) => this.request<MessageReaders>("GET", `/api/v1/conversations/${id}/messages/${seq}/readers`);
  search = (q: string, conversationId?: number) =>
    this.request<SearchResults>("GET", `/api/v1/search?q=${encodeURIComponent(q)}${conversationId ? `&conversation_id=${conversationId}` : ""}`);

  updateConversationSettings = (id: number, patch: UpdateConversationSettingsRequest) =>
    this.request<ConversationSettings>("PATCH", `/api/v1/conversations/${id}/settings`, patch);
  reactions = (id: number, seq: number) => this.request<ReactionList>("GET", `/api/v1/conversations/${id}/messages/${seq}/reactions`);
  pins = (id: number) => this.request<{ messages: import("./protocol.js").Message[] }>("GET", `/api/v1/conversations/${id}/pins`);
  members = (id: number) => this.request<Member[]>("GET", `/api/v1/conversations/${id}/members`);
  addMembers = (id: number, members: number[]) =>
    this.request<AddMembersResult>("POST", `/api/v1/conversations/${id}/members`, { members });
  removeMember = (id: number, userId: number) => this.request<void>("DELETE", `/api/v1/conversations/${id}/members/${userId}`);
  groupInfo = (id: number) => this.request<GroupInfo>("GET", `/api/v1/conversations/${id}/group`);
  updateGroup = (id: number, p: UpdateGroupRequest) => this.request<GroupInfo>("PATCH", `/api/v1/conversations/${id}/group`, p);
  setRole = (id: number, userId: number, role: Role) =>
    this.request<void>("PUT", `/api/v1/conversations/${id}/members/${userId}/role`, { role });
  mute = (id: number, userId: number, duration_secs = 3600) =>
    this.request<void>("PUT", `/api/v1/conversations/${id}/members/${userId}/mute`, { duration_secs });
  unmute = (id: number, userId: number) => this.request<void>("DELETE", `/api/v1/conversations/${id}/members/${userId}/mute`);
  ban = (id: number, userId: number) => this.request<void>("PUT", `/api/v1/conversations/${id}/bans/${userId}`, {});
  deleteMessage = (id: number, seq: number) => this.request<void>("DELETE", `/api/v1/conversations/${id}/messages/${seq}`);
  createInviteLink = (id: number) => this.request<InviteLink>("POST", `/api/v1/conversations/${id}/invite-links`, {});
  joinGroup = (code: string) => this.request<JoinGroupResult>("POST", "/api/v1/groups/join", { code });
  dissolveGroup = (id: number) => this.request<void>("DELETE", `/api/v1/conversations/${id}`);

  fileLink = (fileId: string) => this.request<FileLink>("POST", `/api/v1/files/${fileId}/link`);
  download = async (fileId: string): Promise<Blob> => (await this.raw("GET", `/api/v1/files/${fileId}`)).blob();
}

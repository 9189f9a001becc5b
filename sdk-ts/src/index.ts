// The public surface of @tidings/sdk.

export { TidingsClient } from "./client";
export type { ClientOptions, ConnectionStatus, ConversationState, Contacts } from "./client";
export { Auth } from "./auth";
export type { StoredTokens } from "./auth";
export { Rest } from "./rest";
export { Connection, SUBPROTOCOL } from "./connection";
export type { WebSocketCtor } from "./connection";
export { TidingsError } from "./errors";
export { MemoryStorage, defaultStorage } from "./storage";
export type { KeyValueStorage } from "./storage";
export { Timeline, backoffDelay, newClientMsgId } from "./timeline";
export type { PendingMessage, PendingState } from "./timeline";
export { upload } from "./upload";
export type { UploadHandle, UploadOptions, UploadSource } from "./upload";
export type * from "./protocol";

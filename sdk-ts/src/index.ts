// The public surface of @tidings/sdk.

export { TidingsClient } from "./client.js";
export type { CallEventInfo, ClientOptions, ConnectionStatus, ConversationState, Contacts, SendOptions } from "./client.js";
export { Auth } from "./auth.js";
export type { StoredTokens } from "./auth.js";
export { Rest } from "./rest.js";
export { Connection, SUBPROTOCOL } from "./connection.js";
export type { WebSocketCtor } from "./connection.js";
export { SecondFactorRequired, TidingsError } from "./errors.js";
export { MemoryStorage, defaultStorage } from "./storage.js";
export type { KeyValueStorage } from "./storage.js";
export { Timeline, backoffDelay, newClientMsgId, isShown, ACTING_KINDS } from "./timeline.js";
export type { PendingMessage, PendingState } from "./timeline.js";
export { upload } from "./upload.js";
export { encryptFile, decryptFile, FileCryptoError, FILE_SCHEME, FILE_CHUNK_BYTES } from "./e2eFile.js";
export type { UploadHandle, UploadOptions, UploadSource } from "./upload.js";
export type * from "./protocol.js";

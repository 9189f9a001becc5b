// One WebSocket connection speaking `tidings.v1`: requests carry ids and are matched with their
// answers (which may come in any order, docs/protocol.md section 4.1); everything else is an
// event handed to `onEvent`. It knows nothing of reconnecting: `TidingsClient` owns that.

import { TidingsError } from "./errors.js";
import type { ClientFrame, ServerFrame } from "./protocol.js";

export const SUBPROTOCOL = "tidings.v1";

/** The WebSocket constructor to use (browsers and Node 22 have one; Node 20 needs a flag or `ws`). */
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocket;

/** A client frame without its request id; the connection assigns one. */
export type Request = ClientFrame extends infer F ? (F extends { id?: unknown } ? Omit<F, "id"> : F) : never;

interface Waiter {
  resolve: (f: ServerFrame) => void;
  reject: (e: TidingsError) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class Connection {
  private nextId = 1;
  private readonly waiting = new Map<string, Waiter>();
  private closed = false;
  onEvent: (frame: ServerFrame) => void = () => {};
  onClose: (code: number, reason: string) => void = () => {};

  private constructor(
    private readonly ws: WebSocket,
    private readonly timeoutMs: number,
  ) {
    ws.onmessage = (ev: MessageEvent) => {
      if (typeof ev.data !== "string") return;
      let frame: ServerFrame;
      try {
        frame = JSON.parse(ev.data) as ServerFrame;
      } catch {
        return;
      }
      const id = (frame as { id?: string }).id;
      const waiter = id !== undefined ? this.waiting.get(id) : undefined;
      if (waiter && id !== undefined) {
        this.waiting.delete(id);
        clearTimeout(waiter.timer);
        if (frame.type === "error") {
          waiter.reject(new TidingsError(frame.code, frame.message, undefined, frame.retry_after_ms ?? undefined));
        } else {
          waiter.resolve(frame);
        }
        // A sync's events come before its `sync_done`, so they were all handed out already.
        return;
      }
      this.onEvent(frame);
    };
    ws.onclose = (ev: CloseEvent) => this.finish(ev.code, ev.reason);
    ws.onerror = () => {
      // The close event that follows carries the code; nothing to add here.
    };
  }

  /** Opens the socket and checks that the server speaks `tidings.v1`. */
  static open(url: string, WS: WebSocketCtor, timeoutMs = 15000): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let ws: WebSocket;
      try {
        ws = new WS(url, SUBPROTOCOL);
      } catch (e) {
        reject(new TidingsError("network", (e as Error).message));
        return;
      }
      const timer = setTimeout(() => {
        ws.close();
        reject(new TidingsError("timeout", "connecting timed out"));
      }, timeoutMs);
      ws.onopen = () => {
        clearTimeout(timer);
        if (ws.protocol && ws.protocol !== SUBPROTOCOL) {
          ws.close(1000);
          reject(new TidingsError("version_unsupported", `server speaks ${ws.protocol}, not ${SUBPROTOCOL}`));
          return;
        }
        resolve(new Connection(ws, timeoutMs));
      };
      ws.onerror = () => undefined;
      ws.onclose = (ev: CloseEvent) => {
        clearTimeout(timer);
        reject(new TidingsError("network", `connection failed (${ev.code})`));
      };
    });
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Sends a request and resolves with its answer (or rejects with the error frame). */
  request<T extends ServerFrame = ServerFrame>(frame: Request, timeoutMs = this.timeoutMs): Promise<T> {
    if (this.closed) return Promise.reject(new TidingsError("disconnected", "connection closed"));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new TidingsError("timeout", `no answer to ${frame.type} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve: resolve as (f: ServerFrame) => void, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Sends a frame that gets no answer (`typing` without an id). */
  notify(frame: Request): void {
    if (!this.closed) this.ws.send(JSON.stringify(frame));
  }

  close(code = 1000, reason = ""): void {
    if (this.closed) return;
    try {
      this.ws.close(code, reason);
    } catch {
      // Already closing.
    }
    this.finish(code, reason || "closed by client");
  }

  private finish(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const [, w] of this.waiting) {
      clearTimeout(w.timer);
      w.reject(new TidingsError("disconnected", `connection closed (${code})`));
    }
    this.waiting.clear();
    this.onClose(code, reason);
  }
}

// Where the SDK keeps what must survive a reload: the tokens and the unsent messages. Browsers get
// `localStorage`; Node and tests get a map in memory (or their own implementation).

export interface KeyValueStorage {
  get(key: string): string | null;
  set(key: string, value: string): void;
  remove(key: string): void;
}

export class MemoryStorage implements KeyValueStorage {
  private readonly map = new Map<string, string>();
  get(key: string): string | null {
    return this.map.get(key) ?? null;
  }
  set(key: string, value: string): void {
    this.map.set(key, value);
  }
  remove(key: string): void {
    this.map.delete(key);
  }
}

/** `localStorage` when the platform has one, otherwise memory. */
export function defaultStorage(): KeyValueStorage {
  const ls = (globalThis as { localStorage?: Storage }).localStorage;
  if (!ls) return new MemoryStorage();
  return {
    get: (k) => ls.getItem(k),
    set: (k, v) => ls.setItem(k, v),
    remove: (k) => ls.removeItem(k),
  };
}

// The one SDK client of the page, and the hooks that re-render components when it changes.

import { useEffect, useState, useSyncExternalStore } from "react";
import { TidingsClient } from "@tidings/sdk";
import { callsFor, type CallController } from "./call";

function deviceName(): string {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? "Edge" : /Chrom(e|ium)\//.test(ua) ? "Chrome" : /Firefox\//.test(ua) ? "Firefox" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return `Web · ${browser}${os ? ` · ${os}` : ""}`;
}

export const client = new TidingsClient({ baseUrl: location.origin, deviceName: deviceName() });
client.start();
window.addEventListener("online", () => client.reconnectNow());
// Exposed for debugging from the console and for the browser tests.
(window as unknown as { tidings: TidingsClient }).tidings = client;
// The call controller too, so the browser tests can read the connection's statistics.
(window as unknown as { tidingsCalls: CallController }).tidingsCalls = callsFor(client);

/** Re-renders the calling component whenever the client's state changes. */
export function useClient(): TidingsClient {
  useSyncExternalStore(
    (fn) => client.subscribe(fn),
    () => client.version,
  );
  return client;
}

export type Theme = "system" | "light" | "dark";

export function useTheme(): [Theme, (t: Theme) => void] {
  const [theme, setTheme] = useState<Theme>(() => (localStorage.getItem("tidings.theme") as Theme | null) ?? "system");
  useEffect(() => {
    const apply = () => {
      const dark = theme === "dark" || (theme === "system" && matchMedia("(prefers-color-scheme: dark)").matches);
      document.documentElement.dataset.theme = dark ? "dark" : "light";
      document.querySelector('meta[name="theme-color"]')?.setAttribute("content", dark ? "#111827" : "#4f46e5");
    };
    apply();
    const mq = matchMedia("(prefers-color-scheme: dark)");
    mq.addEventListener("change", apply);
    return () => mq.removeEventListener("change", apply);
  }, [theme]);
  return [
    theme,
    (t) => {
      localStorage.setItem("tidings.theme", t);
      setTheme(t);
    },
  ];
}

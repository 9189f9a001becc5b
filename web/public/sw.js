// The service worker: an offline shell. Navigations go to the network first and fall back to the
// cached page; hashed assets (which never change) are served from the cache once fetched. The API,
// the WebSocket and files are never cached.
const CACHE = "tidings-shell-v1";
const SHELL = ["/", "/manifest.webmanifest", "/icon.svg", "/icon-192.png"];

// The page's hashed bundles are named in index.html; cache them with the shell at install, so
// the first offline start works even though the first visit fetched them before this worker ran.
async function precache() {
  const cache = await caches.open(CACHE);
  await cache.addAll(SHELL);
  const page = await (await cache.match("/")).text();
  const assets = [...new Set(page.match(/\/assets\/[^"']+/g) || [])];
  await cache.addAll(assets);
}

self.addEventListener("install", (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin) return;
  if (/^\/(api|oauth|ws|\.well-known|healthz|readyz|metrics)(\/|$)/.test(url.pathname)) return;
  if (req.mode === "navigate") {
    event.respondWith(
      fetch(req)
        .then((res) => {
          const copy = res.clone();
          caches.open(CACHE).then((c) => c.put("/", copy));
          return res;
        })
        .catch(() => caches.match("/").then((r) => r || Response.error())),
    );
    return;
  }
  if (url.pathname.startsWith("/assets/") || SHELL.includes(url.pathname)) {
    event.respondWith(
      caches.match(req).then(
        (hit) =>
          hit ||
          fetch(req).then((res) => {
            if (res.ok) {
              const copy = res.clone();
              caches.open(CACHE).then((c) => c.put(req, copy));
            }
            return res;
          }),
      ),
    );
  }
});

// Push notifications (docs/push.md). The payload is the server's `PushPayload` JSON; in privacy
// mode it has no sender and no preview. One notification per conversation (its tag), replaced by
// the newest push with the conversation's unread count.
function notificationOf(p) {
  const kind = p.kind || "message";
  let title = p.title ? `${p.sender || ""} · ${p.title}` : p.sender || "Tidings";
  let body = p.preview || "";
  if (kind === "friend_request") body = body || "Friend request";
  else if (kind === "call") body = body || "Incoming call";
  else if (!p.sender) {
    title = "Tidings";
    body = p.count > 1 ? `${p.count} new messages` : "New message";
  } else if (p.count > 1) body = `${body} (+${p.count - 1})`;
  const tag = p.conversation_id != null ? `conv-${p.conversation_id}` : `tidings-${kind}`;
  return {
    title,
    options: {
      body,
      tag,
      renotify: kind === "mention" || kind === "call",
      icon: "/icon-192.png",
      badge: "/icon-192.png",
      timestamp: p.ts,
      data: { conversation_id: p.conversation_id ?? null, kind },
    },
  };
}

self.addEventListener("push", (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    payload = {};
  }
  const { title, options } = notificationOf(payload);
  const work = [self.registration.showNotification(title, options)];
  if (typeof payload.badge === "number" && self.navigator.setAppBadge) {
    work.push(self.navigator.setAppBadge(payload.badge).catch(() => {}));
  }
  event.waitUntil(Promise.all(work));
});

// A click focuses an open window and tells it which conversation to show, or opens one at
// `/#c=<id>`, which the app reads at start.
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const id = event.notification.data && event.notification.data.conversation_id;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      const open = windows.find((w) => new URL(w.url).origin === self.location.origin);
      if (open) {
        if (id != null) open.postMessage({ type: "open-conversation", conversation_id: id });
        return open.focus();
      }
      return self.clients.openWindow(id != null ? `/#c=${id}` : "/");
    }),
  );
});

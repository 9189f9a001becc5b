// Push notification settings: subscribing this device with the server's VAPID key, privacy mode
// and do-not-disturb hours (kept in the browser's time zone). The rules are the server's
// (docs/push.md); this only edits them.

import { useEffect, useState } from "react";
import type { PushSettings } from "@tidings/sdk";
import { useClient } from "../state";
import { useI18n } from "../i18n";

function keyBytes(base64url: string): Uint8Array {
  const b64 = base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4);
  return Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
}

const toTime = (minute: number) => `${String(Math.floor(minute / 60)).padStart(2, "0")}:${String(minute % 60).padStart(2, "0")}`;
const toMinute = (time: string) => {
  const [h, m] = time.split(":").map(Number);
  return (h || 0) * 60 + (m || 0);
};

export function PushSettingsCard() {
  const c = useClient();
  const { t } = useI18n();
  const supported = typeof navigator !== "undefined" && "serviceWorker" in navigator && typeof PushManager !== "undefined";
  const [subscribed, setSubscribed] = useState(false);
  const [settings, setSettings] = useState<PushSettings | null>(null);

  useEffect(() => {
    c.rest.pushSettings().then(setSettings, () => undefined);
    if (supported) {
      navigator.serviceWorker.ready
        .then((r) => r.pushManager.getSubscription())
        .then((s) => setSubscribed(!!s), () => undefined);
    }
  }, []);

  const save = (next: PushSettings) => void c.rest.setPushSettings(next).then(setSettings, () => undefined);

  const subscribe = async () => {
    const { public_key } = await c.rest.vapidKey();
    const reg = await navigator.serviceWorker.ready;
    const sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(public_key) });
    const json = sub.toJSON();
    await c.rest.setPushSubscription({ provider: "web_push", endpoint: sub.endpoint, p256dh: json.keys?.p256dh ?? "", auth: json.keys?.auth ?? "" });
    setSubscribed(true);
  };
  const unsubscribe = async () => {
    const sub = await (await navigator.serviceWorker.ready).pushManager.getSubscription();
    await sub?.unsubscribe();
    await c.rest.deletePushSubscription().catch(() => undefined);
    setSubscribed(false);
  };

  const dnd = settings?.dnd ?? null;
  return (
    <div className="push-settings" data-testid="push-settings">
      {!supported ? (
        <p className="small muted">{t("settings.push.unavailable")}</p>
      ) : subscribed ? (
        <p className="small">
          {t("settings.push.on")}{" "}
          <button className="ghost small" onClick={() => void unsubscribe()}>
            {t("settings.push.off")}
          </button>
        </p>
      ) : (
        <button className="ghost" onClick={() => void subscribe().catch(() => undefined)} data-testid="push-enable">
          {t("settings.push.enable")}
        </button>
      )}
      {settings && (
        <>
          <label className="check">
            <input type="checkbox" checked={!!settings.privacy} onChange={(e) => save({ ...settings, privacy: e.target.checked })} data-testid="push-privacy" />
            <span>{t("settings.push.privacy")}</span>
          </label>
          <label className="check">
            <input
              type="checkbox"
              checked={!!dnd}
              onChange={(e) =>
                save({
                  ...settings,
                  dnd: e.target.checked ? { start: 22 * 60, end: 7 * 60 } : undefined,
                  time_zone: Intl.DateTimeFormat().resolvedOptions().timeZone,
                })
              }
              data-testid="push-dnd"
            />
            <span>{t("settings.push.dnd")}</span>
          </label>
          {dnd && (
            <span className="inline">
              <label>
                {t("settings.push.dndFrom")}{" "}
                <input type="time" value={toTime(dnd.start)} onChange={(e) => save({ ...settings, dnd: { ...dnd, start: toMinute(e.target.value) } })} />
              </label>
              <label>
                {t("settings.push.dndTo")}{" "}
                <input type="time" value={toTime(dnd.end)} onChange={(e) => save({ ...settings, dnd: { ...dnd, end: toMinute(e.target.value) } })} />
              </label>
            </span>
          )}
        </>
      )}
    </div>
  );
}

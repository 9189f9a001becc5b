// Settings: profile, language, theme, notifications, the device list, account security
// (two-factor sign-in, password, export, deletion) and signing out.

import { useEffect, useState } from "react";
import type { Device, OidcProvider, Profile } from "@tidings/sdk";
import { useClient, type Theme } from "../state";
import { LANGS, useI18n } from "../i18n";
import { dayLabel, timeOf } from "../util";
import { PushSettingsCard } from "./PushSettings";
import { AccountDataCard, PasswordCard, TwoFactorCard } from "./AccountSecurity";

export function SettingsPanel({ theme, setTheme }: { theme: Theme; setTheme: (t: Theme) => void }) {
  const c = useClient();
  const { t, lang, setLang } = useI18n();
  const [devices, setDevices] = useState<Device[]>([]);
  const [profile, setProfile] = useState<Profile | null>(null);
  const [displayName, setDisplayName] = useState("");
  const [providers, setProviders] = useState<OidcProvider[]>([]);
  // What the single sign-on callback reported when it brought the browser back ("#oidc_linked=<id>").
  const [linkOutcome] = useState(() => {
    const hash = new URLSearchParams(window.location.hash.slice(1));
    const linked = hash.get("oidc_linked");
    const failed = hash.get("oidc_error");
    if (linked || failed) history.replaceState(null, "", window.location.pathname + window.location.search);
    return linked ? t("settings.oidcLinked") : failed === "conflict" ? t("settings.oidcConflict") : failed ? t("auth.oidcFailed") : null;
  });
  const [permission, setPermission] = useState(typeof Notification === "undefined" ? "denied" : Notification.permission);

  const loadDevices = () => c.rest.devices().then((d) => setDevices(d.devices), () => undefined);
  useEffect(() => {
    void c.auth.oidcProviders().then(setProviders);
    void loadDevices();
    c.rest.profile().then((p) => {
      setProfile(p);
      setDisplayName(p.display_name);
    }, () => undefined);
  }, []);

  return (
    <section className="panel" aria-label={t("settings.title")}>
      <header className="panel-head">
        <h2>{t("settings.title")}</h2>
      </header>
      <div className="scroll settings">
        <section className="card">
          <h3>{t("settings.profile")}</h3>
          <p className="muted small">
            {t("settings.account")}: <strong>{c.me?.username}</strong>
          </p>
          <label className="field">
            <span>{t("settings.displayName")}</span>
            <span className="inline">
              <input value={displayName} maxLength={64} onChange={(e) => setDisplayName(e.target.value)} />
              <button className="ghost" disabled={!profile || displayName === profile.display_name} onClick={() => void c.rest.updateProfile({ display_name: displayName }).then(setProfile)}>
                {t("group.save")}
              </button>
            </span>
          </label>
        </section>
        {(providers.length > 0 || linkOutcome) && (
          <section className="card">
            <h3>{t("auth.oidcGroup")}</h3>
            {linkOutcome && (
              <p className="muted small" role="status" data-testid="oidc-link-outcome">
                {linkOutcome}
              </p>
            )}
            <p className="muted small">{t("settings.oidcHint")}</p>
            {providers.map((p) => (
              <button
                key={p.id}
                className="ghost"
                data-testid={`oidc-link-${p.id}`}
                onClick={() => void c.rest.oidcLink(p.id).then((r) => window.location.assign(r.authorize_url))}
              >
                {t("settings.oidcLink").replace("{name}", p.display_name)}
              </button>
            ))}
          </section>
        )}
        <section className="card">
          <h3 id="lang-h">{t("settings.language")}</h3>
          <div className="segmented" role="radiogroup" aria-labelledby="lang-h">
            {LANGS.map((l) => (
              <button key={l.id} role="radio" aria-checked={lang === l.id} className={lang === l.id ? "active" : ""} onClick={() => setLang(l.id)} data-testid={`lang-${l.id}`}>
                {l.label}
              </button>
            ))}
          </div>
        </section>
        <section className="card">
          <h3 id="theme-h">{t("settings.theme")}</h3>
          <div className="segmented" role="radiogroup" aria-labelledby="theme-h">
            {(["system", "light", "dark"] as const).map((x) => (
              <button key={x} role="radio" aria-checked={theme === x} className={theme === x ? "active" : ""} onClick={() => setTheme(x)} data-testid={`theme-${x}`}>
                {t(`settings.theme.${x}`)}
              </button>
            ))}
          </div>
        </section>
        <section className="card">
          <h3>{t("settings.notifications")}</h3>
          {permission === "granted" ? (
            <p className="small">{t("settings.notifications.on")}</p>
          ) : permission === "denied" ? (
            <p className="small muted">{t("settings.notifications.denied")}</p>
          ) : (
            <button className="ghost" onClick={() => void Notification.requestPermission().then(setPermission)}>
              {t("settings.notifications.enable")}
            </button>
          )}
          {permission === "granted" && <PushSettingsCard />}
        </section>
        <section className="card">
          <h3>{t("settings.devices")}</h3>
          <ul className="devices" role="list" data-testid="devices">
            {devices.map((d) => (
              <li key={d.device_id} className="device">
                <span className="person-text">
                  <span className="person-name">
                    {d.name} {d.current && <span className="pill">{t("settings.thisDevice")}</span>}
                  </span>
                  <span className="small muted">{t("settings.lastActive", { time: `${dayLabel(d.last_active_at, lang, t)} ${timeOf(d.last_active_at, lang)}` })}</span>
                </span>
                {!d.current && (
                  <button className="ghost small danger" onClick={() => void c.rest.signOutDevice(d.device_id).then(loadDevices)}>
                    {t("settings.signOutDevice")}
                  </button>
                )}
              </li>
            ))}
          </ul>
        </section>
        <TwoFactorCard />
        <PasswordCard />
        <AccountDataCard />
        <button className="danger wide" onClick={() => void c.signOut()} data-testid="sign-out">
          {t("settings.signOut")}
        </button>
      </div>
    </section>
  );
}

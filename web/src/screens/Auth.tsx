// Sign in and registration.

import { useEffect, useState, type FormEvent } from "react";
import { SecondFactorRequired, TidingsError, type OidcProvider } from "@tidings/sdk";
import { client } from "../state";
import { LANGS, useI18n } from "../i18n";

export function AuthScreen() {
  const { t, lang, setLang } = useI18n();
  const [mode, setMode] = useState<"signin" | "register">("signin");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  // Set when the password was right and the account wants a second factor.
  const [challenge, setChallenge] = useState<SecondFactorRequired | null>(null);
  const [code, setCode] = useState("");
  const [providers, setProviders] = useState<OidcProvider[]>([]);

  useEffect(() => {
    void client.auth.oidcProviders().then(setProviders);
    // The single sign-on callback comes back to "/#oidc_code=..." or "/#oidc_error=...".
    const hash = new URLSearchParams(window.location.hash.slice(1));
    const code = hash.get("oidc_code");
    const failure = hash.get("oidc_error");
    if (!code && !failure) return;
    history.replaceState(null, "", window.location.pathname + window.location.search);
    if (failure) {
      setError(failure === "unlinked" ? t("auth.oidcUnlinked") : t("auth.oidcFailed"));
      return;
    }
    setBusy(true);
    client
      .signInWithOidcCode(code!)
      .catch((err: unknown) => setError(err instanceof TidingsError ? err.message : String(err)))
      .finally(() => setBusy(false));
    // Once, on arrival: the fragment is read and cleared.
  }, []);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (challenge) await client.completeSecondFactor(challenge, code.trim());
      else if (mode === "register") await client.register(username.trim(), password);
      else await client.signIn(username.trim(), password);
    } catch (err) {
      if (err instanceof SecondFactorRequired) {
        setChallenge(err);
        setCode("");
      } else if (err instanceof TidingsError && err.code === "invalid_credentials" && challenge) {
        setError(t("auth.codeWrong"));
      } else {
        setError(err instanceof TidingsError ? err.message : String(err));
      }
    } finally {
      setBusy(false);
    }
  };

  if (challenge) {
    return (
      <div className="auth">
        <div className="auth-card">
          <div className="auth-brand">
            <img src="/icon.svg" alt="" width={56} height={56} />
            <h1>{t("app.name")}</h1>
          </div>
          <form onSubmit={submit} aria-label={t("auth.secondFactor")}>
            <p className="small">{t("auth.secondFactorHint")}</p>
            <label className="field">
              <span>{t("auth.code")}</span>
              <input name="otp" autoComplete="one-time-code" inputMode="text" autoCapitalize="none" spellCheck={false} required maxLength={20} value={code} onChange={(e) => setCode(e.target.value)} data-testid="auth-code" />
            </label>
            {error && (
              <p className="error" role="alert">
                {error}
              </p>
            )}
            <button className="primary wide" type="submit" disabled={busy} data-testid="auth-code-submit">
              {busy ? t("auth.working") : t("auth.verify")}
            </button>
          </form>
          <button className="link" onClick={() => setChallenge(null)}>
            {t("auth.back")}
          </button>
        </div>
      </div>
    );
  }

  return (
    <div className="auth">
      <div className="auth-card">
        <div className="auth-brand">
          <img src="/icon.svg" alt="" width={56} height={56} />
          <h1>{t("app.name")}</h1>
          <p>{t("app.tagline")}</p>
        </div>
        <form onSubmit={submit} aria-label={mode === "register" ? t("auth.register") : t("auth.signIn")}>
          <label className="field">
            <span>{t("auth.username")}</span>
            <input name="username" autoComplete="username" autoCapitalize="none" spellCheck={false} required minLength={3} maxLength={32} value={username} onChange={(e) => setUsername(e.target.value)} />
          </label>
          <label className="field">
            <span>{t("auth.password")}</span>
            <input
              name="password"
              type="password"
              autoComplete={mode === "register" ? "new-password" : "current-password"}
              required
              minLength={mode === "register" ? 10 : 1}
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
            {mode === "register" && <small>{t("auth.passwordHint")}</small>}
          </label>
          {error && (
            <p className="error" role="alert">
              {error}
            </p>
          )}
          <button className="primary wide" type="submit" disabled={busy} data-testid="auth-submit">
            {busy ? t("auth.working") : mode === "register" ? t("auth.register") : t("auth.signIn")}
          </button>
        </form>
        {mode === "signin" && providers.length > 0 && (
          <div className="auth-sso" role="group" aria-label={t("auth.oidcGroup")}>
            {providers.map((p) => (
              <a key={p.id} className="wide" href={client.oidcStartUrl(p.id)} data-testid={`oidc-${p.id}`}>
                {t("auth.oidcSignIn").replace("{name}", p.display_name)}
              </a>
            ))}
          </div>
        )}
        <button className="link" onClick={() => setMode(mode === "register" ? "signin" : "register")} data-testid="auth-toggle">
          {mode === "register" ? t("auth.haveAccount") : t("auth.needAccount")}
        </button>
        <div className="auth-lang" role="group" aria-label={t("settings.language")}>
          {LANGS.map((l) => (
            <button key={l.id} className={`chip ${lang === l.id ? "active" : ""}`} aria-pressed={lang === l.id} onClick={() => setLang(l.id)}>
              {l.label}
            </button>
          ))}
        </div>
      </div>
    </div>
  );
}

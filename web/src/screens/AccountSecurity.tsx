// Account settings that guard the account itself: two-factor sign-in (enrol with the secret and
// its otpauth URI, recovery codes shown once), password change, data export and deletion
// (docs/accounts.md).

import { useEffect, useState, type FormEvent } from "react";
import { TidingsError, type TwoFactorEnrolment, type TwoFactorStatus } from "@tidings/sdk";
import { useClient } from "../state";
import { useI18n } from "../i18n";

function messageOf(err: unknown): string {
  return err instanceof TidingsError ? err.message : String(err);
}

export function TwoFactorCard() {
  const c = useClient();
  const { t } = useI18n();
  const [status, setStatus] = useState<TwoFactorStatus | null>(null);
  const [enrolment, setEnrolment] = useState<TwoFactorEnrolment | null>(null);
  const [codes, setCodes] = useState<string[] | null>(null);
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = () => c.rest.twoFactor().then(setStatus, () => undefined);
  useEffect(() => {
    void load();
  }, []);

  const run = async (e: FormEvent, step: () => Promise<void>) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await step();
      setPassword("");
      setCode("");
      await load();
    } catch (err) {
      setError(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  const begin = (e: FormEvent) =>
    run(e, async () => {
      setCodes(null);
      setEnrolment(await c.rest.beginTwoFactor(password));
    });
  const confirm = (e: FormEvent) =>
    run(e, async () => {
      setCodes((await c.rest.confirmTwoFactor(code.trim())).codes);
      setEnrolment(null);
    });
  const regenerate = (e: FormEvent) =>
    run(e, async () => {
      setCodes((await c.rest.regenerateRecoveryCodes(code.trim())).codes);
    });
  const disable = (e: FormEvent) =>
    run(e, async () => {
      await c.rest.disableTwoFactor(password, code.trim());
      setCodes(null);
    });

  return (
    <section className="card" data-testid="two-factor">
      <h3>{t("security.twoFactor")}</h3>
      <p className="small muted">{t("security.twoFactorHint")}</p>
      {codes && (
        <div className="recovery" data-testid="recovery-codes">
          <p className="small">{t("security.recoveryCodesOnce")}</p>
          <ul className="codes">
            {codes.map((x) => (
              <li key={x}>
                <code>{x}</code>
              </li>
            ))}
          </ul>
        </div>
      )}
      {status?.enabled ? (
        <>
          <p className="small" data-testid="two-factor-on">
            {t("security.twoFactorOn", { n: status.recovery_codes_left })}
          </p>
          <form onSubmit={disable} className="stack">
            <label className="field">
              <span>{t("security.password")}</span>
              <input type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} />
            </label>
            <label className="field">
              <span>{t("security.code")}</span>
              <input autoComplete="one-time-code" value={code} onChange={(e) => setCode(e.target.value)} maxLength={20} />
            </label>
            <span className="inline">
              <button className="ghost" type="button" disabled={busy || !code} onClick={(e) => void regenerate(e)}>
                {t("security.newRecoveryCodes")}
              </button>
              <button className="ghost danger" type="submit" disabled={busy || !password || !code}>
                {t("security.disable")}
              </button>
            </span>
          </form>
        </>
      ) : enrolment ? (
        <form onSubmit={confirm} className="stack">
          <p className="small">{t("security.scan")}</p>
          <label className="field">
            <span>{t("security.secret")}</span>
            <code className="secret" data-testid="totp-secret">
              {enrolment.secret}
            </code>
          </label>
          <label className="field">
            <span>{t("security.uri")}</span>
            <code className="secret small" data-testid="totp-uri">
              {enrolment.otpauth_uri}
            </code>
          </label>
          <label className="field">
            <span>{t("security.code")}</span>
            <input autoComplete="one-time-code" inputMode="numeric" value={code} onChange={(e) => setCode(e.target.value)} maxLength={6} data-testid="totp-confirm-code" />
          </label>
          <button className="primary" type="submit" disabled={busy || code.trim().length !== 6} data-testid="totp-confirm">
            {t("security.confirm")}
          </button>
        </form>
      ) : (
        <form onSubmit={begin} className="stack">
          <label className="field">
            <span>{t("security.password")}</span>
            <input type="password" autoComplete="current-password" value={password} onChange={(e) => setPassword(e.target.value)} data-testid="totp-password" />
          </label>
          <button className="ghost" type="submit" disabled={busy || !password} data-testid="totp-begin">
            {t("security.enable")}
          </button>
        </form>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

export function PasswordCard() {
  const c = useClient();
  const { t } = useI18n();
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [note, setNote] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setNote(null);
    try {
      await c.rest.changePassword(current, next);
      setCurrent("");
      setNext("");
      setNote(t("security.passwordChanged"));
    } catch (err) {
      setNote(messageOf(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="card">
      <h3>{t("security.changePassword")}</h3>
      <form onSubmit={submit} className="stack">
        <label className="field">
          <span>{t("security.currentPassword")}</span>
          <input type="password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.target.value)} />
        </label>
        <label className="field">
          <span>{t("security.newPassword")}</span>
          <input type="password" autoComplete="new-password" required minLength={10} value={next} onChange={(e) => setNext(e.target.value)} />
          <small>{t("security.otherDevicesSignedOut")}</small>
        </label>
        <button className="ghost" type="submit" disabled={busy}>
          {t("security.changePassword")}
        </button>
      </form>
      {note && (
        <p className="small" role="status">
          {note}
        </p>
      )}
    </section>
  );
}

export function AccountDataCard() {
  const c = useClient();
  const { t } = useI18n();
  const [password, setPassword] = useState("");
  const [code, setCode] = useState("");
  const [confirming, setConfirming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const download = async () => {
    setError(null);
    try {
      const blob = await c.rest.exportAccount();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = `tidings-export-${c.me?.username ?? "account"}.json`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      setError(messageOf(err));
    }
  };

  const remove = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await c.deleteAccount(password, code.trim() || undefined);
    } catch (err) {
      setError(messageOf(err));
      setBusy(false);
    }
  };

  return (
    <section className="card">
      <h3>{t("security.data")}</h3>
      <p className="small muted">{t("security.exportHint")}</p>
      <button className="ghost" onClick={() => void download()} data-testid="export-account">
        {t("security.export")}
      </button>
      <h3>{t("security.delete")}</h3>
      <p className="small muted">{t("security.deleteHint")}</p>
      {confirming ? (
        <form onSubmit={remove} className="stack">
          <label className="field">
            <span>{t("security.password")}</span>
            <input type="password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.target.value)} />
          </label>
          <label className="field">
            <span>{t("security.codeIfEnabled")}</span>
            <input autoComplete="one-time-code" value={code} onChange={(e) => setCode(e.target.value)} maxLength={20} />
          </label>
          <button className="danger" type="submit" disabled={busy || !password}>
            {t("security.deleteForGood")}
          </button>
        </form>
      ) : (
        <button className="ghost danger" onClick={() => setConfirming(true)}>
          {t("security.delete")}
        </button>
      )}
      {error && (
        <p className="error" role="alert">
          {error}
        </p>
      )}
    </section>
  );
}

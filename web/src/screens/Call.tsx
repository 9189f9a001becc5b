// The call overlay: the incoming-call screen (accept, decline), the outgoing screen while it
// rings, and the in-call view (remote video full size, our own picture-in-picture, controls
// for mute, camera, devices, data saver and hang-up, the duration and a quality indicator).

import { useEffect, useRef, useState } from "react";
import { client, useClient } from "../state";
import { callsFor, useCall, type CallQuality } from "../call";
import { useI18n, type Key } from "../i18n";
import { Avatar } from "../ui/Avatar";
import { Icon } from "../ui/Icon";

function Video({ stream, muted, className, testId }: { stream?: MediaStream; muted: boolean; className: string; testId: string }) {
  const ref = useRef<HTMLVideoElement>(null);
  useEffect(() => {
    if (ref.current && ref.current.srcObject !== (stream ?? null)) ref.current.srcObject = stream ?? null;
  }, [stream, stream?.getTracks().length]);
  return <video ref={ref} className={className} autoPlay playsInline muted={muted} data-testid={testId} />;
}

function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const two = (n: number) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m % 60)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

/** good / fair / poor from round-trip time and loss. */
export function qualityLevel(q: CallQuality): "good" | "fair" | "poor" | "unknown" {
  if (q.rttMs === undefined && q.loss === undefined) return "unknown";
  const rtt = q.rttMs ?? 0;
  const loss = q.loss ?? 0;
  if (rtt > 400 || loss > 0.08) return "poor";
  if (rtt > 150 || loss > 0.02) return "fair";
  return "good";
}

export function CallOverlay() {
  const c = useClient();
  const calls = callsFor(client);
  const call = useCall(calls);
  const { t } = useI18n();
  const [now, setNow] = useState(Date.now());
  const [devices, setDevices] = useState<MediaDeviceInfo[]>([]);
  const [showDevices, setShowDevices] = useState(false);

  useEffect(() => {
    if (call.phase !== "active") return;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [call.phase]);

  useEffect(() => {
    if (!showDevices) return;
    void navigator.mediaDevices.enumerateDevices().then(setDevices).catch(() => setDevices([]));
  }, [showDevices]);

  if (call.phase === "idle") return null;
  const peerName = (call.peerId !== undefined && [...c.conversations.values()].find((s) => s.conversation.peer?.user_id === call.peerId)?.conversation.peer?.username) || t("call.someone");
  const level = qualityLevel(call.quality);

  let status: string;
  if (call.phase === "incoming") status = call.video ? t("call.incomingVideo") : t("call.incomingAudio");
  else if (call.phase === "outgoing") status = call.ringing ? t("call.ringing") : t("call.calling");
  else if (call.phase === "connecting") status = t("call.connecting");
  else if (call.phase === "active") status = duration(now - (call.startedAt ?? now));
  else status = t(`call.end.${call.endReason ?? "hangup"}` as Key);

  return (
    <div className={`call-overlay ${call.video ? "video" : "audio"}`} role="dialog" aria-modal="true" aria-label={t("call.title", { name: peerName })} data-testid="call-overlay" data-phase={call.phase}>
      {call.video && <Video stream={call.remote} muted={false} className="call-remote" testId="call-remote" />}
      {!call.video && <audio ref={(el) => el && el.srcObject !== (call.remote ?? null) && (el.srcObject = call.remote ?? null)} autoPlay />}
      {call.video && call.local && <Video stream={call.local} muted className="call-local" testId="call-local" />}
      <div className="call-info">
        {(!call.video || call.phase !== "active") && <Avatar name={peerName} seed={call.peerId ?? 0} size={96} />}
        <h2>{peerName}</h2>
        <p data-testid="call-status" aria-live="polite">
          {status}
        </p>
        {call.phase === "active" && (
          <p className={`call-quality ${level}`} data-testid="call-quality" title={t("call.qualityDetail", { rtt: Math.round(call.quality.rttMs ?? 0), loss: ((call.quality.loss ?? 0) * 100).toFixed(1), kbps: Math.round((call.quality.bitrate ?? 0) / 1000) })}>
            {t(`call.quality.${level}` as Key)}
          </p>
        )}
      </div>
      <div className="call-controls">
        {call.phase === "incoming" ? (
          <>
            <button className="call-btn decline" onClick={() => void calls.decline()} aria-label={t("call.decline")} data-testid="call-decline">
              <Icon name="phoneOff" size={26} />
            </button>
            <button className="call-btn accept" onClick={() => void calls.accept()} aria-label={t("call.accept")} data-testid="call-accept">
              <Icon name="phone" size={26} />
            </button>
          </>
        ) : call.phase !== "ended" ? (
          <>
            <button className={`call-btn ${call.muted ? "on" : ""}`} onClick={() => calls.toggleMute()} aria-pressed={call.muted} aria-label={call.muted ? t("call.unmute") : t("call.mute")} data-testid="call-mute">
              <Icon name={call.muted ? "micOff" : "mic"} size={24} />
            </button>
            <button className={`call-btn ${call.cameraOff || !call.video ? "on" : ""}`} onClick={() => void calls.toggleCamera()} aria-pressed={call.cameraOff || !call.video} aria-label={call.cameraOff || !call.video ? t("call.cameraOn") : t("call.cameraOff")} data-testid="call-camera">
              <Icon name={call.cameraOff || !call.video ? "videoOff" : "video"} size={24} />
            </button>
            <button className={`call-btn ${showDevices ? "on" : ""}`} onClick={() => setShowDevices(!showDevices)} aria-expanded={showDevices} aria-label={t("call.devices")} data-testid="call-devices">
              <Icon name="settings" size={24} />
            </button>
            <button className="call-btn decline" onClick={() => void calls.hangup()} aria-label={t("call.hangup")} data-testid="call-hangup">
              <Icon name="phoneOff" size={26} />
            </button>
          </>
        ) : null}
      </div>
      {showDevices && call.phase !== "ended" && call.phase !== "incoming" && (
        <div className="call-devices">
          {(["audioinput", "videoinput"] as const).map((kind) => (
            <label key={kind}>
              {kind === "audioinput" ? t("call.microphone") : t("call.camera")}
              <select onChange={(e) => void calls.useDevice(kind, e.target.value)} defaultValue="">
                <option value="" disabled>
                  {t("call.pickDevice")}
                </option>
                {devices
                  .filter((d) => d.kind === kind)
                  .map((d, i) => (
                    <option key={d.deviceId || i} value={d.deviceId}>
                      {d.label || `${kind === "audioinput" ? t("call.microphone") : t("call.camera")} ${i + 1}`}
                    </option>
                  ))}
              </select>
            </label>
          ))}
          <label className="check">
            <input type="checkbox" checked={call.dataSaver} onChange={(e) => void calls.setDataSaver(e.target.checked)} data-testid="call-data-saver" />
            {t("call.dataSaver")}
          </label>
        </div>
      )}
    </div>
  );
}

/** The call buttons of a direct conversation's header. */
export function CallButtons({ conversationId, peerId }: { conversationId: number; peerId: number }) {
  const { t } = useI18n();
  const calls = callsFor(client);
  const call = useCall(calls);
  const busy = call.phase !== "idle" && call.phase !== "ended";
  return (
    <>
      <button className="icon-btn" aria-label={t("call.audio")} title={t("call.audio")} disabled={busy} onClick={() => void calls.start(conversationId, peerId, false)} data-testid="call-audio">
        <Icon name="phone" />
      </button>
      <button className="icon-btn" aria-label={t("call.video")} title={t("call.video")} disabled={busy} onClick={() => void calls.start(conversationId, peerId, true)} data-testid="call-video">
        <Icon name="video" />
      </button>
    </>
  );
}

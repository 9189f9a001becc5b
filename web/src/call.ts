// The page's one call: the RTCPeerConnection, the local and remote media, and the signalling
// through the SDK (docs/calls.md). The SDK carries the frames; this file owns WebRTC. Components
// read `calls.state` through `useCall()` and call the methods below.

import { useSyncExternalStore } from "react";
import type { CallEventInfo, IceCandidate, TidingsClient } from "@tidings/sdk";

export type CallPhase = "idle" | "outgoing" | "incoming" | "connecting" | "active" | "ended";
export type EndReason = "hangup" | "remote_hangup" | "declined" | "busy" | "cancelled" | "missed" | "answered_elsewhere" | "failed";

export interface CallQuality {
  /** Round-trip time in ms, from the selected candidate pair. */
  rttMs?: number;
  /** Packets lost as a share of expected packets received (0..1) since the last sample. */
  loss?: number;
  /** Received bits per second since the last sample. */
  bitrate?: number;
}

export interface CallState {
  phase: CallPhase;
  callId?: string;
  conversationId?: number;
  peerId?: number;
  /** Whether the call was placed by this device. */
  outgoing: boolean;
  video: boolean;
  /** The callee's device rings (outgoing calls). */
  ringing: boolean;
  muted: boolean;
  cameraOff: boolean;
  dataSaver: boolean;
  startedAt?: number;
  endReason?: EndReason;
  quality: CallQuality;
  local?: MediaStream;
  remote?: MediaStream;
}

/** The cap data-saver mode puts on the video we send. */
export const DATA_SAVER_BITRATE = 150_000;

const idle = (): CallState => ({
  phase: "idle",
  outgoing: false,
  video: false,
  ringing: false,
  muted: false,
  cameraOff: false,
  dataSaver: localStorage.getItem("tidings.dataSaver") === "1",
  quality: {},
});

/** Orders codecs so `preferred` (by MIME type, lower case) come first, in that order. */
export function preferCodecs<T extends { mimeType: string }>(codecs: T[], preferred: string[]): T[] {
  const rank = (c: T) => {
    const i = preferred.indexOf(c.mimeType.toLowerCase());
    return i < 0 ? preferred.length : i;
  };
  return [...codecs].sort((a, b) => rank(a) - rank(b));
}

export class CallController {
  state: CallState = idle();
  version = 0;
  /** For tests: force relayed (TURN) candidates only. */
  relayOnly = false;
  private pc: RTCPeerConnection | null = null;
  private offer?: string;
  /** Candidates that arrived before the remote description. */
  private remoteIce: RTCIceCandidateInit[] = [];
  /** Our candidates gathered before the call id is known or the call is accepted. */
  private localIce: RTCIceCandidateInit[] = [];
  private canSendIce = false;
  private listeners = new Set<() => void>();
  private statsTimer: ReturnType<typeof setInterval> | null = null;
  private lastStats?: { at: number; bytes: number; lost: number; received: number };
  private ring: { ctx: AudioContext; timer: ReturnType<typeof setInterval> } | null = null;
  private clearTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly client: TidingsClient) {
    client.onCall((e) => void this.onEvent(e));
  }

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private set(patch: Partial<CallState>): void {
    this.state = { ...this.state, ...patch };
    this.version++;
    for (const fn of this.listeners) fn();
  }

  /** The connection, for tests that read its statistics. */
  get peerConnection(): RTCPeerConnection | null {
    return this.pc;
  }

  private async newPeerConnection(): Promise<RTCPeerConnection> {
    const servers = await this.client.rest.iceServers().catch(() => ({ ice_servers: [], expires_at: 0 }));
    const pc = new RTCPeerConnection({
      iceServers: servers.ice_servers.map((s) => ({ urls: s.urls, username: s.username ?? undefined, credential: s.credential ?? undefined })),
      iceTransportPolicy: this.relayOnly ? "relay" : "all",
    });
    pc.onicecandidate = (e) => {
      if (!e.candidate) return;
      const c = e.candidate.toJSON();
      if (this.canSendIce && this.state.callId) this.sendIce(c);
      else this.localIce.push(c);
    };
    pc.ontrack = (e) => {
      const remote = this.state.remote ?? new MediaStream();
      if (!remote.getTracks().includes(e.track)) remote.addTrack(e.track);
      this.set({ remote });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected" && this.state.phase === "connecting") this.set({ phase: "active", startedAt: Date.now() });
      if (pc.connectionState === "failed") void this.hangup("failed");
    };
    this.pc = pc;
    return pc;
  }

  private sendIce(c: RTCIceCandidateInit): void {
    const candidate: IceCandidate = {
      candidate: c.candidate ?? "",
      sdpMid: c.sdpMid ?? undefined,
      sdpMLineIndex: c.sdpMLineIndex ?? undefined,
      usernameFragment: c.usernameFragment ?? undefined,
    };
    if (this.state.callId) this.client.callNotify(this.state.callId, { kind: "ice", candidate });
  }

  private flushLocalIce(): void {
    this.canSendIce = true;
    for (const c of this.localIce.splice(0)) this.sendIce(c);
  }

  private async media(video: boolean): Promise<MediaStream> {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
    this.set({ local: stream });
    return stream;
  }

  /** Opus for audio; H.264 for video when the browser offers it, VP8 otherwise. */
  private preferCodecs(pc: RTCPeerConnection): void {
    for (const t of pc.getTransceivers()) {
      const kind = t.receiver.track?.kind;
      if (kind !== "audio" && kind !== "video") continue;
      const caps = RTCRtpReceiver.getCapabilities(kind);
      if (!caps || typeof t.setCodecPreferences !== "function") continue;
      const order = kind === "audio" ? ["audio/opus"] : ["video/h264", "video/vp8"];
      try {
        t.setCodecPreferences(preferCodecs(caps.codecs, order));
      } catch {
        // A browser that refuses the list keeps its own order.
      }
    }
  }

  /** Calls the peer of a direct conversation. */
  async start(conversationId: number, peerId: number, video: boolean): Promise<void> {
    if (this.state.phase !== "idle" && this.state.phase !== "ended") return;
    this.reset();
    this.set({ ...idle(), phase: "outgoing", outgoing: true, conversationId, peerId, video });
    try {
      const pc = await this.newPeerConnection();
      const stream = await this.media(video);
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
      this.preferCodecs(pc);
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      const { callId, busy } = await this.client.callInvite(conversationId, offer.sdp ?? "", video);
      this.set({ callId });
      if (busy) return this.finish("busy");
      this.flushLocalIce();
      await this.applyDataSaver();
    } catch {
      this.finish("failed");
    }
  }

  /** Takes the ringing call on this device. */
  async accept(): Promise<void> {
    const { callId, phase, video } = this.state;
    if (phase !== "incoming" || !callId || !this.offer) return;
    this.stopRing();
    this.set({ phase: "connecting" });
    try {
      const pc = await this.newPeerConnection();
      await pc.setRemoteDescription({ type: "offer", sdp: this.offer });
      const stream = await this.media(video);
      for (const track of stream.getTracks()) pc.addTrack(track, stream);
      this.preferCodecs(pc);
      await this.addRemoteIce();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      await this.client.callSignal(callId, { kind: "accept", sdp: answer.sdp ?? "" });
      this.flushLocalIce();
      this.startStats();
      await this.applyDataSaver();
    } catch {
      this.finish("failed");
    }
  }

  async decline(): Promise<void> {
    const { callId, phase } = this.state;
    if (phase !== "incoming" || !callId) return;
    await this.client.callSignal(callId, { kind: "decline" }).catch(() => undefined);
    this.finish("declined");
  }

  async hangup(reason: EndReason = "hangup"): Promise<void> {
    const { callId, phase } = this.state;
    if (callId && (phase === "outgoing" || phase === "connecting" || phase === "active")) {
      const signal = phase === "outgoing" ? { kind: "cancel" as const } : { kind: "hangup" as const };
      await this.client.callSignal(callId, signal).catch(() => undefined);
    }
    this.finish(reason);
  }

  toggleMute(): void {
    const muted = !this.state.muted;
    for (const t of this.state.local?.getAudioTracks() ?? []) t.enabled = !muted;
    this.set({ muted });
  }

  /** Turns the camera off or on; a call that started without video adds it and renegotiates. */
  async toggleCamera(): Promise<void> {
    const tracks = this.state.local?.getVideoTracks() ?? [];
    if (tracks.length) {
      const cameraOff = !this.state.cameraOff;
      for (const t of tracks) t.enabled = !cameraOff;
      this.set({ cameraOff });
      return;
    }
    const pc = this.pc;
    const { callId } = this.state;
    if (!pc || !callId || this.state.phase !== "active") return;
    const cam = await navigator.mediaDevices.getUserMedia({ video: true });
    const track = cam.getVideoTracks()[0];
    this.state.local?.addTrack(track);
    pc.addTrack(track, this.state.local ?? cam);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await this.client.callSignal(callId, { kind: "renegotiate", sdp_type: "offer", sdp: offer.sdp ?? "", video: true });
    this.set({ video: true, cameraOff: false, local: this.state.local });
  }

  /** Switches the microphone or camera to another device without renegotiating. */
  async useDevice(kind: "audioinput" | "videoinput", deviceId: string): Promise<void> {
    const pc = this.pc;
    if (!pc) return;
    const stream = await navigator.mediaDevices.getUserMedia(kind === "audioinput" ? { audio: { deviceId: { exact: deviceId } } } : { video: { deviceId: { exact: deviceId } } });
    const track = stream.getTracks()[0];
    const sender = pc.getSenders().find((s) => s.track?.kind === track.kind);
    await sender?.replaceTrack(track);
    const local = this.state.local;
    for (const old of local?.getTracks().filter((t) => t.kind === track.kind) ?? []) {
      old.stop();
      local?.removeTrack(old);
    }
    local?.addTrack(track);
    track.enabled = track.kind === "audio" ? !this.state.muted : !this.state.cameraOff;
    this.set({ local });
  }

  async setDataSaver(on: boolean): Promise<void> {
    localStorage.setItem("tidings.dataSaver", on ? "1" : "0");
    this.set({ dataSaver: on });
    await this.applyDataSaver();
  }

  /** Caps (or uncaps) the bitrate of the video we send; congestion control works below it. */
  private async applyDataSaver(): Promise<void> {
    for (const sender of this.pc?.getSenders() ?? []) {
      if (sender.track?.kind !== "video") continue;
      const params = sender.getParameters();
      if (!params.encodings?.length) params.encodings = [{}];
      for (const e of params.encodings) {
        if (this.state.dataSaver) e.maxBitrate = DATA_SAVER_BITRATE;
        else delete e.maxBitrate;
      }
      await sender.setParameters(params).catch(() => undefined);
    }
  }

  private async addRemoteIce(): Promise<void> {
    for (const c of this.remoteIce.splice(0)) await this.pc?.addIceCandidate(c).catch(() => undefined);
  }

  private async onEvent(e: CallEventInfo): Promise<void> {
    const ev = e.event;
    if (ev.kind === "invite") {
      // Busy here but free on the server (another tab): say so instead of ringing twice.
      if (this.state.phase !== "idle" && this.state.phase !== "ended") {
        await this.client.callSignal(e.callId, { kind: "decline", busy: true }).catch(() => undefined);
        return;
      }
      this.reset();
      this.offer = ev.sdp;
      const conv = [...this.client.conversations.values()].find((c) => c.conversation.id === e.conversationId);
      this.set({ ...idle(), phase: "incoming", callId: e.callId, conversationId: conv?.conversation.id ?? e.conversationId, peerId: e.userId, video: ev.video });
      this.startRing();
      await this.client.callSignal(e.callId, { kind: "ringing" }).catch(() => undefined);
      return;
    }
    if (e.callId !== this.state.callId) return;
    switch (ev.kind) {
      case "ringing":
        this.set({ ringing: true });
        break;
      case "accepted":
        this.set({ phase: "connecting" });
        await this.pc?.setRemoteDescription({ type: "answer", sdp: ev.sdp });
        await this.addRemoteIce();
        this.startStats();
        break;
      case "ice":
        if (this.pc?.remoteDescription) await this.pc.addIceCandidate(ev.candidate).catch(() => undefined);
        else this.remoteIce.push(ev.candidate);
        break;
      case "renegotiate": {
        const pc = this.pc;
        if (!pc) break;
        await pc.setRemoteDescription({ type: ev.sdp_type, sdp: ev.sdp });
        if (ev.sdp_type === "offer") {
          const answer = await pc.createAnswer();
          await pc.setLocalDescription(answer);
          await this.client.callSignal(e.callId, { kind: "renegotiate", sdp_type: "answer", sdp: answer.sdp ?? "" });
        }
        break;
      }
      case "answered_elsewhere":
      case "declined":
      case "busy":
      case "cancelled":
      case "missed":
        this.finish(ev.kind);
        break;
      case "ended":
        this.finish("remote_hangup");
        break;
    }
  }

  private startStats(): void {
    if (this.statsTimer) return;
    this.statsTimer = setInterval(() => void this.sample(), 2000);
  }

  private async sample(): Promise<void> {
    const pc = this.pc;
    if (!pc) return;
    const report = await pc.getStats();
    let rtt: number | undefined;
    let bytes = 0;
    let lost = 0;
    let received = 0;
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && typeof s.currentRoundTripTime === "number") rtt = s.currentRoundTripTime * 1000;
      if (s.type === "inbound-rtp") {
        bytes += s.bytesReceived ?? 0;
        lost += Math.max(0, s.packetsLost ?? 0);
        received += s.packetsReceived ?? 0;
      }
    });
    const now = Date.now();
    const last = this.lastStats;
    const quality: CallQuality = { rttMs: rtt };
    if (last) {
      const dt = (now - last.at) / 1000;
      quality.bitrate = dt > 0 ? ((bytes - last.bytes) * 8) / dt : undefined;
      const expected = received - last.received + (lost - last.lost);
      quality.loss = expected > 0 ? (lost - last.lost) / expected : 0;
    }
    this.lastStats = { at: now, bytes, lost, received };
    this.set({ quality });
  }

  private startRing(): void {
    try {
      const ctx = new AudioContext();
      const beep = () => {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        osc.frequency.value = 440;
        gain.gain.setValueAtTime(0.15, ctx.currentTime);
        gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + 0.8);
        osc.connect(gain).connect(ctx.destination);
        osc.start();
        osc.stop(ctx.currentTime + 0.8);
      };
      beep();
      this.ring = { ctx, timer: setInterval(beep, 2000) };
    } catch {
      // No audio output: the screen still shows the call.
    }
  }

  private stopRing(): void {
    if (!this.ring) return;
    clearInterval(this.ring.timer);
    void this.ring.ctx.close().catch(() => undefined);
    this.ring = null;
  }

  private finish(reason: EndReason): void {
    this.stopRing();
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = null;
    for (const t of this.state.local?.getTracks() ?? []) t.stop();
    this.pc?.close();
    this.pc = null;
    this.set({ phase: "ended", endReason: reason, local: undefined, remote: undefined });
    // The end screen shows briefly, then the call view goes away.
    this.clearTimer = setTimeout(() => this.state.phase === "ended" && this.set(idle()), 2500);
  }

  private reset(): void {
    if (this.clearTimer) clearTimeout(this.clearTimer);
    this.offer = undefined;
    this.remoteIce = [];
    this.localIce = [];
    this.canSendIce = false;
    this.lastStats = undefined;
  }
}

let controller: CallController | null = null;

/** The page's call controller, created on first use. */
export function callsFor(client: TidingsClient): CallController {
  controller ??= new CallController(client);
  return controller;
}

/** Re-renders the calling component whenever the call changes. */
export function useCall(calls: CallController): CallState {
  useSyncExternalStore(
    (fn) => calls.subscribe(fn),
    () => calls.version,
  );
  return calls.state;
}

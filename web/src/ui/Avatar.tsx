// A round avatar with initials and an optional presence dot.

import { avatarColor, initials } from "../util";

export function Avatar({ name, seed, size = 40, online }: { name: string; seed: string | number; size?: number; online?: boolean }) {
  return (
    <span className="avatar" style={{ width: size, height: size, background: avatarColor(seed), fontSize: size * 0.4 }} aria-hidden="true">
      {initials(name)}
      {online !== undefined && <span className={`presence-dot ${online ? "on" : "off"}`} />}
    </span>
  );
}

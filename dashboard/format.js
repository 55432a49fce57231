// Number, duration and time formatting: one place, so every panel agrees.

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const compact = new Intl.NumberFormat(undefined, { notation: 'compact', maximumFractionDigits: 1 });
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1, minimumFractionDigits: 0 });

const DASH = '–';

const ok = (x) => typeof x === 'number' && Number.isFinite(x);

/** 1234567 → "1,234,567" (locale grouping). */
export function int(x) {
  return ok(x) ? integer.format(x) : DASH;
}

/** 1234567 → "1.2M"; small numbers stay exact. */
export function count(x) {
  if (!ok(x)) return DASH;
  return Math.abs(x) < 10000 ? integer.format(x) : compact.format(x);
}

/** A rate per second: "0", "0.4", "12.5", "1,204", "12.3k". */
export function rate(x) {
  if (!ok(x)) return DASH;
  if (x === 0) return '0';
  if (Math.abs(x) < 100) return oneDecimal.format(x);
  if (Math.abs(x) < 10000) return integer.format(x);
  return compact.format(x);
}

/** Seconds as a latency: "85 µs", "2.4 ms", "120 ms", "1.25 s". */
export function seconds(s) {
  if (!ok(s)) return DASH;
  const a = Math.abs(s);
  if (a === 0) return '0';
  if (a < 1e-3) return `${trim(s * 1e6)} µs`;
  if (a < 1) return `${trim(s * 1e3)} ms`;
  return `${trim(s)} s`;
}

/** Three significant digits at most, no trailing zeros. */
function trim(x) {
  const a = Math.abs(x);
  const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
  return Number(x.toFixed(digits)).toString();
}

/** Uptime: "42s", "5m 12s", "3h 04m", "12d 3h". */
export function uptime(totalSeconds) {
  if (!ok(totalSeconds)) return DASH;
  const s = Math.floor(totalSeconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, '0')}m`;
  if (m > 0) return `${m}m ${String(sec).padStart(2, '0')}s`;
  return `${sec}s`;
}

/** ms since the epoch → "14:03:27.412" (local time). */
export function clock(ms) {
  if (!ok(ms)) return DASH;
  const d = new Date(ms);
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** ms since the epoch → full ISO timestamp, for tooltips. */
export function iso(ms) {
  return ok(ms) ? new Date(ms).toISOString() : '';
}

/** Bytes: "512 B", "3.4 KiB", "1.2 MiB". */
export function bytes(n) {
  if (!ok(n)) return DASH;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : trim(v)} ${units[i]}`;
}

export { DASH };

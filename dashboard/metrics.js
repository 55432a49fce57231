// Reading GET /metrics (Prometheus text exposition 0.0.4): counters, and
// latency percentiles from histogram bucket deltas between two scrapes,
// computed the way Prometheus' histogram_quantile() does.

/**
 * Parses the exposition into {counters: Map(name → value summed over labels),
 * labelled: Map(name → [{labels, value}]), histograms: Map(base → Map(le → cumulative count))}.
 * Histogram buckets are summed over any labels other than `le`.
 */
export function parse(text) {
  const counters = new Map();
  const labelled = new Map();
  const histograms = new Map();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const sample = parseLine(line);
    if (!sample) continue;
    const { name, labels, value } = sample;
    if (name.endsWith('_bucket') && 'le' in labels) {
      const base = name.slice(0, -'_bucket'.length);
      const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
      if (Number.isNaN(le)) continue;
      let buckets = histograms.get(base);
      if (!buckets) histograms.set(base, (buckets = new Map()));
      buckets.set(le, (buckets.get(le) || 0) + value);
      continue;
    }
    counters.set(name, (counters.get(name) || 0) + value);
    if (Object.keys(labels).length > 0) {
      if (!labelled.has(name)) labelled.set(name, []);
      labelled.get(name).push({ labels, value });
    }
  }
  return { counters, labelled, histograms };
}

// name{a="x",b="y\"z"} 12.5 [timestamp]
function parseLine(line) {
  const brace = line.indexOf('{');
  let name;
  let rest;
  const labels = {};
  if (brace === -1) {
    const space = line.indexOf(' ');
    if (space === -1) return null;
    name = line.slice(0, space);
    rest = line.slice(space + 1);
  } else {
    name = line.slice(0, brace);
    let i = brace + 1;
    while (i < line.length && line[i] !== '}') {
      const eq = line.indexOf('=', i);
      if (eq === -1 || line[eq + 1] !== '"') return null;
      const key = line.slice(i, eq).trim().replace(/^,/, '').trim();
      let j = eq + 2;
      let value = '';
      while (j < line.length && line[j] !== '"') {
        if (line[j] === '\\' && j + 1 < line.length) {
          const c = line[j + 1];
          value += c === 'n' ? '\n' : c;
          j += 2;
        } else {
          value += line[j];
          j += 1;
        }
      }
      labels[key] = value;
      i = j + 1;
      if (line[i] === ',') i += 1;
    }
    rest = line.slice(i + 1);
  }
  const token = rest.trim().split(/\s+/)[0];
  const value = token === '+Inf' ? Infinity : token === '-Inf' ? -Infinity : Number(token);
  if (Number.isNaN(value) && token !== 'NaN') return null;
  return { name, labels, value };
}

/**
 * The buckets observed between two scrapes: `now − before` per bucket. If any
 * bucket went down the process restarted, so `now` alone is the delta.
 * Returns [{le, count}] sorted by le (cumulative counts).
 */
export function delta(now, before) {
  if (!now) return [];
  const les = [...now.keys()].sort((a, b) => a - b);
  const reset = before && les.some((le) => (now.get(le) || 0) < (before.get(le) || 0));
  return les.map((le) => ({ le, count: (now.get(le) || 0) - (before && !reset ? before.get(le) || 0 : 0) }));
}

/** How many observations the buckets hold (the +Inf bucket). */
export function total(buckets) {
  return buckets.length ? buckets[buckets.length - 1].count : 0;
}

/**
 * The q-quantile (0 ≤ q ≤ 1) of cumulative buckets, by linear interpolation
 * inside the bucket that holds the rank, as Prometheus' histogram_quantile():
 * NaN with no observations; the highest finite bound if the rank falls in +Inf.
 */
export function quantile(q, buckets) {
  if (buckets.length < 2 || buckets[buckets.length - 1].le !== Infinity) return NaN;
  const observations = total(buckets);
  if (!(observations > 0)) return NaN;
  const rank = q * observations;
  let i = buckets.findIndex((b) => b.count >= rank);
  if (i === -1) i = buckets.length - 1;
  if (i === buckets.length - 1) return buckets[buckets.length - 2].le;
  const start = i === 0 ? Math.min(0, buckets[0].le) : buckets[i - 1].le;
  const end = buckets[i].le;
  const below = i === 0 ? 0 : buckets[i - 1].count;
  const inBucket = buckets[i].count - below;
  if (inBucket <= 0) return end;
  return start + (end - start) * ((rank - below) / inBucket);
}

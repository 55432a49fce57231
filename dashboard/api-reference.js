// Renders /v1/openapi.json as a list of operations: no CDN, no framework,
// text only (never innerHTML), so the page keeps the dashboard's strict policy.

const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
};

/** The schema with every `$ref` replaced by its component (cycles cut). */
function resolve(spec, schema, seen = new Set()) {
  if (Array.isArray(schema)) return schema.map((s) => resolve(spec, s, seen));
  if (!schema || typeof schema !== 'object') return schema;
  if (typeof schema.$ref === 'string') {
    const name = schema.$ref.split('/').pop();
    if (seen.has(name)) return { $ref: schema.$ref };
    return resolve(spec, spec.components?.schemas?.[name], new Set([...seen, name]));
  }
  return Object.fromEntries(Object.entries(schema).map(([k, v]) => [k, resolve(spec, v, seen)]));
}

const json = (value) => el('pre', { textContent: JSON.stringify(value, null, 2) });

function parameters(spec, params) {
  if (!params?.length) return [];
  const rows = params.map((p) => el('tr', {},
    el('td', { textContent: p.name }),
    el('td', { textContent: p.in }),
    el('td', { textContent: p.required ? 'required' : '' }),
    el('td', { textContent: JSON.stringify(resolve(spec, p.schema)) }),
    el('td', { textContent: p.description ?? '' })));
  return [el('h4', { textContent: 'Parameters' }), el('table', {},
    el('tr', {}, ...['name', 'in', '', 'schema', ''].map((h) => el('th', { textContent: h }))),
    ...rows)];
}

function content(spec, body) {
  return Object.entries(body?.content ?? {}).flatMap(([type, media]) =>
    [el('div', { className: 'api-muted', textContent: type }), json(resolve(spec, media.schema))]);
}

function operation(spec, method, path, op) {
  const responses = Object.entries(op.responses ?? {}).flatMap(([status, r]) =>
    [el('h4', { textContent: `${status} ${r.description ?? ''}` }), ...content(spec, r)]);
  return el('details', { className: 'api-op' },
    el('summary', {},
      el('span', { className: 'api-method', textContent: method }),
      el('span', { className: 'api-path', textContent: path }),
      el('span', { className: 'api-muted', textContent: op.summary ?? '' })),
    el('div', {},
      el('p', { textContent: op.description ?? '' }),
      ...parameters(spec, op.parameters),
      ...(op.requestBody ? [el('h4', { textContent: 'Request body' }), ...content(spec, op.requestBody)] : []),
      ...responses));
}

async function main() {
  const target = document.getElementById('api-operations');
  try {
    const response = await fetch('openapi.json');
    if (!response.ok) throw new Error(`openapi.json: HTTP ${response.status}`);
    const spec = await response.json();
    document.getElementById('api-title').textContent = `${spec.info.title} ${spec.info.version} — HTTP API`;
    document.getElementById('api-description').textContent = spec.info.description ?? '';
    const byTag = new Map((spec.tags ?? []).map((t) => [t.name, []]));
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) {
        const tag = op.tags?.[0] ?? 'other';
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(operation(spec, method, path, op));
      }
    }
    target.replaceChildren(...[...byTag].filter(([, ops]) => ops.length).flatMap(([tag, ops]) => {
      const about = spec.tags?.find((t) => t.name === tag)?.description ?? '';
      return [el('h2', { className: 'api-tag', textContent: tag }), el('p', { className: 'api-muted', textContent: about }), ...ops];
    }));
  } catch (err) {
    target.textContent = `Could not load the description: ${err.message}`;
  }
}

main();

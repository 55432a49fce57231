// JSON shown with colour, built as DOM text nodes (never innerHTML): event
// data is whatever anyone published, so it must never become markup.
//
// It works on the raw JSON text, not on a parsed value, so what is shown is
// exactly what was sent: 12345678901234567890 stays that, and 1.50 stays 1.50
// (JSON.parse would round the one and trim the other).

/** Splits JSON text into tokens: {t: 'str'|'num'|'lit'|'punct', v}. */
function tokenize(text) {
  const tokens = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\n' || c === '\r' || c === '\t') { i += 1; continue; }
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      tokens.push({ t: 'str', v: text.slice(i, j + 1) });
      i = j + 1;
    } else if ('{}[],:'.includes(c)) {
      tokens.push({ t: 'punct', v: c });
      i += 1;
    } else {
      let j = i;
      while (j < text.length && !' \n\r\t{}[],:"'.includes(text[j])) j += 1;
      const v = text.slice(i, j);
      tokens.push({ t: /^[-0-9]/.test(v) ? 'num' : 'lit', v });
      i = j;
    }
  }
  return tokens;
}

function span(cls, text) {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  return s;
}

/**
 * Appends the JSON text `raw` to `parent`, highlighted: pretty-printed with
 * `indent` spaces, or on one line when indent is 0.
 */
export function renderJson(parent, raw, indent = 2) {
  const out = document.createDocumentFragment();
  const tokens = tokenize(raw);
  let depth = 0;
  const newline = () => out.appendChild(document.createTextNode('\n' + ' '.repeat(indent * depth)));
  tokens.forEach((tok, k) => {
    const next = tokens[k + 1];
    if (tok.t === 'punct') {
      const v = tok.v;
      if (v === '{' || v === '[') {
        const closesAtOnce = next && next.t === 'punct' && (next.v === '}' || next.v === ']');
        out.appendChild(span('j-punct', v));
        depth += 1;
        if (indent && !closesAtOnce) newline();
      } else if (v === '}' || v === ']') {
        const prev = tokens[k - 1];
        depth -= 1;
        if (indent && !(prev && (prev.v === '{' || prev.v === '['))) newline();
        out.appendChild(span('j-punct', v));
      } else if (v === ',') {
        out.appendChild(span('j-punct', ','));
        if (indent) newline();
        else out.appendChild(document.createTextNode(' '));
      } else {
        out.appendChild(span('j-punct', ': '));
      }
    } else if (tok.t === 'str') {
      const isKey = next && next.t === 'punct' && next.v === ':';
      out.appendChild(span(isKey ? 'j-key' : 'j-str', tok.v));
    } else if (tok.t === 'num') {
      out.appendChild(span('j-num', tok.v));
    } else {
      out.appendChild(span(tok.v === 'null' ? 'j-null' : 'j-bool', tok.v));
    }
  });
  parent.appendChild(out);
  return parent;
}

/**
 * The raw text of each member of a top-level JSON object, by key: for a
 * frame `{"type":"event",…,"data":…}`, fields.data is the data exactly as sent.
 * Returns null if `text` is not an object.
 */
export function rawFields(text) {
  let i = 0;
  const ws = () => { while (i < text.length && ' \n\r\t'.includes(text[i])) i += 1; };
  const skipString = () => {
    i += 1;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i += 1;
  };
  const skipValue = () => {
    ws();
    const start = i;
    if (text[i] === '"') { skipString(); return text.slice(start, i); }
    if (text[i] === '{' || text[i] === '[') {
      let depth = 0;
      while (i < text.length) {
        const c = text[i];
        if (c === '"') { skipString(); continue; }
        if (c === '{' || c === '[') depth += 1;
        if (c === '}' || c === ']') { depth -= 1; if (depth === 0) { i += 1; break; } }
        i += 1;
      }
      return text.slice(start, i);
    }
    while (i < text.length && !',}] \n\r\t'.includes(text[i])) i += 1;
    return text.slice(start, i);
  };
  ws();
  if (text[i] !== '{') return null;
  i += 1;
  const fields = {};
  for (;;) {
    ws();
    if (text[i] === '}' || i >= text.length) break;
    if (text[i] !== '"') return null;
    const keyStart = i;
    skipString();
    let key;
    try { key = JSON.parse(text.slice(keyStart, i)); } catch { return null; }
    ws();
    if (text[i] !== ':') return null;
    i += 1;
    fields[key] = skipValue();
    ws();
    if (text[i] === ',') i += 1;
  }
  return fields;
}

// The page of `hubcast demo`: live LMSR markets over the hubcast SDK.
//
// - GET /demo/api/markets gives each market's state (shares, version, prices)
//   and its room; the page subscribes to every room with the SDK (rewind: the
//   last trades, for the sparkline), and applies each `trade` event whose
//   version is newer than what it shows. After every (re)subscribe it reads
//   the market again, so after a restart it shows what the database holds.
// - A buy opens a ticket with a fixed quote (the price and version shown at
//   that moment). Confirming POSTs the quote and the slippage tolerance; the
//   server checks it inside the database transaction and answers 409 with the
//   current market when the price moved beyond the tolerance.
import { HubcastClient } from '../../../clients/js/src/index.js';
import type { ConnectionState, HubcastEvent } from '../../../clients/js/src/index.js';

interface MarketView {
  id: string;
  title: string;
  outcomes: string[];
  liquidity: number;
  shares: number[];
  version: number;
  volume: number;
  prices: number[];
  room: string;
}

interface TradeEvent {
  type: 'trade';
  market: string;
  version: number;
  outcome: number;
  shares: number;
  cost: number;
  prices: number[];
  outstanding: number[];
  volume: number;
}

interface ResetEvent {
  type: 'reset';
  market: MarketView;
}

type MarketEvent = TradeEvent | ResetEvent;

interface Quote {
  market: string;
  outcome: number;
  price: number;
  version: number;
}

const SPARK_POINTS = 60;
const COLORS = ['#2f6fed', '#e4572e', '#17a398', '#a259c4', '#f2a541'];

const markets = new Map<string, MarketView>();
const series = new Map<string, number[][]>();
let quote: Quote | null = null;

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el as T;
};

function cents(price: number): string {
  return `${(price * 100).toFixed(1)}¢`;
}

// ------------------------------------------------------------------ the API

async function fetchMarkets(): Promise<MarketView[]> {
  const res = await fetch('/demo/api/markets');
  if (!res.ok) throw new Error(`markets: HTTP ${res.status}`);
  const body = (await res.json()) as { markets: MarketView[] };
  return body.markets;
}

async function fetchMarket(id: string): Promise<MarketView> {
  const res = await fetch(`/demo/api/markets/${encodeURIComponent(id)}`);
  if (!res.ok) throw new Error(`market ${id}: HTTP ${res.status}`);
  return (await res.json()) as MarketView;
}

// ---------------------------------------------------------------- rendering

function card(market: MarketView): HTMLElement {
  let el = document.querySelector<HTMLElement>(`.market[data-id="${CSS.escape(market.id)}"]`);
  if (el) return el;
  el = document.createElement('article');
  el.className = 'market';
  el.dataset.id = market.id;
  const title = document.createElement('h2');
  title.textContent = market.title;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const body = document.createElement('div');
  body.className = 'body';
  const list = document.createElement('ul');
  list.className = 'outcomes';
  market.outcomes.forEach((name, i) => {
    const li = document.createElement('li');
    li.className = 'outcome';
    li.dataset.index = String(i);
    const label = document.createElement('span');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = COLORS[i % COLORS.length] ?? '#888';
    label.append(swatch, name);
    const price = document.createElement('span');
    price.className = 'price';
    const buy = document.createElement('button');
    buy.type = 'button';
    buy.className = 'buy';
    buy.textContent = 'Buy';
    buy.addEventListener('click', () => openTicket(market.id, i));
    li.append(label, price, buy);
    list.append(li);
  });
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', '0 0 240 70');
  svg.setAttribute('preserveAspectRatio', 'none');
  body.append(list, svg);
  el.append(title, meta, body);
  $('markets').append(el);
  return el;
}

function render(market: MarketView, previous?: MarketView): void {
  const el = card(market);
  el.dataset.version = String(market.version);
  const meta = el.querySelector<HTMLElement>('.meta');
  if (meta) meta.textContent = `version ${market.version} · volume ${market.volume.toFixed(2)} · b = ${market.liquidity}`;
  el.querySelectorAll<HTMLElement>('.outcome').forEach((li) => {
    const i = Number(li.dataset.index);
    const price = market.prices[i] ?? 0;
    const cell = li.querySelector<HTMLElement>('.price');
    if (!cell) return;
    cell.textContent = cents(price);
    cell.dataset.price = String(price);
    const before = previous?.prices[i];
    cell.classList.toggle('up', before !== undefined && price > before);
    cell.classList.toggle('down', before !== undefined && price < before);
  });
  drawSparkline(market.id);
  if (quote?.market === market.id) renderLivePrice();
}

function drawSparkline(id: string): void {
  const svg = document.querySelector<SVGSVGElement>(`.market[data-id="${CSS.escape(id)}"] svg.spark`);
  if (!svg) return;
  const points = series.get(id) ?? [];
  svg.replaceChildren();
  svg.dataset.points = String(points.length);
  if (points.length === 0) return;
  // One point is a flat line; the y range follows the prices (at least 10¢ tall).
  const drawn = points.length === 1 ? [points[0] ?? [], points[0] ?? []] : points;
  const all = drawn.flat();
  const mid = (Math.max(...all) + Math.min(...all)) / 2;
  const half = Math.max((Math.max(...all) - Math.min(...all)) / 2 + 0.02, 0.05);
  const y = (p: number) => (64 - ((p - (mid - half)) / (2 * half)) * 58).toFixed(1);
  const outcomes = drawn[0]?.length ?? 0;
  for (let o = 0; o < outcomes; o++) {
    const coords = drawn.map((p, i) => `${((i / (drawn.length - 1)) * 240).toFixed(1)},${y(p[o] ?? 0)}`);
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    line.setAttribute('points', coords.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', COLORS[o % COLORS.length] ?? '#888');
    line.setAttribute('stroke-width', '1.6');
    line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
  }
}

function pushPoint(id: string, prices: number[]): void {
  const points = series.get(id) ?? [];
  points.push(prices);
  if (points.length > SPARK_POINTS) points.splice(0, points.length - SPARK_POINTS);
  series.set(id, points);
}

// ------------------------------------------------------------------ state

/** A market read from the API: shown if it is newer than what the page has. */
function adopt(market: MarketView): void {
  const shown = markets.get(market.id);
  if (shown && shown.version >= market.version) return;
  markets.set(market.id, market);
  render(market, shown);
}

function onEvent(id: string, event: HubcastEvent<MarketEvent>): void {
  const data = event.data;
  if (data.type === 'reset') {
    series.set(id, [data.market.prices]);
    markets.set(id, data.market);
    render(data.market);
    return;
  }
  if (data.type !== 'trade') return;
  pushPoint(id, data.prices);
  const shown = markets.get(id);
  if (!shown || data.version <= shown.version) {
    if (shown) drawSparkline(id);
    return;
  }
  const next: MarketView = { ...shown, version: data.version, prices: data.prices, shares: data.outstanding, volume: data.volume };
  markets.set(id, next);
  render(next, shown);
}

// ------------------------------------------------------------------ ticket

function openTicket(id: string, outcome: number): void {
  const market = markets.get(id);
  if (!market) return;
  quote = { market: id, outcome, price: market.prices[outcome] ?? 0, version: market.version };
  const ticket = $('ticket');
  ticket.hidden = false;
  $('ticket-empty').hidden = true;
  ticket.dataset.market = id;
  ticket.dataset.outcome = String(outcome);
  $('ticket-outcome').textContent = market.outcomes[outcome] ?? '';
  $('ticket-title').textContent = market.title;
  renderQuote();
  setFeedback('', '');
}

function renderQuote(): void {
  const el = $('quote-price');
  el.textContent = quote ? `${cents(quote.price)} (v${quote.version})` : '–';
  el.dataset.price = quote ? String(quote.price) : '';
  el.dataset.version = quote ? String(quote.version) : '';
  renderLivePrice();
}

function renderLivePrice(): void {
  const market = quote ? markets.get(quote.market) : undefined;
  const el = $('live-price');
  const price = quote && market ? market.prices[quote.outcome] : undefined;
  el.textContent = price === undefined ? '–' : cents(price);
  el.dataset.price = price === undefined ? '' : String(price);
}

function setFeedback(kind: '' | 'ok' | 'rejected' | 'error', text: string): void {
  const el = $('feedback');
  el.dataset.kind = kind;
  el.textContent = text;
}

async function confirm(): Promise<void> {
  if (!quote) return;
  const shares = Number(($('shares') as HTMLInputElement).value);
  const slippage = Number(($('slippage') as HTMLInputElement).value) / 100;
  const sent = quote;
  const button = $('confirm') as HTMLButtonElement;
  button.disabled = true;
  try {
    const res = await fetch(`/demo/api/markets/${encodeURIComponent(sent.market)}/buy`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ outcome: sent.outcome, shares, expected_price: sent.price, max_slippage: slippage }),
    });
    const body = await res.json();
    if (res.ok) {
      adopt(body.market as MarketView);
      const name = markets.get(sent.market)?.outcomes[sent.outcome] ?? '';
      setFeedback('ok', `Bought ${shares} ${name} for ${body.trade.cost.toFixed(2)} (version ${body.trade.version}).`);
      // The next buy needs a new quote.
      openQuoteAfterFill(sent);
    } else if (res.status === 409) {
      adopt(body.market as MarketView);
      setFeedback(
        'rejected',
        `Rejected: stale quote. You were quoted ${cents(sent.price)}, the price was ${cents(body.current_price)} when your buy reached the market ` +
          `(tolerance ${(slippage * 100).toFixed(1)}¢). Refresh the quote to buy at the new price.`,
      );
    } else {
      setFeedback('error', `The buy failed: ${body.message ?? res.status}`);
    }
  } catch (err) {
    setFeedback('error', `The buy failed: ${(err as Error).message}; nothing was bought unless the price shows it.`);
  } finally {
    button.disabled = false;
  }
}

function openQuoteAfterFill(sent: Quote): void {
  const market = markets.get(sent.market);
  if (!market) return;
  quote = { ...sent, price: market.prices[sent.outcome] ?? 0, version: market.version };
  renderQuote();
}

// ------------------------------------------------------------------ wiring

function showState(state: ConnectionState): void {
  const el = $('status');
  const shown = state === 'open' ? 'live' : state === 'closed' ? 'offline' : state === 'idle' ? 'connecting' : state;
  el.dataset.state = shown;
  el.textContent = shown === 'live' ? 'live' : shown === 'reconnecting' ? 'reconnecting…' : shown === 'offline' ? 'offline' : 'connecting…';
}

async function main(): Promise<void> {
  $('ticket').addEventListener('submit', (e) => {
    e.preventDefault();
    void confirm();
  });
  $('requote').addEventListener('click', () => {
    if (quote) openTicket(quote.market, quote.outcome);
  });
  const client = new HubcastClient({ url: location.origin });
  client.on('state', (change) => showState(change.state));
  showState(client.state);
  let list: MarketView[] = [];
  for (;;) {
    try {
      list = await fetchMarkets();
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  for (const market of list) {
    adopt(market);
    const room = client.room<MarketEvent>(market.room, { rewind: SPARK_POINTS });
    room.on('event', (event) => onEvent(market.id, event));
    // A market without trades yet still gets a first point.
    room.on('caught_up', () => {
      const shown = markets.get(market.id);
      if (shown && !series.get(market.id)?.length) {
        pushPoint(market.id, shown.prices);
        drawSparkline(market.id);
      }
    });
    // After every (re)subscribe, read the market: what the database holds wins.
    room.on('subscribed', () => {
      fetchMarket(market.id).then(adopt, () => undefined);
    });
  }
  client.connect();
  (window as unknown as { hubcastMarket: unknown }).hubcastMarket = { client, markets };
}

void main();

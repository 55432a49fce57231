// Compile-only: the WebSocket implementations users pass must fit without casts.
import WS from 'ws';
import { HubcastClient } from '../../src/index.js';

export const browser = () => new HubcastClient({ url: 'http://x', WebSocket });
export const node = () => new HubcastClient({ url: 'http://x', WebSocket: WS });
export const fetchDefault = () => new HubcastClient({ url: 'http://x', fetch });

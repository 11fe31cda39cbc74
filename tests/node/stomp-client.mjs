// One @stomp/stompjs client with its default settings, driven by the live tests.
//
//   node stomp-client.mjs ws://127.0.0.1:PORT/connect NAME
//
// It connects at once. Commands arrive as JSON lines on stdin:
//   {"op": "subscribe", "destination": "/user/dialog"}
//   {"op": "publish", "destination": "/start", "body": "...", "headers": {...}}
//   {"op": "deactivate"}   client.deactivate(): DISCONNECT with a receipt, close on RECEIPT
//   {"op": "drop"}         terminate the TCP connection without any close handshake
// Everything the client sends and receives is printed as one JSON line per item, so the
// test asserts on what really went over the wire. stdin closing ends the process.

import { createInterface } from 'node:readline';
import { Client } from '@stomp/stompjs';
import { WebSocket as NodeWebSocket } from 'ws';

const [url, name = 'client'] = process.argv.slice(2);
if (!url) {
  console.error('usage: node stomp-client.mjs WS_URL [NAME]');
  process.exit(2);
}

const emit = entry => process.stdout.write(JSON.stringify({ client: name, ...entry }) + '\n');

function parseFrame(data) {
  const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
  if (text === '\n' || text === '\r\n') return null;
  const headEnd = text.indexOf('\n\n');
  const head = headEnd < 0 ? text : text.slice(0, headEnd);
  const [command, ...lines] = head.split('\n');
  const headers = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    const key = line.slice(0, colon);
    if (!(key in headers)) headers[key] = line.slice(colon + 1);
  }
  const body = headEnd < 0 ? '' : text.slice(headEnd + 2).replace(/\0$/, '');
  return { command, headers, bodyLength: Buffer.byteLength(body, 'utf8') };
}

// The WebSocket stompjs creates from brokerURL, recording the raw traffic on the side.
let socket = null;
class RecordingWebSocket extends NodeWebSocket {
  constructor(...args) {
    super(...args);
    socket = this;
    this.addEventListener('open', () => emit({ type: 'ws-open', protocol: this.protocol }));
    this.addEventListener('message', event => {
      const frame = parseFrame(event.data);
      if (frame === null) emit({ type: 'received-heartbeat', binary: typeof event.data !== 'string' });
      else emit({ type: 'received', command: frame.command, binary: typeof event.data !== 'string' });
    });
    this.addEventListener('close', event =>
      emit({ type: 'ws-close', code: event.code, reason: event.reason, wasClean: event.wasClean }),
    );
  }

  send(data, ...rest) {
    const frame = parseFrame(data);
    if (frame === null) emit({ type: 'sent-heartbeat' });
    else emit({ type: 'sent', ...frame, binary: typeof data !== 'string' });
    return super.send(data, ...rest);
  }
}
Object.assign(globalThis, { WebSocket: RecordingWebSocket });

const client = new Client({ brokerURL: url });
// Logging only: keep stompjs's own account of the heart-beats it negotiated.
client.debug = text => {
  if (/PING every|PONG every|did not receive server activity/.test(text)) emit({ type: 'debug', text });
};
const frameEntry = (type, frame) => ({ type, command: frame.command, headers: frame.headers, body: frame.body });
client.onConnect = frame => emit(frameEntry('connected', frame));
client.onStompError = frame => emit(frameEntry('error', frame));
client.onUnhandledReceipt = frame => emit(frameEntry('receipt', frame));
client.onUnhandledMessage = frame => emit(frameEntry('unhandled-message', frame));
client.onDisconnect = frame => emit(frameEntry('disconnect', frame));
client.onWebSocketError = () => emit({ type: 'ws-error' });

const commands = {
  subscribe({ destination }) {
    const subscription = client.subscribe(destination, message => emit(frameEntry('message', message)));
    emit({ type: 'subscribed', id: subscription.id });
  },
  publish({ destination, body, headers = {} }) {
    client.publish({ destination, body, headers });
  },
  async deactivate() {
    await client.deactivate();
    emit({ type: 'deactivated', active: client.active, connected: client.connected });
  },
  drop() {
    // No reconnect after the drop: the test decides what happens next.
    client.reconnectDelay = 0;
    socket.terminate();
  },
};

const input = createInterface({ input: process.stdin });
input.on('line', async line => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
    const handler = commands[command.op];
    if (!handler) throw new Error(`unknown op ${command.op}`);
    await handler(command);
  } catch (error) {
    emit({ type: 'fatal', op: command && command.op, error: String(error && error.stack ? error.stack : error) });
  }
});
// The test is done with this client: leave at once (the OS closes the socket).
input.on('close', () => process.exit(0));

client.activate();

// The SMS centre's own bound for the alerts benchmark: an SMPP client on node-smpp (the
// SMSC's library, no bossa code) that binds `binds` transceivers, keeps `window`
// submit_sm outstanding on each, asks for receipts and answers them, as bossa does, and
// prints the accepted rate and the submit_sm -> submit_sm_resp latency as JSON.
//
// Usage: node blast.js '{"port":..., "password":..., "count":1000, "binds":4,
//   "window":200, "rate":1000}'   (rate: submits offered per second, 0 for as fast as it can)
'use strict';

const path = require('path');
const smpp = require(path.join(__dirname, '..', '..', 'tests', 'alerts', 'smsc', 'node_modules', 'smpp'));

const o = Object.assign({ count: 1000, binds: 4, window: 200, rate: 0 }, JSON.parse(process.argv[2]));
const latencies = [];
let sent = 0;
let accepted = 0;
let firstSend = 0;
let lastAccept = 0;
const started = Date.now();

function done() {
  latencies.sort((a, b) => a - b);
  const pct = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  process.stdout.write(
    JSON.stringify({
      accepted,
      elapsed_s: (lastAccept - started) / 1000,
      per_s: accepted / Math.max((lastAccept - started) / 1000, 1e-9),
      p50_ms: pct(0.5),
      p99_ms: pct(0.99),
    }) + '\n',
  );
  process.exit(0);
}

function session(n, ready) {
  const s = smpp.connect({ url: `smpp://127.0.0.1:${o.port}` });
  s.socket.setNoDelay(true);
  s.on('deliver_sm', (pdu) => s.send(pdu.response()));
  s.on('error', (e) => {
    console.error(e);
    process.exit(1);
  });
  s.bind_transceiver({ system_id: 'bossa', password: o.password }, (pdu) => {
    if (pdu.command_status !== 0) {
      console.error('bind refused');
      process.exit(1);
    }
    s.inflight = 0;
    ready(s);
  });
}

const sessions = [];
function pump() {
  for (const s of sessions) {
    while (s.inflight < o.window && sent < o.count) {
      if (o.rate && sent >= ((Date.now() - started) / 1000) * o.rate) return;
      const at = Date.now();
      const number = 8613802000000 + sent;
      sent += 1;
      s.inflight += 1;
      s.submit_sm(
        {
          source_addr: '10086',
          destination_addr: String(number),
          registered_delivery: 1,
          short_message: `Missed call: +8613999000001 called you 1 time(s), last at 11-29 14:02.`,
        },
        (pdu) => {
          s.inflight -= 1;
          if (pdu.command_status === 0) {
            accepted += 1;
            lastAccept = Date.now();
            latencies.push(lastAccept - at);
          }
          if (accepted === o.count) done();
          else pump();
        },
      );
    }
  }
}

let bound = 0;
for (let n = 0; n < o.binds; n += 1) {
  session(n, (s) => {
    sessions.push(s);
    bound += 1;
    if (bound === o.binds) {
      firstSend = Date.now();
      setInterval(pump, 5);
      pump();
    }
  });
}
setTimeout(() => {
  console.error('blast: timed out');
  done();
}, 120000);

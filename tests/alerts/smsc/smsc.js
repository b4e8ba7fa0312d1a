// An SMS centre for bossa's alert tests and benchmark, on node-smpp (an SMPP
// implementation independent of the one bossa uses). It checks the bind password,
// answers submit_sm with a message id, applies a configurable rate limit with
// ESME_RTHROTTLED, sends delivery receipts (after the submit_sm_resp, or before it to
// test matching "receipt first") and, on request, an uplink deliver_sm (a subscriber's
// reply).
//
// Every accepted message is appended to a log file and fsynced before the
// submit_sm_resp leaves, the way a real SMSC commits before it acknowledges; a restarted
// SMSC reads the log back, so a message resubmitted with the same reference (vendor TLV
// bossa_reference) is answered with its first message id instead of being sent twice.
//
// Usage: node smsc.js '{"port":..., "controlPort":..., "systemId":..., "password":...,
//   "rate":0, "receipts":"after"|"first"|"none", "log":"/path/accepted.jsonl",
//   "respondDelayMs":0}'
// Control (HTTP on 127.0.0.1:controlPort): GET /messages, GET /health,
// POST /mo {"from","to","text"}, POST /config {"rate", "receipts", "respondDelayMs"}.
'use strict';

const fs = require('fs');
const http = require('http');
const smpp = require('smpp');

const REFERENCE_TAG = 0x1401;
smpp.addTLV('bossa_reference', { id: REFERENCE_TAG, type: smpp.types.tlv.cstring });

const options = Object.assign(
  { rate: 0, receipts: 'after', respondDelayMs: 0, systemId: 'bossa', password: 'secret' },
  JSON.parse(process.argv[2] || '{}'),
);

// Accepted messages, in order; and reference -> message id for resubmissions.
const accepted = [];
const byReference = new Map();
let counter = 0;
if (options.log && fs.existsSync(options.log)) {
  for (const line of fs.readFileSync(options.log, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let record;
    try {
      record = JSON.parse(line);
    } catch (e) {
      continue; // a torn last line from a SIGKILL: that message was never acknowledged
    }
    accepted.push(record);
    if (record.reference) byReference.set(record.reference, record.id);
    counter = Math.max(counter, record.seq);
  }
}
const logFd = options.log ? fs.openSync(options.log, 'a') : null;

// Token bucket: `rate` submits per second, a burst of one second's worth.
let tokens = options.rate;
let refilled = Date.now();
function allow() {
  if (!options.rate) return true;
  const now = Date.now();
  tokens = Math.min(options.rate, tokens + ((now - refilled) / 1000) * options.rate);
  refilled = now;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

const sessions = new Set();
let throttled = 0;

function receiptText(id, submitted) {
  const stamp = (d) => {
    const p = (n) => String(n).padStart(2, '0');
    return `${p(d.getUTCFullYear() % 100)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}` +
      `${p(d.getUTCHours())}${p(d.getUTCMinutes())}`;
  };
  // The receipt names the message in decimal while submit_sm_resp gave it in upper-case
  // hexadecimal: SMSCs do this, and bossa must match them anyway.
  const decimal = BigInt('0x' + id).toString(10);
  return `id:${decimal} sub:001 dlvrd:001 submit date:${stamp(submitted)} ` +
    `done date:${stamp(new Date())} stat:DELIVRD err:000 text:`;
}

function sendReceipt(session, record) {
  session.deliver_sm({
    source_addr: record.destination,
    destination_addr: record.source,
    esm_class: 0x04,
    short_message: receiptText(record.id, new Date(record.at)),
  });
}

function messageText(pdu) {
  const sm = pdu.short_message;
  if (sm && typeof sm === 'object' && 'message' in sm) return String(sm.message);
  return Buffer.isBuffer(sm) ? sm.toString('latin1') : String(sm);
}

function concatInfo(pdu) {
  const sm = pdu.short_message;
  if (!sm || !sm.udh) return null;
  for (const ie of sm.udh) {
    if (ie[0] === 0x00) return { ref: ie[2], total: ie[3], seq: ie[4] };
    if (ie[0] === 0x08) return { ref: (ie[2] << 8) | ie[3], total: ie[4], seq: ie[5] };
  }
  return null;
}

function onSubmit(session, pdu) {
  if (!allow()) {
    throttled += 1;
    session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
    return;
  }
  const reference = pdu.bossa_reference || null;
  if (reference && byReference.has(reference)) {
    // A resubmission of what this SMSC already accepted: same id, nothing sent again.
    session.send(pdu.response({ message_id: byReference.get(reference) }));
    return;
  }
  counter += 1;
  const id = counter.toString(16).toUpperCase().padStart(10, '0');
  const record = {
    seq: counter,
    id,
    reference,
    source: pdu.source_addr,
    destination: pdu.destination_addr,
    data_coding: pdu.data_coding,
    esm_class: pdu.esm_class,
    text: messageText(pdu),
    concat: concatInfo(pdu),
    registered_delivery: pdu.registered_delivery,
    at: Date.now(),
    system_id: session.systemId,
  };
  if (logFd !== null) {
    fs.writeSync(logFd, JSON.stringify(record) + '\n');
    fs.fsyncSync(logFd);
  }
  accepted.push(record);
  if (reference) byReference.set(reference, id);
  const wantsReceipt = (pdu.registered_delivery & 0x01) === 0x01;
  const respond = () => {
    if (wantsReceipt && options.receipts === 'first') sendReceipt(session, record);
    session.send(pdu.response({ message_id: id }));
    if (wantsReceipt && options.receipts === 'after') sendReceipt(session, record);
  };
  if (options.respondDelayMs) setTimeout(respond, options.respondDelayMs);
  else respond();
}

const server = smpp.createServer((session) => {
  session.on('error', () => {});
  // Without it, Nagle and delayed ACKs hold small responses ~40 ms.
  if (session.socket && session.socket.setNoDelay) session.socket.setNoDelay(true);
  const bind = (pdu) => {
    if (pdu.system_id !== options.systemId || pdu.password !== options.password) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVPASWD }));
      session.close();
      return;
    }
    session.systemId = pdu.system_id;
    session.bound = true;
    sessions.add(session);
    session.send(pdu.response({ system_id: 'testsmsc' }));
  };
  session.on('bind_transceiver', bind);
  session.on('bind_transmitter', bind);
  session.on('submit_sm', (pdu) => {
    if (!session.bound) {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    onSubmit(session, pdu);
  });
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    session.close();
  });
  session.on('close', () => sessions.delete(session));
});
server.on('error', (e) => {
  console.error(`smsc: ${e.message}`);
  process.exit(1);
});

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => (data += c));
    req.on('end', () => resolve(data ? JSON.parse(data) : {}));
  });
}

const control = http.createServer(async (req, res) => {
  const reply = (code, body) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  try {
    if (req.method === 'GET' && req.url === '/health') {
      return reply(200, { bound: sessions.size, accepted: accepted.length, throttled });
    }
    if (req.method === 'GET' && req.url === '/messages') return reply(200, accepted);
    if (req.method === 'POST' && req.url === '/config') {
      Object.assign(options, await readBody(req));
      tokens = options.rate;
      return reply(200, { rate: options.rate, receipts: options.receipts });
    }
    if (req.method === 'POST' && req.url === '/mo') {
      const body = await readBody(req);
      const session = [...sessions][0];
      if (!session) return reply(409, { error: 'no bound ESME' });
      session.deliver_sm(
        { source_addr: body.from, destination_addr: body.to, short_message: body.text },
        (pdu) => reply(200, { command_status: pdu.command_status }),
      );
      return undefined;
    }
    return reply(404, { error: 'no such route' });
  } catch (e) {
    return reply(400, { error: String(e) });
  }
});

server.listen(options.port, '127.0.0.1', () => {
  control.listen(options.controlPort, '127.0.0.1', () => {
    console.log(`smsc: listening on ${options.port}, control on ${options.controlPort}`);
  });
});

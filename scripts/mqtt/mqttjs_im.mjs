// One MQTT device with mqtt.js (MQTT 5), driven by crates/mqtt/tests/clients.rs.
//
// Usage: node mqttjs_im.mjs <url> <username> <password> <conversation id>
// where <url> is mqtt://host:port or ws://host:port/mqtt. It prints lines the test waits for:
// READY once its message is acknowledged, GOT <text> for the reply, BROKER <topic> <payload>
// for a retained broker message seen through a wildcard, SHARED <a> <b> for how four messages
// on a shared subscription were split between two members, and REFUSED <reason code> for a
// message to a conversation the user is not in.
import mqtt from 'mqtt';

const [url, username, password, conv] = process.argv.slice(2);
const tag = url.startsWith('ws') ? 'ws' : 'tcp';
const options = (clientId) => ({
  protocolVersion: 5, clientId, username, password, clean: true, reconnectPeriod: 0,
  connectTimeout: 10_000,
});

function connect(clientId) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, options(clientId));
    client.once('connect', () => resolve(client));
    client.once('error', reject);
  });
}

const timeout = setTimeout(() => { console.log('TIMEOUT'); process.exit(1); }, 20_000);
const device = await connect(`js-${tag}`);
const events = [];
let onEvent = null;
device.on('message', (topic, payload) => {
  const text = payload.toString();
  if (topic === 'tidings/v1/me/events') {
    events.push(JSON.parse(text));
    if (onEvent) onEvent();
  } else if (topic.startsWith(`users/${username}/js/`)) {
    console.log(`BROKER ${topic} ${text}`);
  }
});
await device.subscribeAsync('tidings/v1/me/events', { qos: 1 });
await device.subscribeAsync(`users/${username}/js/#`, { qos: 1 });
await device.publishAsync(`tidings/v1/conversations/${conv}/messages`,
  JSON.stringify({ client_msg_id: `js-${tag}-1`, body: { kind: 'text', text: `hello from mqtt.js over ${tag}` } }),
  { qos: 1 });
console.log('READY');

const wanted = `reply over ${tag}`;
await new Promise((resolve) => {
  const check = () => {
    if (events.some((e) => e.type === 'message' && e.message.body.text === wanted)) resolve();
  };
  onEvent = check;
  check();
});
console.log(`GOT ${wanted}`);

await device.publishAsync(`users/${username}/js/state`, 'js-on', { qos: 1, retain: true });

const counts = [0, 0];
const members = [];
for (const i of [0, 1]) {
  const m = await connect(`js-${tag}-worker-${i}`);
  m.on('message', () => { counts[i] += 1; });
  await m.subscribeAsync(`$share/workers/users/${username}/jobs`, { qos: 1 });
  members.push(m);
}
for (let i = 0; i < 4; i++) {
  await device.publishAsync(`users/${username}/jobs`, `job ${i}`, { qos: 1 });
}
const until = Date.now() + 5000;
while (counts[0] + counts[1] < 4 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
console.log(`SHARED ${counts[0]} ${counts[1]}`);

try {
  await device.publishAsync('tidings/v1/conversations/999999/messages',
    JSON.stringify({ client_msg_id: 'nope', body: { kind: 'text', text: 'x' } }), { qos: 1 });
  console.log('REFUSED 0');
} catch (e) {
  console.log(`REFUSED ${e.code}`);
}
for (const m of members) await m.endAsync();
await device.endAsync();
clearTimeout(timeout);

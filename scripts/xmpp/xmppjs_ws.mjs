// One XMPP client over WebSocket (RFC 7395) with xmpp.js, driven by
// crates/xmpp/tests/websocket.rs.
//
// Usage: node --experimental-websocket xmppjs_ws.mjs <ws url> <domain> <username> <password>
//        <peer jid> <first|reply>
// `first` sends a chat message to the peer and waits for one back; `reply` waits for a chat
// message and answers it. It prints lines the test waits for: MECHANISM <name> (the SASL
// mechanism xmpp.js picked), ONLINE <full jid>, ROSTER <jid,...>, SENT <text>, GOT <from> <text>
// and CLOSED once the stream is closed. (`--experimental-websocket` gives Node 20 the global
// WebSocket xmpp.js uses; later versions have it anyway.) With XMPPJS_DEBUG set, every element
// sent and received goes to stderr.
import { client, xml } from '@xmpp/client';

const [service, domain, username, password, peer, role] = process.argv.slice(2);
const timeout = setTimeout(() => { console.log('TIMEOUT'); process.exit(1); }, 30_000);

const xmpp = client({ service, domain, username, password, resource: `xmppjs-${role}` });
xmpp.on('error', (e) => { console.log(`ERROR ${e.condition ?? e.message}`); });
if (process.env.XMPPJS_DEBUG) {
  xmpp.on('element', (element) => console.error(`${username} IN ${element.toString()}`));
  xmpp.on('send', (element) => console.error(`${username} OUT ${element.toString()}`));
}
xmpp.on('send', (element) => {
  if (element.is('auth') || element.is('authenticate')) {
    console.log(`MECHANISM ${element.attrs.mechanism}`);
  }
});

let gotMessage;
const got = new Promise((resolve) => { gotMessage = resolve; });
xmpp.on('stanza', (stanza) => {
  if (stanza.is('message') && stanza.attrs.type === 'chat' && stanza.getChildText('body')) {
    gotMessage(stanza);
  }
});

const jid = await xmpp.start();
console.log(`ONLINE ${jid.toString()}`);
const roster = await xmpp.iqCaller.get(xml('query', 'jabber:iq:roster'));
const items = roster.getChildren('item').map((item) => item.attrs.jid).sort();
console.log(`ROSTER ${items.join(',')}`);
await xmpp.send(xml('presence'));

const say = async (text) => {
  await xmpp.send(xml('message', { type: 'chat', to: peer, id: `js-${Date.now()}` },
    xml('body', {}, text)));
  console.log(`SENT ${text}`);
};
if (role === 'first') {
  await say(`hello from xmpp.js as ${username}`);
  const message = await got;
  console.log(`GOT ${message.attrs.from.split('/')[0]} ${message.getChildText('body')}`);
} else {
  const message = await got;
  console.log(`GOT ${message.attrs.from.split('/')[0]} ${message.getChildText('body')}`);
  await say(`re: ${message.getChildText('body')}`);
}
await xmpp.stop();
console.log('CLOSED');
clearTimeout(timeout);

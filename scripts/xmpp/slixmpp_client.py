#!/usr/bin/env python3
"""A slixmpp client driven by crates/xmpp/tests/clients.rs.

It signs in to the Tidings XMPP gateway, prints what happens as JSON lines on stdout, and
carries out JSON commands read line by line from stdin:
  {"op": "send", "to": JID, "body": TEXT, "id": ID}     a chat message with origin-id ID
  {"op": "displayed", "to": JID, "id": ID}               a chat marker (XEP-0333)
  {"op": "received", "to": JID, "id": ID}                a delivery receipt (XEP-0184)
  {"op": "typing", "to": JID, "state": "composing"}      a chat state (XEP-0085)
  {"op": "roster"}                                       prints {"event": "roster", ...}
  {"op": "carbons"}                                      enables Message Carbons
  {"op": "ping"}                                         XEP-0199 ping of the server
  {"op": "disco"}                                        disco#info of the server
  {"op": "disco_of", "jid": JID}                         disco#info of any JID (another client's)
  {"op": "version", "jid": JID}                          XEP-0092 software version of a JID; the
                                                         client answers as "TidingsTest" 1.2.3
  {"op": "block", "jid": JID} / {"op": "unblock", "jid": JID}   XEP-0191
  {"op": "blocklist"}                                    prints {"event": "blocklist", ...}
  {"op": "vcard", "jid": JID}                            vCard-temp of a user
  {"op": "raw", "xml": XML}                              writes XML as is (for error tests)
  {"op": "upload", "name": NAME, "data": TEXT}           HTTP File Upload (XEP-0363), then a GET
                                                         of the URL; prints {"event": "uploaded", ...}
  {"op": "mam", "with": JID, "max": N, "reverse": BOOL} pages through MAM (XEP-0313), prints
                                                         (with "room": JID instead of "with", a room's)
                                                         {"event": "mam", "bodies": [...], "ids": [...]}
  {"op": "rooms"}                                        disco#items of the MUC service
  {"op": "room_info", "room": JID}                       disco#info of a room
  {"op": "join", "room": JID, "nick": NICK, "maxstanzas": N}   joins a room (XEP-0045), prints
                                                         {"event": "joined", ...} or join_error
  {"op": "groupchat", "room": JID, "body": TEXT, "id": ID}   a groupchat message with origin-id
  {"op": "leave", "room": JID, "nick": NICK}             leaves a room
  {"op": "set_role", "room": JID, "nick": NICK, "role": ROLE}   muc#admin role change, prints
                                                         {"event": "done", "op": ...} or iq_error
  {"op": "set_affiliation", "room": JID, "jid": JID, "affiliation": A, "reason": TEXT}
  {"op": "affiliation_list", "room": JID, "affiliation": A}     prints the JIDs
  {"op": "role_list", "room": JID, "role": ROLE}                prints the nicks
  {"op": "subject", "room": JID, "subject": TEXT}        a subject change (groupchat message)
  {"op": "room_config", "room": JID}                     prints the muc#owner form's values
  {"op": "set_room_config", "room": JID, "fields": {VAR: VALUE}}  fills and submits the form
  {"op": "drop"}                                         aborts the TCP connection (no closing tag)
  {"op": "reconnect"}                                    connects again (resuming with --sm)
  {"op": "quit"}                                         closes the stream and exits
"""
import argparse
import asyncio
import io
import json
import ssl
import sys
import xml.etree.ElementTree as ET

import aiohttp
import slixmpp
from slixmpp.util.sasl.client import Mech, sasl_mech
from slixmpp.exceptions import IqError, IqTimeout, PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath


@sasl_mech(50)
class OAUTHBEARER(Mech):
    """RFC 7628, which slixmpp does not ship: the initial response carries the token."""

    name = 'OAUTHBEARER'
    required_credentials = {'username', 'access_token'}

    def process(self, challenge=b''):
        return (b'n,a=' + self.credentials['username'] + b',\x01auth=Bearer '
                + self.credentials['access_token'] + b'\x01\x01')


def emit(**event):
    print(json.dumps(event), flush=True)


SID = '{urn:xmpp:sid:0}'
CARBONS = '{urn:xmpp:carbons:2}'
FORWARD = '{urn:xmpp:forward:0}'
CLIENT = '{jabber:client}'
MUC_USER = '{http://jabber.org/protocol/muc#user}'


def describe(xml):
    """The interesting parts of a <message/> element."""
    body = xml.find(CLIENT + 'body')
    stanza_id = xml.find(SID + 'stanza-id')
    origin_id = xml.find(SID + 'origin-id')
    out = {
        'from': xml.get('from'),
        'to': xml.get('to'),
        'type': xml.get('type'),
        'id': xml.get('id'),
        'body': body.text if body is not None else None,
        'stanza_id': stanza_id.get('id') if stanza_id is not None else None,
        'origin_id': origin_id.get('id') if origin_id is not None else None,
    }
    subject = xml.find(CLIENT + 'subject')
    if subject is not None:
        out['subject'] = subject.text
    for child in xml:
        tag = child.tag
        if tag.startswith('{http://jabber.org/protocol/chatstates}'):
            out['chatstate'] = tag.split('}')[1]
        if tag == '{urn:xmpp:receipts}received':
            out['received'] = child.get('id')
        if tag == '{urn:xmpp:chat-markers:0}displayed':
            out['displayed'] = child.get('id')
        if tag == '{urn:xmpp:delay}delay':
            out['delay'] = child.get('stamp')
        if tag == '{urn:xmpp:message-correct:0}replace':
            out['replace'] = child.get('id')
        if tag == '{urn:xmpp:message-retract:1}retract':
            out['retract'] = child.get('id')
        if tag == '{urn:xmpp:message-retract:1}retracted':
            out['retracted'] = child.get('stamp')
        if tag == '{urn:xmpp:fallback:0}fallback':
            out['fallback'] = child.get('for')
        if tag == '{urn:xmpp:reactions:0}reactions':
            out['reactions'] = child.get('id')
            out['reaction_keys'] = sorted(
                r.text or '' for r in child.findall('{urn:xmpp:reactions:0}reaction'))
        if tag == '{jabber:client}error':
            out['error'] = [c.tag.split('}')[1] for c in child if 'text' not in c.tag]
    return out


class Client(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password or 'unused', sasl_mech=args.mechanism)
        if args.token:
            self.credentials['access_token'] = args.token
        self.args = args
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0199')
        self.register_plugin('xep_0191')
        self.register_plugin('xep_0054')
        self.register_plugin('xep_0313')
        self.register_plugin('xep_0045')
        self.register_plugin('xep_0363')
        self.register_plugin('xep_0308')
        self.register_plugin('xep_0424')
        self.register_plugin('xep_0444')
        self.register_plugin('xep_0092', {'name': 'TidingsTest', 'version': '1.2.3'})
        self.ca_certs = args.ca
        self.ssl_context.load_verify_locations(cafile=args.ca)
        self.enable_direct_tls = args.direct_tls
        self.add_event_handler('session_start', self.on_start)
        self.add_event_handler('failed_all_auth', self.on_failed)
        self.add_event_handler('failed_auth', lambda _: emit(event='failed_auth'))
        # slixmpp's `message` event skips messages without a body (chat states, receipts,
        # carbons), so every message stanza goes through this handler instead.
        self.register_handler(Callback(
            'every message', MatchXPath('{jabber:client}message'), self.on_message))
        # Likewise every presence stanza, including a room's answer to leaving it.
        self.register_handler(Callback(
            'every presence', MatchXPath('{jabber:client}presence'), self.on_presence))
        self.add_event_handler('stream_error', self.on_stream_error)
        self.add_event_handler('disconnected', self.on_disconnected)
        if args.sm:
            self.register_plugin('xep_0198')
            self.add_event_handler(
                'sm_enabled', lambda s: emit(event='sm_enabled', resume=s['resume'], id=s['id']))
            self.add_event_handler(
                'session_resumed', lambda s: emit(event='session_resumed', h=s['h']))
            self.add_event_handler('sm_failed', lambda _: emit(event='sm_failed'))
        self.dropping = False
        self.commands_started = False
        self.done = asyncio.get_event_loop().create_future()

    async def on_start(self, _):
        emit(event='session_start', jid=str(self.boundjid))
        self.send_presence()
        # A session that could not be resumed starts again; the command loop runs once.
        if not self.commands_started:
            self.commands_started = True
            asyncio.ensure_future(self.commands())

    def on_failed(self, _):
        emit(event='failed_all_auth')
        if not self.done.done():
            self.done.set_result(None)

    def on_stream_error(self, error):
        emit(event='stream_error', condition=error['condition'], text=error['text'])

    def on_disconnected(self, _):
        if self.dropping:
            emit(event='dropped')
            return
        emit(event='disconnected')
        if not self.done.done():
            self.done.set_result(None)

    def on_message(self, msg):
        xml = msg.xml
        sent = xml.find(CARBONS + 'sent')
        if sent is not None:
            inner = sent.find(FORWARD + 'forwarded').find(CLIENT + 'message')
            emit(event='carbon_sent', **describe(inner))
            return
        emit(event='message', **describe(xml))

    def on_presence(self, presence):
        out = {'from': presence.xml.get('from'), 'type': presence.xml.get('type', 'available')}
        x = presence.xml.find(MUC_USER + 'x')
        if x is not None:
            # A room's presence: the occupant's item and the status codes (XEP-0045).
            item = x.find(MUC_USER + 'item')
            if item is not None:
                out['affiliation'] = item.get('affiliation')
                out['role'] = item.get('role')
                actor = item.find(MUC_USER + 'actor')
                out['actor'] = actor.get('nick') if actor is not None else None
                reason = item.find(MUC_USER + 'reason')
                out['reason'] = reason.text if reason is not None else None
            out['codes'] = sorted(int(st.get('code')) for st in x.findall(MUC_USER + 'status'))
        emit(event='presence', **out)

    async def commands(self):
        loop = asyncio.get_event_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            op = command['op']
            try:
                await self.run(op, command)
            except IqError as e:
                emit(event='iq_error', op=op, error=str(e),
                     condition=e.iq['error']['condition'])
            except IqTimeout as e:
                emit(event='iq_error', op=op, error=str(e))
            if op == 'quit':
                return

    async def run(self, op, c):
        if op == 'send':
            msg = self.make_message(mto=c['to'], mbody=c['body'], mtype='chat')
            msg['id'] = c['id']
            ET.SubElement(msg.xml, SID + 'origin-id', id=c['id'])
            msg.send()
        elif op == 'correct':
            # XEP-0308 through slixmpp's plugin: the new body naming the original's id.
            msg = self.plugin['xep_0308'].build_correction(
                c['replace'], slixmpp.JID(c['to']), mbody=c['body'], mtype=c.get('type', 'chat'))
            msg['id'] = c['id']
            msg.send()
        elif op == 'retract':
            # XEP-0424 through slixmpp's plugin, with its fallback body.
            self.plugin['xep_0424'].send_retraction(
                slixmpp.JID(c['to']), c['id'], mtype=c.get('type', 'chat'))
        elif op == 'react':
            # XEP-0444 through slixmpp's plugin: the full set of this user's reactions.
            self.plugin['xep_0444'].send_reactions(slixmpp.JID(c['to']), c['id'], c['reactions'])
        elif op in ('displayed', 'received'):
            ns = 'urn:xmpp:chat-markers:0' if op == 'displayed' else 'urn:xmpp:receipts'
            msg = self.make_message(mto=c['to'], mtype='chat')
            ET.SubElement(msg.xml, '{%s}%s' % (ns, op), id=c['id'])
            msg.send()
        elif op == 'typing':
            msg = self.make_message(mto=c['to'], mtype='chat')
            ET.SubElement(msg.xml, '{http://jabber.org/protocol/chatstates}' + c['state'])
            msg.send()
        elif op == 'roster':
            await self.get_roster()
            items = sorted(
                (str(jid), self.client_roster[jid]['subscription'])
                for jid in self.client_roster if jid != self.boundjid.bare)
            emit(event='roster', items=[list(i) for i in items])
        elif op == 'carbons':
            iq = self.make_iq_set()
            ET.SubElement(iq.xml, CARBONS + 'enable')
            await iq.send()
            emit(event='carbons_enabled')
        elif op == 'ping':
            await self.plugin['xep_0199'].ping(self.boundjid.domain, timeout=10)
            emit(event='pong')
        elif op == 'disco':
            info = await self.plugin['xep_0030'].get_info(jid=self.boundjid.domain)
            emit(event='disco', features=sorted(info['disco_info']['features']))
        elif op == 'disco_of':
            info = await self.plugin['xep_0030'].get_info(jid=c['jid'], timeout=10)
            emit(event='disco_of', jid=c['jid'], from_=str(info['from']),
                 features=sorted(info['disco_info']['features']))
        elif op == 'version':
            iq = await self.plugin['xep_0092'].get_version(slixmpp.JID(c['jid']), timeout=10)
            version = iq['software_version']
            emit(event='version', from_=str(iq['from']), name=version['name'],
                 version=version['version'])
        elif op == 'block':
            await self.plugin['xep_0191'].block(c['jid'])
            emit(event='blocked')
        elif op == 'unblock':
            await self.plugin['xep_0191'].unblock(c['jid'])
            emit(event='unblocked')
        elif op == 'blocklist':
            items = await self.plugin['xep_0191'].get_blocked()
            emit(event='blocklist', items=sorted(str(i['jid']) for i in items['blocklist']['items']))
        elif op == 'vcard':
            iq = await self.plugin['xep_0054'].get_vcard(c['jid'], local=False)
            vcard = iq['vcard_temp']
            emit(event='vcard', fn=vcard['FN'], nickname=vcard['NICKNAME'])
        elif op == 'raw':
            self.send_raw(c['xml'])
        elif op == 'upload':
            data = c['data'].encode()
            url = await self.plugin['xep_0363'].upload_file(
                c['name'], input_file=io.BytesIO(data), size=len(data), timeout=15)
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as resp:
                    fetched = await resp.text()
            emit(event='uploaded', url=url, fetched=fetched,
                 service=str(self.plugin['xep_0363'].upload_service))
        elif op == 'mam':
            bodies, ids = [], []
            target = {'jid': slixmpp.JID(c['room'])} if 'room' in c else {
                'with_jid': slixmpp.JID(c['with'])}
            async for msg in self.plugin['xep_0313'].iterate(
                    rsm={'max': c.get('max', 2)}, reverse=c.get('reverse', False), **target):
                bodies.append(msg['mam_result']['forwarded']['stanza']['body'])
                ids.append(msg['mam_result']['id'])
            emit(event='mam', bodies=bodies, ids=ids)
        elif op == 'rooms':
            items = await self.plugin['xep_0030'].get_items(jid=self.boundjid.domain)
            services = [str(i[0]) for i in items['disco_items']['items']]
            rooms = []
            for service in services:
                got = await self.plugin['xep_0030'].get_items(jid=service)
                rooms += [[str(i[0]), i[2]] for i in got['disco_items']['items']]
            emit(event='rooms', services=services, rooms=rooms)
        elif op == 'room_info':
            info = await self.plugin['xep_0030'].get_info(jid=c['room'])
            identities = [list(i) for i in info['disco_info']['identities']]
            emit(event='room_info', features=sorted(info['disco_info']['features']),
                 identities=identities)
        elif op == 'join':
            try:
                pres, subject, occupants, history = await self.plugin['xep_0045'].join_muc_wait(
                    slixmpp.JID(c['room']), c['nick'], maxstanzas=c.get('maxstanzas'),
                    timeout=15)
            except PresenceError as e:
                emit(event='join_error', condition=e.condition)
                return
            emit(event='joined', nick=pres['from'].resource,
                 codes=sorted(int(s) for s in pres['muc']['status_codes']),
                 affiliation=pres['muc']['affiliation'], role=pres['muc']['role'],
                 subject=subject['subject'],
                 occupants=sorted([p['from'].resource, p['muc']['affiliation'], p['muc']['role']]
                                  for p in occupants),
                 history=[m['body'] for m in history],
                 history_ids=[m.xml.find(SID + 'stanza-id').get('id') for m in history])
        elif op == 'groupchat':
            msg = self.make_message(mto=c['room'], mbody=c['body'], mtype='groupchat')
            msg['id'] = c['id']
            ET.SubElement(msg.xml, SID + 'origin-id', id=c['id'])
            msg.send()
        elif op == 'leave':
            self.plugin['xep_0045'].leave_muc(slixmpp.JID(c['room']), c['nick'])
        elif op == 'set_role':
            await self.plugin['xep_0045'].set_role(c['room'], c['nick'], c['role'])
            emit(event='done', op=op)
        elif op == 'set_affiliation':
            await self.plugin['xep_0045'].set_affiliation(
                c['room'], c['affiliation'], jid=c['jid'], reason=c.get('reason', ''))
            emit(event='done', op=op)
        elif op == 'affiliation_list':
            jids = await self.plugin['xep_0045'].get_affiliation_list(
                c['room'], c['affiliation'])
            emit(event='affiliation_list', jids=sorted(str(j) for j in jids))
        elif op == 'role_list':
            nicks = await self.plugin['xep_0045'].get_roles_list(c['room'], c['role'])
            emit(event='role_list', nicks=sorted(nicks))
        elif op == 'subject':
            self.plugin['xep_0045'].set_subject(c['room'], c['subject'])
        elif op == 'room_config':
            form = await self.plugin['xep_0045'].get_room_config(c['room'])
            emit(event='room_config', values=form.get_values())
        elif op == 'set_room_config':
            form = await self.plugin['xep_0045'].get_room_config(c['room'])
            for var, value in c['fields'].items():
                form.set_values({var: value})
            await self.plugin['xep_0045'].set_room_config(c['room'], form)
            emit(event='done', op=op)
        elif op == 'drop':
            self.dropping = True
            self.transport.abort()
        elif op == 'reconnect':
            self.dropping = False
            self.connect('127.0.0.1', self.args.port)
        elif op == 'quit':
            self.disconnect()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--jid', required=True)
    parser.add_argument('--password')
    parser.add_argument('--token')
    parser.add_argument('--mechanism', default='PLAIN')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--ca', required=True)
    parser.add_argument('--direct-tls', action='store_true')
    parser.add_argument('--sm', action='store_true', help='Stream Management with resumption')
    args = parser.parse_args()
    client = Client(args)
    client.connect('127.0.0.1', args.port)
    loop = asyncio.get_event_loop()
    loop.run_until_complete(asyncio.wait_for(client.done, timeout=60))


if __name__ == '__main__':
    main()

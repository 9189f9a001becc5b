"""One MQTT device session with paho-mqtt (the Eclipse Paho Python client), driven by the
integration tests in crates/mqtt/tests/clients.rs.

It connects (MQTT 5 by default, 3.1.1 with --v311), optionally subscribes to the IM events
topic, publishes what it is told to, waits for the PUBACKs and for a number of `message`
events, and prints one JSON object per line for the test to check: the CONNACK, each PUBACK
with its reason code, and every event payload. With --die it ends without DISCONNECT, as a
device that loses its network does, so the server publishes its will.
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

EVENTS = "tidings/v1/me/events"


def out(obj):
    print(json.dumps(obj), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="")
    p.add_argument("--password", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--v311", action="store_true")
    p.add_argument("--persistent", action="store_true", help="keep the session (expiry 300 s)")
    p.add_argument("--no-subscribe", action="store_true")
    p.add_argument("--publish", nargs=2, action="append", default=[], metavar=("TOPIC", "PAYLOAD"))
    p.add_argument("--wait-messages", type=int, default=0)
    p.add_argument("--wait-for", default=None, help="wait for an event containing this text")
    p.add_argument("--will-topic", default=None)
    p.add_argument("--die", action="store_true", help="drop the connection without DISCONNECT")
    p.add_argument("--timeout", type=float, default=15)
    args = p.parse_args()

    v5 = not args.v311
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else not args.persistent,
    )
    client.username_pw_set(args.user, args.password)
    if args.will_topic:
        client.will_set(args.will_topic, b"offline", qos=1)
    connected = threading.Event()
    subscribed = threading.Event()
    acks = {}
    acked = threading.Condition()
    events = queue.Queue()

    def on_connect(c, u, flags, rc, props):
        out({"connack": rc.value if hasattr(rc, "value") else int(rc), "session_present": bool(flags.session_present)})
        connected.set()

    def on_subscribe(c, u, mid, rcs, props):
        out({"suback": [r.value if hasattr(r, "value") else int(r) for r in rcs]})
        subscribed.set()

    def on_publish(c, u, mid, rc, props):
        with acked:
            acks[mid] = rc.value if hasattr(rc, "value") else int(rc)
            acked.notify_all()

    def on_message(c, u, msg):
        events.put(msg.payload.decode())

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_publish = on_publish
    client.on_message = on_message
    props = None
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300 if args.persistent else 0
    if v5:
        client.connect(args.host, args.port, keepalive=30, clean_start=not args.persistent, properties=props)
    else:
        client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    deadline = time.time() + args.timeout
    if not connected.wait(args.timeout):
        out({"error": "no CONNACK"})
        sys.exit(1)
    if not args.no_subscribe:
        client.subscribe(EVENTS, qos=1)
        subscribed.wait(max(0.1, deadline - time.time()))

    for topic, payload in args.publish:
        info = client.publish(topic, payload.encode(), qos=1)
        with acked:
            while info.mid not in acks and time.time() < deadline:
                acked.wait(0.1)
        out({"puback": topic, "rc": acks.get(info.mid)})

    messages = 0
    found = args.wait_for is None
    while (messages < args.wait_messages or not found) and time.time() < deadline:
        try:
            payload = events.get(timeout=0.1)
        except queue.Empty:
            continue
        out({"event": json.loads(payload)})
        if '"type":"message"' in payload.replace(" ", ""):
            messages += 1
        if args.wait_for and args.wait_for in payload:
            found = True
    # Print what else arrived meanwhile.
    while not events.empty():
        out({"event": json.loads(events.get())})

    if args.die:
        # Like a device losing its network: no DISCONNECT, so the will goes out.
        sys.stdout.flush()
        os._exit(0)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()

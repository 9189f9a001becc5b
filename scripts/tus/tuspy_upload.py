"""A third-party tus client against a running Tidings server: tuspy, the tus project's Python client.

It uploads a file in chunks with per-chunk SHA-1 checksums, breaks the network in the middle of a
request (a raw socket that sends part of a PATCH body and closes), resumes from the offset the
server reports, and checks that the stored file's SHA-256 matches the original byte for byte.

Run by crates/tidings/tests/tus_clients.rs, which starts the server and passes its address and
an access token:

    python tuspy_upload.py --base http://127.0.0.1:PORT --token TOKEN --size-mb 20
"""

import argparse
import hashlib
import os
import socket
import sys
import tempfile
import time
import urllib.parse

import requests
from tusclient import client

CHUNK = 1024 * 1024


def cut_patch(url: str, token: str, offset: int, body: bytes, sent: int) -> None:
    """Sends a PATCH announcing all of `body`, delivers only `sent` bytes, and drops the connection."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        head = (
            f"PATCH {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body[:sent])
        time.sleep(0.3)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--size-mb", type=int, default=20)
    args = parser.parse_args()
    auth = {"Authorization": f"Bearer {args.token}"}
    size = args.size_mb * 1024 * 1024

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tuspy.bin")
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for _ in range(0, size, CHUNK):
                block = os.urandom(min(CHUNK, size - f.tell()))
                digest.update(block)
                f.write(block)
        expected = digest.hexdigest()

        tus = client.TusClient(args.base + "/api/v1/uploads/", headers=auth)
        first = tus.uploader(
            path, chunk_size=CHUNK, metadata={"filename": "tuspy.bin"}, upload_checksum=True
        )
        first.upload(stop_at=size * 2 // 5)
        url, reached = first.url, first.offset
        assert 0 < reached < size, reached

        # The network breaks 1.5 MiB into a 4 MiB request.
        with open(path, "rb") as f:
            f.seek(reached)
            body = f.read(4 * CHUNK)
        cut_patch(url, args.token, reached, body, 3 * CHUNK // 2)

        # A new uploader resumes from the offset the server reports (HEAD).
        resumed = tus.uploader(path, url=url, chunk_size=CHUNK, upload_checksum=True)
        resumed_from = resumed.offset
        assert reached < resumed_from <= reached + 3 * CHUNK // 2, (reached, resumed_from)
        resumed.upload()
        assert resumed.offset == size, resumed.offset

        status = requests.head(url, headers={**auth, "Tus-Resumable": "1.0.0"})
        assert status.status_code == 200, status.status_code
        assert int(status.headers["Upload-Offset"]) == size
        file_id = status.headers["Tidings-File-Id"]
        got = hashlib.sha256()
        with requests.get(f"{args.base}/api/v1/files/{file_id}", headers=auth, stream=True) as r:
            assert r.status_code == 200, r.status_code
            for block in r.iter_content(CHUNK):
                got.update(block)
        assert got.hexdigest() == expected, (got.hexdigest(), expected)
        print(
            f"tuspy: {size} bytes; the network broke after {reached + 3 * CHUNK // 2}, the server "
            f"kept up to {resumed_from} and the upload resumed there; sha256 {expected} matches"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

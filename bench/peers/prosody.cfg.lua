-- Prosody 0.12 (Debian bookworm) for the comparative benchmark (docs/benchmarks.md).
-- bench/peers/run copies this file into a fresh directory and replaces @DIR@ and @PORT@.
-- Storage is SQLite for everything, the message archive (mod_mam) included: each archived
-- message is its own committed transaction.
run_as_root = true
daemonize = false
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
log = { { levels = { min = "warn" }, to = "file", filename = "@DIR@/prosody.log" } }
admin_socket = "@DIR@/prosody.sock"
network_backend = "epoll"

c2s_ports = { @PORT@ }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }
c2s_direct_tls_ports = { }

storage = "sql"
sql = { driver = "SQLite3", database = "prosody.sqlite" }
-- Plain storage, so bench/peers/run can write thousands of accounts in one transaction;
-- sign-in cost is not what the scenarios measure.
authentication = "internal_plain"

-- STARTTLS with a certificate made by bench/peers/run, as for the other XMPP servers.
c2s_require_encryption = true
certificates = "@DIR@"
ssl = { certificate = "@DIR@/tls.crt", key = "@DIR@/tls.key" }


-- Archive every chat message, never expire.
default_archive_policy = true
archive_expires_after = "never"
-- Results per MAM page at most (default 50): the offline catch-up (scenario 4) asks for pages
-- of 500, the most Tidings gives.
max_archive_query_results = 500

modules_enabled = {
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "mam"; "smacks";
}
modules_disabled = { "s2s"; "offline"; }

VirtualHost "localhost"

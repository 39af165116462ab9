#!/usr/bin/env python3
"""ferry under faults: the four real function binaries, as Azure custom handlers on loopback,
fed at a steady rate while processes are SIGKILLed, PostgreSQL restarts in immediate mode, the
partner receiver goes away for minutes and corrupt files land in the bucket. Then it checks
what must hold, and prints a verdict. Run it through scripts/soak.sh.

This script plays the platform: it is the Functions host (queue envelopes with redelivery of
every message not answered 200, timer envelopes), the producers (the demo's mix of events,
with retries and malformed input), the bucket (moto's S3) and the partner (a receiver that
verifies every signature with the official `standardwebhooks` library). Nothing of ferry's
own code is used to judge ferry: the checks read PostgreSQL with psql.
"""

import argparse
import datetime as dt
import gzip
import hashlib
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from standardwebhooks.webhooks import Webhook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENANTS = ["acme", "globex", "initech"]
FUNCTIONS = ["ingest", "transform", "rollup", "fanout"]
MAX_CONNECTIONS = 4


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now_iso(offset=0.0):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def post(url, payload, timeout=60):
    """POSTs JSON; returns the status, or None when the connection failed."""
    data = json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, socket.timeout, OSError):
        return None


class Stack:
    """The private PostgreSQL of a fresh state directory, the ferry CLI, and psql."""

    def __init__(self, state, bin_dir, keys):
        self.state = state
        self.bin_dir = bin_dir
        self.env = dict(os.environ, FERRY_STATE_DIR=state, FERRY_WEBHOOK_KEYS=keys,
                        FERRY_WEBHOOK_ALLOW_HTTP="true", FERRY_WEBHOOK_ALLOW_NETS="127.0.0.0/8",
                        RUST_LOG="error", RUST_BACKTRACE="0")
        self.env.pop("DATABASE_URL", None)
        self.url = self.ferry("db", "url").strip()

    def ferry(self, *args):
        out = subprocess.run([os.path.join(self.bin_dir, "ferry"), *args], env=self.env,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"ferry {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
        return out.stdout

    def sql(self, query):
        out = subprocess.run(["psql", self.url, "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1",
                              "-c", query], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"psql: {out.stderr.strip()}")
        return [line.split("\t") for line in out.stdout.splitlines() if line]

    def restart_postgres(self):
        # The binaries the ferry command uses: FERRY_PG_BIN, else the newest major version.
        bin_dir = os.environ.get("FERRY_PG_BIN") or max(
            (os.path.join("/usr/lib/postgresql", v, "bin") for v in os.listdir("/usr/lib/postgresql")
             if v.isdigit()), key=lambda d: int(d.split("/")[-2]))
        pg_ctl = os.path.join(bin_dir, "pg_ctl")
        data = os.path.join(self.state, "pgdata")
        # The log goes where the server's user may write (as root, that user is postgres).
        cmd = [pg_ctl, "restart", "-D", data, "-m", "immediate", "-w", "-t", "60",
               "-l", os.path.join(data, "restart.log")]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"PostgreSQL did not restart: {out.stdout}{out.stderr}")


class Function:
    """One function binary in Azure custom-handler mode, restarted like the platform would when
    it dies (after a second)."""

    def __init__(self, name, bin_dir, env, logs):
        self.name = name
        self.path = os.path.join(bin_dir, name)
        self.port = free_port()
        self.env = dict(env, FUNCTIONS_CUSTOMHANDLER_PORT=str(self.port))
        self.logfile = open(os.path.join(logs, f"{name}.log"), "ab")
        self.proc = None
        self.kills = 0
        self.restarts = 0
        self.rss = []  # (seconds since start, kB)
        self.lock = threading.Lock()
        self.start()

    def start(self):
        self.proc = subprocess.Popen([self.path], env=self.env, stdout=self.logfile,
                                     stderr=self.logfile, stdin=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1).read()
                return
            except Exception:
                time.sleep(0.05)
        raise SystemExit(f"{self.name} did not start (see its log)")

    def url(self, route):
        return f"http://127.0.0.1:{self.port}/{route}"

    def kill(self):
        with self.lock:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1

    def supervise(self):
        with self.lock:
            if self.proc.poll() is not None:
                time.sleep(1)
                self.start()
                self.restarts += 1

    def sample(self, t0):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        self.rss.append((time.time() - t0, int(line.split()[1])))
        except OSError:
            pass

    def stop(self):
        with self.lock:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Receiver:
    """The partner: verifies every request with its endpoint's secret and records webhook-ids.
    Can be taken down (connections refused) and brought back on the same port."""

    def __init__(self):
        self.port = free_port()
        self.secrets = {}
        self.seen = {}
        self.bad = 0
        self.requests = 0
        self.lock = threading.Lock()
        self.server = None
        self.up()

    def up(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                tenant = self.path.rsplit("/", 1)[-1]
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = True
                try:
                    Webhook(receiver.secrets[tenant]).verify(body, headers)
                except Exception:
                    ok = False
                with receiver.lock:
                    receiver.requests += 1
                    if ok:
                        wid = headers.get("webhook-id", "")
                        receiver.seen[wid] = receiver.seen.get(wid, 0) + 1
                    else:
                        receiver.bad += 1
                self.send_response(200 if ok else 400)
                self.end_headers()

            def log_message(self, *args):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        self.server.shutdown()
        self.server.server_close()


class Producer:
    """The demo's mix of events, with producer retries (a resent event, deduplicated) and
    malformed events (quarantined). Remembers every valid event it sent."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.n = 0
        self.accepted = {}  # event id -> payment cents (0 for other types)
        self.sent_valid = []
        self.malformed = 0

    def event(self):
        self.n += 1
        r = self.rng
        tenant = r.choice(TENANTS)
        user = f"u{r.randrange(500)}"
        kind = r.random()
        if kind < 0.45:
            ty, src, data = "page.viewed", "/web", {"path": r.choice(["/", "/cart", "/search", "/p/1"])}
        elif kind < 0.70:
            ty, src, data = "product.viewed", "/web", {"sku": f"sku-{r.randrange(300):04d}"}
        elif kind < 0.80:
            ty, src, data = "cart.item_added", "/web", {"sku": f"sku-{r.randrange(300):04d}"}
        elif kind < 0.90:
            ty, src, data = "product.updated", "/catalog", {"sku": f"sku-{r.randrange(300):04d}",
                                                            "price": r.randrange(100, 99999)}
        else:
            ty, src, data = "payment.captured", "/payments", {"amount_cents": r.randrange(100, 50000),
                                                              "currency": "EUR"}
        e = {"specversion": "1.0", "id": f"soak-{self.n}", "source": src, "type": ty,
             "time": now_iso(-r.random() * 30), "tenantid": tenant, "userid": user,
             "sessionid": f"s-{user}-{r.randrange(3)}", "data": data}
        return e

    def batch(self, size):
        out = []
        for _ in range(size):
            roll = self.rng.random()
            if roll < 0.02 and self.sent_valid:
                out.append(self.rng.choice(self.sent_valid))  # a producer retry
                continue
            e = self.event()
            if roll < 0.05:
                self.malformed += 1
                bad = self.rng.choice(["specversion", "id", "tenantid", "time"])
                if bad == "specversion":
                    e["specversion"] = "0.3"
                elif bad == "id":
                    del e["id"]
                elif bad == "tenantid":
                    e["tenantid"] = "nobody"
                else:
                    e["time"] = "yesterday"
                out.append(e)
                continue
            cents = e["data"].get("amount_cents", 0) if e["type"] == "payment.captured" else 0
            self.accepted[e["id"]] = cents
            self.sent_valid.append(e)
            if len(self.sent_valid) > 5000:
                self.sent_valid = self.sent_valid[-2500:]
            out.append(e)
        return out


def timer_envelope(method):
    t = dt.datetime.now(dt.timezone.utc)
    iso = lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    status = {"Last": iso(t - dt.timedelta(minutes=1)), "Next": iso(t + dt.timedelta(minutes=1)),
              "LastUpdated": iso(t - dt.timedelta(minutes=1))}
    return {"Data": {"tick": {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status,
                              "IsPastDue": False}},
            "Metadata": {"tick": {"Schedule": {"AdjustForDST": True}, "IsPastDue": False},
                         "sys": {"MethodName": method, "UtcNow": iso(t), "RandGuid": "0"}}}


class Host:
    """Queue semantics: a message is delivered until it is answered 200 (after a second)."""

    def __init__(self):
        self.pending = []  # (due, function, route, id, body, dequeue count)
        self.lock = threading.Lock()
        self.delivered = 0
        self.redeliveries = 0
        self.inflight = 0

    def enqueue(self, fn, route, mid, body):
        with self.lock:
            self.pending.append((0.0, fn, route, mid, body, 0))

    def take(self):
        with self.lock:
            now = time.time()
            for i, item in enumerate(self.pending):
                if item[0] <= now:
                    self.inflight += 1
                    return self.pending.pop(i)
        return None

    def deliver(self, item):
        _, fn, route, mid, body, count = item
        envelope = {"Data": {"message": body},
                    "Metadata": {"Id": mid, "DequeueCount": str(count + 1)}}
        status = post(fn.url(route), envelope)
        with self.lock:
            self.inflight -= 1
            if status == 200:
                self.delivered += 1
            else:
                self.redeliveries += 1
                self.pending.append((time.time() + 1.0, fn, route, mid, body, count + 1))

    def size(self):
        """Messages not yet acknowledged: waiting, or being delivered now."""
        with self.lock:
            return len(self.pending) + self.inflight


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--rate", type=int, default=150, help="events per second to ingest")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--moto", required=True, help="moto server endpoint")
    args = ap.parse_args()
    seconds = args.minutes * 60
    rng = random.Random(args.seed)

    state = os.path.join(ROOT, ".ferry", "soak")
    if os.path.isdir(os.path.join(state, "pgdata")):
        subprocess.run([os.path.join(args.bin_dir, "ferry"), "db", "stop"],
                       env=dict(os.environ, FERRY_STATE_DIR=state), capture_output=True)
    shutil.rmtree(state, ignore_errors=True)
    logs = os.path.join(state, "logs")
    os.makedirs(logs)
    keys = subprocess.run([os.path.join(args.bin_dir, "ferry"), "secrets", "new-key", "soak-1"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stack = Stack(state, args.bin_dir, keys)
    stack.ferry("migrate")
    for t in TENANTS:
        stack.ferry("tenant", "add", t)
    receiver = Receiver()
    for t in TENANTS:
        out = stack.ferry("endpoint", "add", "--tenant", t, "--url",
                          f"http://127.0.0.1:{receiver.port}/hooks/{t}", "--type", "product.*")
        secret = next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("signing secret"))
        receiver.secrets[t] = secret.strip()
    import boto3
    s3 = boto3.client("s3", endpoint_url=args.moto, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="soak")

    env = dict(os.environ, DATABASE_URL=stack.url, FERRY_WEBHOOK_KEYS=keys,
               FERRY_WEBHOOK_ALLOW_HTTP="true", FERRY_WEBHOOK_ALLOW_NETS="127.0.0.0/8",
               FERRY_WEBHOOK_RETRY_SCHEDULE="1s,2s,5s,10s,20s,30s,30s,30s,30s,30s,30s,30s",
               FERRY_WEBHOOK_TIMEOUT="5s", FERRY_FANOUT_BUDGET="10s", FERRY_FANOUT_LINGER="2s",
               FERRY_DB_MAX_CONNECTIONS=str(MAX_CONNECTIONS), FERRY_DB_CONNECT_TIMEOUT="3s",
               FERRY_ROLLUP_BUDGET="10s", FERRY_LOG_FORMAT="json", RUST_LOG="warn",
               RUST_BACKTRACE="0", AWS_ENDPOINT=args.moto, AWS_ALLOW_HTTP="true",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1")
    env.pop("FERRY_STATE_DIR", None)
    fns = {name: Function(name, args.bin_dir, env, logs) for name in FUNCTIONS}
    host = Host()
    producer = Producer(args.seed)
    t0 = time.time()
    stop = threading.Event()
    traffic_on = threading.Event()
    traffic_on.set()
    counts = {"messages": 0, "files": 0, "corrupt_files": 0, "file_events": 0,
              "pg_restarts": 0, "receiver_down_s": 0}
    file_accepted = {}  # event id -> payment cents

    def producer_loop():
        per_tick = max(1, args.rate // 10)
        n = 0
        while traffic_on.is_set():
            tick = time.time()
            events = producer.batch(per_tick)
            # Batches of up to 10 events per message, as SQS producers send them.
            for i in range(0, len(events), 10):
                n += 1
                host.enqueue(fns["ingest"], "ingest", f"msg-{n}", json.dumps(events[i:i + 10]))
                counts["messages"] += 1
            time.sleep(max(0.0, 0.1 - (time.time() - tick)))

    def traffic_on_wait(seconds):
        """Sleeps `seconds`; true when the traffic stopped meanwhile."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if not traffic_on.is_set():
                return True
            time.sleep(0.1)
        return not traffic_on.is_set()

    def file_loop():
        n = 0
        while traffic_on.wait(0) and not traffic_on_wait(4):
            n += 1
            key = f"tracker/soak-{n}.ndjson.gz"
            if rng.random() < 0.15:
                body = b"\x1f\x8b\x08\x00" + rng.randbytes(rng.randrange(10, 4000))
                counts["corrupt_files"] += 1
            else:
                lines = []
                for i in range(100):
                    e = producer.event()
                    e["id"] = f"file-{n}-{i}"
                    e["source"] = "/tracker"
                    file_accepted[e["id"]] = (e["data"].get("amount_cents", 0)
                                              if e["type"] == "payment.captured" else 0)
                    lines.append(json.dumps(e))
                body = gzip.compress(("\n".join(lines) + "\n").encode())
                counts["file_events"] += 100
            put = s3.put_object(Bucket="soak", Key=key, Body=body)
            notice = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
                "bucket": {"name": "soak"},
                "object": {"key": key, "size": len(body), "eTag": put["ETag"].strip('"'),
                           "sequencer": f"{n:016X}"}}}]}
            host.enqueue(fns["transform"], "transform", f"notice-{n}", json.dumps(notice))
            counts["files"] += 1

    def host_worker():
        while not stop.is_set():
            item = host.take()
            if item is None:
                time.sleep(0.02)
                continue
            host.deliver(item)

    def timers():
        last_rollup = 0.0
        while not stop.is_set():
            if time.time() - last_rollup >= 5:
                post(fns["rollup"].url("rollup"), timer_envelope("rollup"), timeout=120)
                last_rollup = time.time()
            post(fns["fanout"].url("fanout-timer"), timer_envelope("fanout"), timeout=120)
            time.sleep(2)

    problems = []  # faults or restarts that did not happen: the run is then not valid

    def supervisor():
        next_sample = 0.0
        while not stop.is_set():
            for f in fns.values():
                try:
                    f.supervise()
                except (Exception, SystemExit) as e:
                    problems.append(f"restart of {f.name}: {e}")
            if time.time() >= next_sample:
                for f in fns.values():
                    f.sample(t0)
                next_sample = time.time() + 10
            time.sleep(0.2)

    # Faults, at random times within the first 85% of the run.
    faults = []
    window = seconds * 0.85
    kills = max(2, int(seconds / 45))
    for _ in range(kills):
        faults.append((rng.uniform(seconds * 0.05, window), "kill", rng.choice(FUNCTIONS)))
    for _ in range(max(1, int(seconds / 240))):
        faults.append((rng.uniform(seconds * 0.1, window), "postgres", None))
    down = min(120.0, seconds * 0.2)
    faults.append((rng.uniform(seconds * 0.1, max(seconds * 0.1, window - down)), "receiver", down))
    faults.sort(key=lambda f: f[0])

    done_faults = []

    def fault_loop():
        for at, kind, what in faults:
            while time.time() - t0 < at:
                if stop.is_set():
                    return
                time.sleep(0.2)
            try:
                fault(kind, what)
                done_faults.append(kind)
            except (Exception, SystemExit) as e:
                problems.append(f"fault {kind}: {e}")

    def fault(kind, what):
        if kind == "kill":
            log(f"fault: SIGKILL {what}")
            fns[what].kill()
        elif kind == "postgres":
            log("fault: PostgreSQL restart (immediate)")
            stack.restart_postgres()
            counts["pg_restarts"] += 1
        else:
            log(f"fault: partner receiver down for {what:.0f}s")
            receiver.down()

            def back(seconds=what):
                receiver.up()
                counts["receiver_down_s"] += int(seconds)
                log("fault: partner receiver back")

            # Other faults go on while the receiver is away.
            threading.Timer(what, back).start()

    sources = [threading.Thread(target=f, daemon=True) for f in (producer_loop, file_loop)]
    threads = sources + [threading.Thread(target=f, daemon=True)
                         for f in (timers, supervisor, fault_loop)]
    threads += [threading.Thread(target=host_worker, daemon=True) for _ in range(3)]
    log(f"soak: {args.minutes:g} min, {args.rate} events/s into ingest, a file every 4 s, "
        f"{len(faults)} faults; logs in {logs}")
    for t in threads:
        t.start()
    next_report = t0 + 60
    while time.time() - t0 < seconds:
        time.sleep(1)
        if time.time() >= next_report:
            next_report += 60
            log(f"  {int(time.time() - t0)}s: {counts['messages']} messages sent, "
                f"{host.delivered} acknowledged, {host.size()} waiting for redelivery, "
                f"{len(receiver.seen)} webhooks received")
    traffic_on.clear()
    for t in sources:
        t.join()
    log("traffic stopped; draining (queues, rollups, webhooks)")
    drain_deadline = time.time() + 300
    while time.time() < drain_deadline:
        if host.size() == 0:
            pending = stack.sql("SELECT count(*) FROM deliveries WHERE status <> 'delivered'")
            if pending[0][0] == "0":
                break
        time.sleep(2)
    # Rollups catch up with every event: ticks until the watermark holds the newest seq.
    for _ in range(30):
        behind = stack.sql("SELECT (SELECT coalesce(max(seq), 0) FROM events) > "
                           "(SELECT coalesce(max(last_seq), 0) FROM rollup_state)")
        if behind[0][0] == "f":
            break
        time.sleep(2)
    stop.set()
    time.sleep(3)
    for f in fns.values():
        f.sample(t0)

    # ---- the checks ----
    failures = []

    def check(ok, what):
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    print()
    print("soak checks")
    stored = {row[0]: row[1] for row in stack.sql("SELECT event_id, "
              "coalesce((data->>'amount_cents')::bigint, 0) * (type = 'payment.captured')::int "
              "FROM events")}
    expected = dict(producer.accepted)
    expected.update(file_accepted)
    missing = [i for i in expected if i not in stored]
    extra = [i for i in stored if i not in expected]
    check(not missing and not extra,
          f"events: {len(stored)} stored, {len(expected)} accepted "
          f"(missing {len(missing)}, unexpected {len(extra)})")
    sent_sum = sum(expected.values())
    stored_sum = sum(int(v) for v in stored.values())
    check(sent_sum == stored_sum, f"payments checksum: {stored_sum} stored, {sent_sum} sent (cents)")
    dup = stack.sql("SELECT count(*) FROM (SELECT tenant_id, source, event_id FROM events "
                    "GROUP BY 1, 2, 3 HAVING count(*) > 1) d")[0][0]
    check(dup == "0", f"events: no event stored twice ({dup} duplicates)")
    q_queue = int(stack.sql("SELECT count(*) FROM quarantine WHERE unit LIKE 'queue:%'")[0][0])
    check(q_queue == producer.malformed,
          f"quarantine: {q_queue} malformed events, {producer.malformed} sent")
    q_blob = int(stack.sql("SELECT count(*) FROM quarantine WHERE unit LIKE 'blob:%' "
                           "AND reason IN ('corrupt_archive', 'unknown_format')")[0][0])
    check(q_blob == counts["corrupt_files"],
          f"quarantine: {q_blob} corrupt objects, {counts['corrupt_files']} dropped in the bucket")
    mismatch = stack.sql(
        "WITH raw AS (SELECT tenant_id, date_bin('5 minutes', time, timestamptz '2000-01-01') b, "
        "type, count(*) n FROM events GROUP BY 1, 2, 3), "
        "ro AS (SELECT tenant_id, bucket b, type, events n FROM rollup_events WHERE grain = 300) "
        "SELECT count(*) FROM raw FULL JOIN ro USING (tenant_id, b, type) "
        "WHERE raw.n IS DISTINCT FROM ro.n")[0][0]
    buckets = stack.sql("SELECT count(*) FROM rollup_events WHERE grain = 300")[0][0]
    check(mismatch == "0", f"rollups: 5-minute counts equal raw counts in all {buckets} "
                           f"(tenant, bucket, type) cells ({mismatch} differ)")
    msgs = {r[0] for r in stack.sql("SELECT DISTINCT message_id FROM deliveries")}
    undelivered = stack.sql("SELECT count(*) FROM deliveries WHERE status <> 'delivered'")[0][0]
    check(undelivered == "0", f"webhooks: every due delivery delivered ({undelivered} not)")
    seen = set(receiver.seen)
    check(msgs == seen, f"webhooks: the receiver saw {len(seen)} distinct webhook-ids, "
                        f"the outbox holds {len(msgs)} messages "
                        f"(missing {len(msgs - seen)}, unknown {len(seen - msgs)})")
    redelivered = sum(1 for c in receiver.seen.values() if c > 1)
    check(receiver.bad == 0, f"webhooks: {receiver.requests} requests, {receiver.bad} with a bad "
                             f"signature ({redelivered} ids arrived more than once: at least once, "
                             f"deduplicated by webhook-id)")
    conns = stack.sql("SELECT application_name, count(*), "
                      "count(*) FILTER (WHERE state = 'idle in transaction') "
                      "FROM pg_stat_activity WHERE datname = current_database() "
                      "AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 1")
    over = [c for c in conns if int(c[1]) > MAX_CONNECTIONS or c[2] != "0"]
    check(not over, "connections: " + ", ".join(f"{c[0] or '?'} {c[1]}" for c in conns)
          + f" (each at most {MAX_CONNECTIONS}, none idle in a transaction)")
    check(len(done_faults) == len(faults) and not problems,
          f"faults: {len(done_faults)} of {len(faults)} planned happened"
          + (f"; {'; '.join(problems)}" if problems else ""))

    print()
    print("memory (RSS, MB, sampled every 10 s; a killed process starts again from zero)")
    print(f"  {'function':<10} {'kills':>5} {'first min':>9} {'last min':>9} {'peak':>7}  samples")
    for f in fns.values():
        f.stop()
        if not f.rss:
            continue
        first = [kb for t, kb in f.rss if t <= 60] or [f.rss[0][1]]
        last = [kb for t, kb in f.rss if t >= f.rss[-1][0] - 60]
        peak = max(kb for _, kb in f.rss)
        line = " ".join(f"{kb / 1024:.0f}" for _, kb in f.rss[:: max(1, len(f.rss) // 12)])
        print(f"  {f.name:<10} {f.kills:>5} {max(first) / 1024:>9.1f} {max(last) / 1024:>9.1f} "
              f"{peak / 1024:>7.1f}  {line}")
        if seconds >= 180:
            check(max(last) <= 1.5 * max(first) + 16 * 1024,
                  f"memory: {f.name} flat (last minute {max(last) / 1024:.0f} MB against "
                  f"{max(first) / 1024:.0f} MB in the first)")
    if seconds < 180:
        print("  (a run under 3 minutes is too short to judge memory)")
    print()
    print(f"traffic: {counts['messages']} messages ({host.redeliveries} redeliveries), "
          f"{counts['files']} files ({counts['corrupt_files']} corrupt), "
          f"{len(expected)} events accepted; faults: "
          f"{sum(f.kills for f in fns.values())} SIGKILLs, {counts['pg_restarts']} PostgreSQL "
          f"restarts, receiver down {counts['receiver_down_s']} s; {int(time.time() - t0)} s")
    subprocess.run([os.path.join(args.bin_dir, "ferry"), "db", "stop"], env=stack.env,
                   capture_output=True)
    if failures:
        print(f"FAILED: {len(failures)} checks (function logs: {logs})")
        sys.exit(1)
    print(f"PASSED (function logs: {logs})")


if __name__ == "__main__":
    main()

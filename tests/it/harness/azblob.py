"""Sign and send one Azure Blob REST request with SharedKey (stdlib only; Azurite's well-known
devstoreaccount1 key by default). Usage:
  python3 azblob.py METHOD URL [BODY_FILE] [Header:Value ...]
Prints the status line and response headers to stderr, the body to stdout; exit 1 on >= 400."""
import base64, hashlib, hmac, http.client, sys, urllib.parse
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

method, url = sys.argv[1].upper(), sys.argv[2]
rest = sys.argv[3:]
body = b""
if rest and ":" not in rest[0]:
    with open(rest.pop(0), "rb") as f:
        body = f.read()
headers = {k.strip(): v.strip() for k, v in (h.split(":", 1) for h in rest)}
headers.setdefault("x-ms-date", formatdate(usegmt=True))
headers.setdefault("x-ms-version", "2021-08-06")
if method in ("PUT", "POST"):
    headers["Content-Length"] = str(len(body))

u = urllib.parse.urlsplit(url)
lower = {k.lower(): v for k, v in headers.items()}
std = ["content-encoding", "content-language", "content-length", "content-md5", "content-type",
       "date", "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range"]
parts = [method] + [("" if h == "content-length" and lower.get(h) == "0" else lower.get(h, "")) for h in std]
parts += [f"{k}:{lower[k]}" for k in sorted(k for k in lower if k.startswith("x-ms-"))]
resource = f"/{ACCOUNT}{u.path}"  # path-style: /devstoreaccount1/devstoreaccount1/<container>/<blob>
query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
for k in sorted(query, key=str.lower):
    resource += f"\n{k.lower()}:{','.join(sorted(query[k]))}"
parts.append(resource)
sig = hmac.new(base64.b64decode(KEY), "\n".join(parts).encode(), hashlib.sha256).digest()
headers["Authorization"] = f"SharedKey {ACCOUNT}:{base64.b64encode(sig).decode()}"

conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
conn.request(method, u.path + ("?" + u.query if u.query else ""), body=body or None, headers=headers)
r = conn.getresponse()
print(r.status, r.reason, file=sys.stderr)
for k, v in r.getheaders():
    print(f"{k}: {v}", file=sys.stderr)
sys.stdout.buffer.write(r.read())
sys.exit(1 if r.status >= 400 else 0)

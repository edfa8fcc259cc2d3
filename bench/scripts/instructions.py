"""Instructions per request of a widget-auth binary under callgrind: a count that does not
depend on what else the machine is doing, for comparing two builds or settings when a
timed benchmark would only measure the neighbours.

    python3 bench/scripts/instructions.py target/release/widget-auth on 3000 guest
    python3 bench/scripts/instructions.py target/release/widget-auth off 3000 guest
    RUST_LOG=info WIDGET_AUTH_LOG_FORMAT=json \
        python3 bench/scripts/instructions.py target/release/widget-auth off 300 admin

Arguments: binary, WIDGET_AUTH_RATE_LIMITS (on|off), requests, guest|config|admin. Every
public request comes from its own X-Forwarded-For address (the limiter's worst case: a new
entry each time); the key's own limits are raised so that none is refused. `admin` sends
`change_origins` commands one after another on the internal listener (each commits an
event to the embedded SQLite store). Counting starts after 200 warm-up requests and stops
after the last one (callgrind_control). The log level and format are the environment's
RUST_LOG (default warn) and WIDGET_AUTH_LOG_FORMAT. Needs valgrind.
"""
import http.client, json, os, subprocess, sys, tempfile, time, socket
BIN = sys.argv[1]; MODE = sys.argv[2]; N = int(sys.argv[3]); PATH = sys.argv[4] if len(sys.argv) > 4 else "guest"
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
pub, internal = free(), free()
d = tempfile.mkdtemp()
token = "t" * 40
env = dict(os.environ, WIDGET_AUTH_PUBLIC_ADDR=f"127.0.0.1:{pub}", WIDGET_AUTH_INTERNAL_ADDR=f"127.0.0.1:{internal}",
           WIDGET_AUTH_DATA_DIR=d, WIDGET_AUTH_ADMIN_TOKEN=token, WIDGET_AUTH_RATE_LIMITS=MODE,
           WIDGET_AUTH_TRUSTED_PROXIES="127.0.0.1", RUST_LOG=os.environ.get("RUST_LOG", "warn"))
out = f"{d}/cg.out"
proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", BIN], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def conn(port): return http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(600):
    try:
        c = conn(internal); c.request("GET", "/readyz"); 
        if c.getresponse().status == 200: break
    except Exception: pass
    time.sleep(0.2)
c = conn(internal)
c.request("POST", "/internal/v1/client-keys", json.dumps({"name": "cg", "origins": ["https://acme.test"], "token_policy": {"visitor_token_ttl_seconds": 60, "session_ttl_seconds": 900, "refresh_ttl_seconds": 604800, "guests_allowed": True, "limits": {"guest_per_key_per_minute": 600000, "user_token_per_key_per_minute": 600000}}}),
          {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
key = json.loads(c.getresponse().read())
p = conn(pub)
def guest(i):
    body = json.dumps({"client_key": key["public_key"]})
    p.request("POST", "/api/v1/widget/auth/guest", body, {"Origin": "https://acme.test", "Content-Type": "application/json",
              "X-Forwarded-For": f"10.{(i>>16)&255}.{(i>>8)&255}.{i&255}"})
    r = p.getresponse(); r.read(); assert r.status == 200, r.status
def config(i):
    p.request("GET", f"/api/v1/widget/config?client_key={key['public_key']}", headers={"Origin": "https://acme.test",
              "X-Forwarded-For": f"10.{(i>>16)&255}.{(i>>8)&255}.{i&255}"})
    r = p.getresponse(); r.read(); assert r.status == 200, r.status
def admin(i):
    c.request("POST", f"/internal/v1/client-keys/{key['id']}/commands", json.dumps({"type": "change_origins", "origins": ["https://acme.test"]}),
              {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
f = {"guest": guest, "config": config, "admin": admin}[PATH]
for i in range(200): f(1_000_000 + i)  # warm up
subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], stdout=subprocess.DEVNULL)
for i in range(N): f(i)
subprocess.run(["callgrind_control", "-d", str(proc.pid)], stdout=subprocess.DEVNULL)
proc.terminate(); proc.wait()
total = 0
import glob
for fn in glob.glob(out + "*"):
    for line in open(fn):
        if line.startswith("summary:") or line.startswith("totals:"):
            total = max(total, int(line.split()[1]))
print(f"{PATH} limits={MODE}: {total/N:.0f} instructions per request ({N} requests)")

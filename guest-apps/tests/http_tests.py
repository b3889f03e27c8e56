#!/usr/bin/python3
"""HTTP tests of the composed hello component on a real Wasm host (`wasmtime serve`).

usage: http_tests.py --wasmtime BIN --component hello-composed.wasm --infer-native BIN

Starts `wasmtime serve -S cli` on free ports (three servers: default config, a valid
override through SPIN_VARIABLE_* env vars, an invalid override) and exercises every route.
/inference answers are compared with the native build of the same model (the `infer`
example), so the Wasm build must reproduce native results exactly, greedy and sampled.
Prints one `PASS name` / `FAIL name: why` line per check; exits 1 if any failed.
"""
import argparse, http.client, json, os, socket, subprocess, sys, time

from prometheus_client.parser import text_string_to_metric_families

results = {"pass": 0, "fail": 0}


def check(name, ok, why=""):
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)
    results["pass" if ok else "fail"] += 1
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, wasmtime, component, env=()):
        self.port = free_port()
        cmd = [wasmtime, "serve", "-S", "cli", "--addr", f"127.0.0.1:{self.port}"]
        for kv in env:
            cmd += ["--env", kv]
        cmd.append(component)
        self.log = open(f"/tmp/guest-http-tests-{self.port}.log", "w+")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"wasmtime exited {self.proc.returncode}: {self.log.read()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("wasmtime serve did not answer within 60 s")
            time.sleep(0.02)

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def infer(self, payload, raw=None):
        body = raw if raw is not None else json.dumps(payload).encode()
        return self.request("POST", "/inference", body, {"content-type": "application/json"})

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if results["fail"] == 0:  # keep the server log only when something failed
            os.unlink(self.log.name)


def native(infer_bin, payload, env=()):
    e = dict(os.environ)
    e.update(kv.split("=", 1) for kv in env)
    out = subprocess.run([infer_bin, json.dumps(payload)], env=e, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def encode(infer_bin, text):
    out = subprocess.run([infer_bin, "--encode", text], check=True, capture_output=True,
                         text=True).stdout.strip()
    return [int(x) for x in out.split(",")]


def check_inference_matches_native(srv, infer_bin, name, payload, env=()):
    want = native(infer_bin, payload, env)
    status, headers, body = srv.infer(payload)
    if "error" in want:
        ok = status == 422 and json.loads(body).get("error") == want["error"]
        return check(name, ok, f"got {status} {body[:300]!r}, want 422 {want}")
    try:
        got = json.loads(body)
    except ValueError:
        return check(name, False, f"got {status} non-JSON {body[:300]!r}")
    ok = (status == 200 and headers.get("content-type") == "application/json"
          and got.get("tokens") == want["tokens"] and isinstance(got.get("latency_ms"), int)
          and got["latency_ms"] >= 0 and set(got) == {"tokens", "latency_ms"})
    return check(name, ok, f"got {status} {got}, want tokens {want['tokens']}")


def test_default_server(srv, infer_bin):
    st, h, b = srv.request("GET", "/health")
    check("GET /health -> 200 OK", st == 200 and b == b"OK\n", f"{st} {b!r}")
    st, h, b = srv.request("HEAD", "/health")
    check("HEAD /health -> 200, no body", st == 200 and b == b"", f"{st} {b!r}")
    st, h, b = srv.request("GET", "/health?probe=liveness")
    check("GET /health?query -> 200", st == 200, f"{st}")

    st, h, b = srv.request("GET", "/metrics")
    ok = st == 200 and h.get("content-type", "").startswith("text/plain; version=0.0.4")
    check("GET /metrics -> 200 text/plain version=0.0.4", ok, f"{st} {h.get('content-type')}")
    try:
        fams = {f.name: f for f in text_string_to_metric_families(b.decode())}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in fams.values() for s in f.samples}
        check("/metrics parses as Prometheus text", True)
    except Exception as e:  # the parser raises ValueError and friends on bad text
        check("/metrics parses as Prometheus text", False, f"{e}: {b[:500]!r}")
        samples = {}
    info = [k for k in samples if k[0] == "spindle_hello_build_info"]
    check("/metrics has build_info with version and spin_sdk labels",
          len(info) == 1 and dict(info[0][1]).get("spin_sdk") == "5.2.0"
          and dict(info[0][1]).get("target") == "wasm32-wasip2", f"{info}")
    key = ("spindle_hello_requests_total", (("code", "200"), ("route", "/metrics")))
    check("/metrics counts the scrape itself (fresh instance per request)",
          samples.get(key) == 1.0, f"{key} = {samples.get(key)}")
    mem = samples.get(("spindle_hello_wasm_memory_bytes", ()), 0)
    check("/metrics reports linear memory (>= 64 KiB, page multiple)",
          mem >= 65536 and mem % 65536 == 0, f"{mem}")

    for method, path, allow in [("POST", "/health", "GET, HEAD"), ("DELETE", "/metrics", "GET, HEAD"),
                                ("GET", "/inference", "POST"), ("PUT", "/inference", "POST")]:
        st, h, b = srv.request(method, path)
        check(f"{method} {path} -> 405 Allow: {allow}", st == 405 and h.get("allow") == allow,
              f"{st} allow={h.get('allow')}")
    for path in ["/", "/nope", "/health/", "/inference/x"]:
        st, h, b = srv.request("GET", path)
        check(f"GET {path} -> 404", st == 404, f"{st}")

    prompt = encode(infer_bin, "the operator watches the")
    check_inference_matches_native(srv, infer_bin, "POST /inference greedy == native",
                                   {"tokens": prompt, "max_length": 12, "temperature": 0.0})
    p = {"tokens": encode(infer_bin, "a small model"), "max_length": 30, "temperature": 0.0}
    a, b2 = srv.infer(p), srv.infer(p)
    check("POST /inference greedy is deterministic", a[0] == 200 and
          json.loads(a[2])["tokens"] == json.loads(b2[2])["tokens"], f"{a[2]!r} vs {b2[2]!r}")
    # a prompt whose sampled answer (natively) differs from the greedy one, so that
    # "sampled == native" really compares sampling
    for text in ["the cluster", "the model", "a component", "the operator", "each app", "the store"]:
        sampled = {"tokens": encode(infer_bin, text), "max_length": 40, "temperature": 1.3}
        if native(infer_bin, sampled)["tokens"] != native(infer_bin, {**sampled, "temperature": 0.0})["tokens"]:
            break
    else:
        check("a prompt where sampling differs from greedy exists", False, "none found natively")
    check_inference_matches_native(srv, infer_bin, "POST /inference sampled (t=1.3) == native, != greedy",
                                   sampled)
    st1, _, s1 = srv.infer(sampled)
    st2, _, s2 = srv.infer(sampled)
    check("POST /inference sampling is reproducible (seeded)",
          st1 == st2 == 200 and json.loads(s1)["tokens"] == json.loads(s2)["tokens"], f"{s1!r} vs {s2!r}")
    check_inference_matches_native(srv, infer_bin, "POST /inference after a sentence end == native",
                                   {"tokens": encode(infer_bin, "ok."), "max_length": 10})

    for name, payload, fragment in [
        ("empty tokens", {"tokens": [], "max_length": 4}, "tokens must not be empty"),
        ("max_length 0", {"tokens": [1], "max_length": 0}, "max-length must be at least 1"),
        ("max_length over the limit", {"tokens": [1], "max_length": 65}, "exceeds the limit 64"),
        ("unknown token id", {"tokens": [1, 999999], "max_length": 4}, "unknown token id 999999"),
        ("negative temperature", {"tokens": [1], "max_length": 4, "temperature": -0.1}, "outside"),
        ("temperature too high", {"tokens": [1], "max_length": 4, "temperature": 2.5}, "outside"),
        ("temperature overflowing f32", {"tokens": [1], "max_length": 4, "temperature": 1e39}, "outside"),
    ]:
        st, h, b = srv.infer(payload)
        try:
            msg = json.loads(b).get("error", "")
        except ValueError:
            msg = ""
        check(f"POST /inference {name} -> 422 error", st == 422 and fragment in msg, f"{st} {b[:300]!r}")
        check_inference_matches_native(srv, infer_bin, f"POST /inference {name}: same error as native", payload)

    for name, raw in [("invalid JSON", b"{not json"), ("missing max_length", b'{"tokens":[1]}'),
                      ("negative token", b'{"tokens":[-1],"max_length":1}'),
                      ("unknown field", b'{"tokens":[1],"max_length":1,"top_k":3}')]:
        st, h, b = srv.infer(None, raw=raw)
        check(f"POST /inference {name} -> 400", st == 400 and b"error" in b, f"{st} {b[:200]!r}")
    big = b'{"tokens":[' + b"1," * 40000 + b'1],"max_length":1}'
    st, h, b = srv.infer(None, raw=big)
    check("POST /inference body > 64 KiB -> 413", st == 413, f"{st} {b[:200]!r}")
    many = {"tokens": [1] * 600, "max_length": 1}
    st, h, b = srv.infer(many)
    check("POST /inference 600 tokens > limit 512 -> 422", st == 422 and b"too many input tokens" in b,
          f"{st} {b[:200]!r}")


def test_configured_server(srv, infer_bin, env):
    st, _, b = srv.infer({"tokens": [1], "max_length": 5})
    check("config via wasi:config: max_length 5 over configured limit 4 -> 422",
          st == 422 and b"exceeds the limit 4" in b, f"{st} {b!r}")
    p = {"tokens": encode(infer_bin, "the model reads a"), "max_length": 4}
    check_inference_matches_native(srv, infer_bin, "config via wasi:config: trigram == native trigram", p, env)
    # the trigram and bigram answers differ for some prompt: make sure the setting is used
    differs = False
    for text in ["the model", "the operator", "a small", "the cluster", "each", "when", "the component reads"]:
        q = {"tokens": encode(infer_bin, text), "max_length": 4}
        if native(infer_bin, q, env)["tokens"] != native(infer_bin, q)["tokens"]:
            st, _, b = srv.infer(q)
            differs = st == 200 and json.loads(b)["tokens"] == native(infer_bin, q, env)["tokens"]
            break
    check("config via wasi:config: model=trigram changes the answer", differs,
          "no prompt where trigram differs from bigram, or the server answered bigram")


def test_misconfigured_server(srv):
    st, _, b = srv.infer({"tokens": [1], "max_length": 1})
    check("invalid config value -> 422 naming the key", st == 422 and b"inference_model" in b, f"{st} {b!r}")
    st, _, b = srv.request("GET", "/health")
    check("invalid config does not break /health", st == 200, f"{st}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasmtime", required=True)
    ap.add_argument("--component", required=True)
    ap.add_argument("--infer-native", required=True)
    a = ap.parse_args()
    configs = [
        ("default", (), lambda s: test_default_server(s, a.infer_native)),
        ("configured", ("SPIN_VARIABLE_INFERENCE_MODEL=trigram", "SPIN_VARIABLE_INFERENCE_MAX_LENGTH=4"),
         None),
        ("misconfigured", ("SPIN_VARIABLE_INFERENCE_MODEL=gpt",), test_misconfigured_server),
    ]
    for name, env, fn in configs:
        try:
            srv = Server(a.wasmtime, a.component, env)
        except Exception as e:
            check(f"wasmtime serve starts ({name})", False, str(e))
            continue
        check(f"wasmtime serve starts ({name})", True)
        try:
            if fn is None:
                test_configured_server(srv, a.infer_native, env)
            else:
                fn(srv)
        except Exception as e:
            check(f"{name} server tests ran to completion", False, f"{type(e).__name__}: {e}")
        finally:
            srv.stop()
    print(f"http: {results['pass']} passed, {results['fail']} failed")
    sys.exit(1 if results["fail"] else 0)


if __name__ == "__main__":
    main()

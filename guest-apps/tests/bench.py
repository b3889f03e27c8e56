#!/usr/bin/python3
"""Benchmarks the built guest components and prints them next to the seed article's claims.

usage: bench.py --wasmtime BIN --dist DIR [--runs N] [--requests N]

- size of every component in DIR (and of the precompiled hello-composed.cwasm);
- cold start: time from launching `wasmtime serve` to the first 200 from GET /health,
  (a) compiling the .wasm with the compilation cache off, (b) loading a precompiled
  .cwasm (`wasmtime compile`); median/min/max over --runs launches;
- warm latency: --requests sequential requests on one keep-alive connection to a running
  server (wasmtime serve instantiates the component per request), p50/p99;
- linear memory of an instance, from hello's own /metrics gauge.
"""
import argparse, http.client, json, os, socket, statistics, subprocess, sys, tempfile, time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmd_prefix, component, port):
    cmd = cmd_prefix + ["--addr", f"127.0.0.1:{port}", component]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_first_ok(proc, port, timeout=60):
    """Seconds from now until GET /health answers 200 (polls every 0.5 ms)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"wasmtime exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                c.close()
                return time.perf_counter() - t0
            c.close()
        except OSError:
            time.sleep(0.0005)
    raise RuntimeError("no answer")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cold(cmd_prefix, component, runs):
    times = []
    for _ in range(runs):
        port = free_port()
        t0 = time.perf_counter()
        proc = launch(cmd_prefix, component, port)
        try:
            wait_first_ok(proc, port)
            times.append((time.perf_counter() - t0) * 1000)
        finally:
            stop(proc)
    return times


def warm(port, method, path, body, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat = []
    headers = {"content-type": "application/json"} if body else {}
    for _ in range(n):
        t0 = time.perf_counter()
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        lat.append((time.perf_counter() - t0) * 1000)
        if r.status != 200:
            raise RuntimeError(f"{method} {path} -> {r.status}")
    c.close()
    return lat


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasmtime", required=True)
    ap.add_argument("--dist", required=True)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--requests", type=int, default=500)
    a = ap.parse_args()
    wt = a.wasmtime
    composed = os.path.join(a.dist, "hello-composed.wasm")
    tmp = tempfile.mkdtemp(prefix="guest-bench-")
    cwasm = os.path.join(tmp, "hello-composed.cwasm")
    subprocess.run([wt, "compile", "-C", "cache=n", composed, "-o", cwasm], check=True)

    version = subprocess.run([wt, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"# {version}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start")
    print()
    print("## Sizes")
    print(f"| artifact | bytes | KiB |")
    print(f"|---|---:|---:|")
    sizes = {}
    for f in sorted(os.listdir(a.dist)) + [cwasm]:
        p = f if os.path.isabs(f) else os.path.join(a.dist, f)
        if p.endswith((".wasm", ".cwasm")):
            sizes[os.path.basename(p)] = s = os.path.getsize(p)
            print(f"| {os.path.basename(p)} | {s} | {s / 1024:.1f} |")

    serve = [wt, "serve", "-S", "cli"]
    cold_wasm = cold(serve + ["-C", "cache=n"], composed, a.runs)
    cold_cwasm = cold(serve + ["--allow-precompiled"], cwasm, a.runs)
    print()
    print(f"## Cold start: launch of `wasmtime serve` -> first 200 from GET /health ({a.runs} runs, ms)")
    print("| mode | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, t in [("hello-composed.wasm, compile cache off", cold_wasm),
                    ("hello-composed.cwasm, precompiled", cold_cwasm)]:
        print(f"| {name} | {statistics.median(t):.1f} | {min(t):.1f} | {max(t):.1f} |")

    port = free_port()
    proc = launch(serve + ["--allow-precompiled"], cwasm, port)
    try:
        wait_first_ok(proc, port)
        infer_body = json.dumps({"tokens": [1, 2, 3], "max_length": 16, "temperature": 0.0}).encode()
        # warm-up, then measure
        warm(port, "GET", "/health", None, 20)
        health = warm(port, "GET", "/health", None, a.requests)
        infer = warm(port, "POST", "/inference", infer_body, a.requests)
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/metrics")
        metrics = c.getresponse().read().decode()
        mem = next(int(float(l.split()[-1])) for l in metrics.splitlines()
                   if l.startswith("spindle_hello_wasm_memory_bytes "))
    finally:
        stop(proc)
    print()
    print(f"## Warm latency: {a.requests} sequential requests, keep-alive, new instance per request (ms)")
    print("| request | p50 | p99 | mean | max |")
    print("|---|---:|---:|---:|---:|")
    for name, t in [("GET /health", health), ("POST /inference (16 tokens)", infer)]:
        print(f"| {name} | {pct(t, 50):.3f} | {pct(t, 99):.3f} | {statistics.mean(t):.3f} | {max(t):.3f} |")

    print()
    print("## Against the seed article's claims")
    print("| claim (seed) | seed | measured here |")
    print("|---|---|---|")
    print(f"| Rust HTTP handler size | ~2 MB | hello.wasm {sizes['hello.wasm'] / 1024:.0f} KiB; "
          f"hello-composed.wasm (3 components) {sizes['hello-composed.wasm'] / 1024:.0f} KiB |")
    print(f"| Image size (Wasm) | 1-10 MB | wasm layers: hello {(sizes['hello.wasm'] + sizes['inference.wasm']) / 1024:.0f} KiB "
          f"(+ spin.toml), kv {sizes['kv.wasm'] / 1024:.0f} KiB |")
    print(f"| Cold start (Wasm) | 1-10 ms | {statistics.median(cold_cwasm):.1f} ms precompiled, "
          f"{statistics.median(cold_wasm):.0f} ms compiling (process launch to first response) |")
    print(f"| Startup memory (Wasm) | 1-20 MB | {mem / 1048576:.2f} MiB linear memory per instance "
          f"(host process not included) |")
    print(f"| per-request (warm) | - | p50 {pct(health, 50):.2f} ms /health, {pct(infer, 50):.2f} ms /inference |")
    print()
    print(f"(load average {os.getloadavg()[0]:.2f} at the end)")
    os.remove(cwasm)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()

"""Figures 12 (workers, bench/workers.py) and 13 (restart triggers, bench/triggers.py) for
bench/report.py: each function returns a figure's markdown section and its summary rows."""

import json
import os
import statistics

WORKERS_JSON = "fig12-workers.json"
TRIGGERS_JSON = "fig13-triggers.json"
MIB = 1024.0


def _med(v):
    return statistics.median(v) if v else float("nan")


def _verdict(ok):
    return "**PASS**" if ok else "**MISS**"


def _table(header, rows):
    out = "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
    return out + "".join("| " + " | ".join(str(c) for c in r) + " |\n" for r in rows)


def _balance(counts, total_workers=4):
    if not counts:
        return "–"
    counts = counts + [0] * max(0, total_workers - len(counts))
    return f"{'/'.join(map(str, counts))} (max/mean {max(counts) / (sum(counts) / len(counts)):.2f})"


GRACEFUL_NODE = "node, graceful stop"


def _drain_cell(d):
    """How the old workers' drains ended, from graceful-run's log."""
    if not d:
        return "–"
    ms = d["drain_ms"]
    spread = f"; {_med(ms):.0f} ms median, {max(ms):.0f} ms max" if ms else ""
    return (f"{d['boundary']} at a request boundary, {d['quiet']} quiet, "
            f"{d['timeout']} at --drain-timeout{spread}")


def workers_section(raw):
    data = json.load(open(os.path.join(raw, WORKERS_JSON)))
    res = data["results"]
    modes = (("close", "new connections"), ("keepalive", "keep-alive"))
    # Whether this run recorded the largest steady samples (older runs have medians only).
    steady_max = all("steady_max_kib" in r["modes"][mode] for tools in res.values()
                     for r in tools.values() for mode, _ in modes)
    rows, thr_rows, bal_rows, drain_rows = [], [], [], []
    gr_failed = {}  # (server, mode) -> failed requests under graceful-run
    gr_restarts, peer_failed, mem_ok, gr_mem = 0, [], True, []
    slow = []
    for server, tools in res.items():
        for tool, r in tools.items():
            label = f"{server} under {tool}"
            for mode, mode_label in modes:
                m = r["modes"][mode]
                w, times = m["wrk"], m["rollout_s"]
                # Like with like: the largest steady sample against the largest rollout
                # sample, where the run recorded it (bench/workers.py since 2026-12-06).
                steady = max(m.get("steady_max_kib", m["steady_kib"]),
                             m.get("steady_after_max_kib", m["steady_after_kib"]))
                per_worker = m["steady_kib"] / max(m["steady_workers"], 1)
                # The steady state (the larger of before and after the rollouts, so that the
                # workers' own growth under minutes of load is not taken for the surge) plus
                # one worker (--max-surge 1).
                bound = steady + per_worker
                ok_mem = m["peak_kib"] <= bound
                if tool == "graceful-run":
                    gr_failed[(server, mode)] = (w["failed"], m["restarts"])
                    gr_restarts += m["restarts"]
                    mem_ok = mem_ok and ok_mem
                    gr_mem.append(f"{server} {mode_label} {m['peak_kib'] / MIB:.1f} MiB ≤ "
                                  f"{bound / MIB:.1f}")
                    if times and _med(times) > 5:
                        slow.append((server, mode, _med(times)))
                    drain_rows.append([label, mode_label, _drain_cell(m.get("drains"))])
                else:
                    peer_failed.append(f"{tool} {w['failed']} in {m['restarts']} ({mode_label})")
                parts = [f"{k} {w[k]}" for k in ("connect", "read", "write", "timeout", "non2xx")
                         if w[k]]
                rows.append([
                    label, mode_label,
                    f"{m['restarts']}" + (f" (+{m['restart_failed_count']} failed)"
                                          if m["restart_failed_count"] else "")
                    + f" in {m['load_seconds_used']:.0f} s",
                    f"{w['failed']} of {w['requests']:,}"
                    + (f" ({', '.join(parts)})" if parts else ""),
                    f"{_med(times):.2f} s [{min(times):.2f}–{max(times):.2f}]" if times else "–",
                    f"{m['steady_kib'] / MIB:.1f} / {m['steady_after_kib'] / MIB:.1f} MiB",
                    f"{m['peak_kib'] / MIB:.1f} MiB (≤ {bound / MIB:.1f}: "
                    f"{'yes' if ok_mem else 'no'}), {m['max_processes']} processes at most",
                ])
            if "throughput_1" in r:
                t1, t4 = r["throughput_1"], r["throughput_4"]
                thr_rows.append([label, f"{t1['keepalive']:,.0f}", f"{t4['keepalive']:,.0f}",
                                 f"{t1['close']:,.0f}", f"{t4['close']:,.0f}"])
            if "balance" in r:
                b = r["balance"]
                bal_rows.append([label, _balance(b["close_requests"]),
                                 _balance(b["keepalive_connections"])])
    load = data["loadavg_start"], data.get("loadavg_end", ["?"] * 3)
    per_load = data.get("per_load", False)
    bound_text = (f"at most {data['bound_s']:.0f} s under each load"
                  if per_load else f"at most {data['bound_s']:.0f} s in all")
    base_text = (f"at most {data['baseline_bound_s']:.0f} s under each load"
                 if per_load else f"at most {data['baseline_bound_s']:.0f} s in all")
    md = "## 12. Workers: rolling restarts of 4 workers under load\n\n"
    md += (
        "`bench/workers.py` (issue 17). A Node `http` server (`node server.js`, listening on "
        "fd 3 under graceful-run, on `PORT` under pm2) and a uvicorn app (`uvicorn --fd 3`; "
        "under gunicorn, `-k uvicorn.workers.UvicornWorker`), each answering its own pid, run "
        "as 4 workers: `graceful-run -w 4` (defaults: --max-surge 1, --max-unavailable 0, "
        "--handover steer, --ready auto, --drain-timeout 30s), against `pm2 start -i 4` + "
        "`pm2 reload` for Node and `gunicorn -w 4` + HUP for uvicorn, in the same run. The "
        "Node app is the plain one a tutorial gives: it handles no signal, so on TERM (and on "
        "pm2's INT) Node exits at once, as it does by default. Under graceful-run it runs a "
        "second time (`node, graceful stop`) with the few lines a production Node app adds: "
        "on TERM or INT it stops accepting, answers each keep-alive connection's next request "
        "with `Connection: close` (Node then closes that connection after the response), and "
        "closes what is still idle a second later (not with `http.Server`'s `close()`, which "
        "since Node 19 closes idle keep-alive connections at once; see below). The restarts "
        "run under one wrk load, then under the other (1 thread, 16 connections, 5 s "
        "timeout): first `Connection: close` (a new connection per request), then keep-alive. "
        f"graceful-run is asked for {data['restarts_asked']} rolling restarts under each load "
        f"(`ctl restart --wait` in a loop, {bound_text}), the baselines for "
        f"{data['baseline_restarts_asked']} ({base_text}); the table says how many ran. A "
        "failed request is anything wrk counts as an error: connect, read, write, timeout, or "
        "a non-2xx answer. The rollout time is `ctl restart --wait`'s, `pm2 reload`'s, and for "
        "gunicorn from HUP until none of the old workers is left. Memory is VmRSS summed over "
        "every process below the tool (graceful-run's workers; pm2's daemon's workers; "
        "gunicorn's master and workers), sampled every 20 ms: the steady state is the "
        f"{'largest sum' if steady_max else 'median'} "
        "over 3 s under the same load before the first restart and over 3 s after the last, "
        "the peak the largest sum during the restarts, and the target the larger steady state "
        "plus one worker (the surge).\n\n"
    )
    md += _table(["server, tool", "load", "rolling restarts", "failed requests",
                  "rollout time, median [min–max]", "steady RSS, before / after",
                  "peak RSS during the rollouts"], rows)
    short = [f"{srv} under {tool}, {label}: {r['modes'][mode]['restarts']} of "
             f"{data['restarts_asked'] if tool == 'graceful-run' else data['baseline_restarts_asked']}"
             for srv, tools in res.items() for tool, r in tools.items()
             for mode, label in modes
             if r["modes"][mode]["restarts"] + r["modes"][mode]["restart_failed_count"]
             < (data["restarts_asked"] if tool == "graceful-run"
                else data["baseline_restarts_asked"])]
    if short:
        md += (
            "\nRan out of their time bound before the restarts asked for: "
            + "; ".join(short)
            + " (see their rollout times; under graceful-run a rollout is mostly the new "
            "workers' start on this loaded machine, the drains below are short).\n"
        )
    if drain_rows:
        md += (
            "\n**How the old workers' drains ended** (graceful-run's log: one line per old "
            "worker): quiet (no busy connection left), at a request boundary (every "
            "connection left was idle or a keep-alive stream between a response and its "
            "next request), or at --drain-timeout; and how long they took:\n\n"
        )
        md += _table(["server, tool", "load", "drains"], drain_rows)

    def failed(server, mode):
        return gr_failed.get((server, mode), (0, 0))

    nc = sum(f for (srv, mode), (f, _) in gr_failed.items() if mode == "close")
    plain = [(srv, *failed(srv, "keepalive")) for srv in res
             if srv != GRACEFUL_NODE and (srv, "keepalive") in gr_failed]
    ka_plain = sum(f for _, f, _ in plain)
    ka_graceful, graceful_rollouts = failed(GRACEFUL_NODE, "keepalive")
    has_graceful = (GRACEFUL_NODE, "keepalive") in gr_failed
    md += (
        "\n**Keep-alive load.** wrk sends a keep-alive connection's next request the moment "
        "the previous answer arrives, and those connections stay with the old worker after "
        "the steering change (steering moves new connections only), so they never go idle "
        "and waiting for them would only run --drain-timeout out (before graceful-run told "
        "keep-alive streams apart, each old worker's drain did, and a rollout under this "
        "load took 65 s). graceful-run keeps each connection's byte counts between its looks: a "
        "connection whose client sent new requests during the drain is a keep-alive stream, "
        "and once every connection left is idle or such a stream between a response and its "
        "next request (nothing unread, the server wrote after the client's last data), the "
        "drain ends and the stop signal goes (src/observe.rs, \"Keep-alive streams\"). "
        "A server that exits at once at that instant cuts no response it had begun. But a "
        "keep-alive stream can only be ended gracefully by the server, and what each server "
        "does at its stop signal decides the rest: "
        + "; ".join(f"{srv} {f} failed in {n} rollouts" for srv, f, n in plain)
        + (f"; {GRACEFUL_NODE} {ka_graceful} in {graceful_rollouts}" if has_graceful else "")
        + ". The plain Node app exits at once, so the kernel closes each of its connections; "
        "uvicorn's shutdown closes its idle keep-alive connections at once (and the others "
        "after their answer). Either way a connection is closed just as wrk sends its next "
        "request on it (or has sent it, in the moment between graceful-run's look and the "
        "signal), and wrk, which never retries, counts a read error: about one per "
        "connection each time an old worker stops (16 connections; one reopened during a "
        "rollout may land on an old worker not replaced yet and be cut again"
        + "".join(f"; {srv} {f / n:.0f} per rollout" for srv, f, n in plain if n)
        + "). That is HTTP/1.1's inherent race: a server that "
        "closes an idle keep-alive connection cannot know that a request is on its way. "
        "RFC 9112 §9.3.1 lets a client retry a request that got no response on a connection "
        "that closed (at least an idempotent one), and browsers, HTTP client libraries and "
        "proxies do; wrk does not. A server that cooperates loses nothing: the graceful "
        "stop answers each connection's next request with `Connection: close`, which wrk "
        "honours by opening a new connection, to a new worker"
        + (f" ({ka_graceful} failed in {graceful_rollouts} rollouts)" if has_graceful else "")
        + ". pm2 (the same plain app, stopped with INT) and gunicorn lose requests under the "
        "same load too (table above).\n"
    )
    if not mem_ok:
        most = max((r["modes"][mode]["max_processes"] for tools in res.values()
                    for tool, r in tools.items() if tool == "graceful-run"
                    for mode, _ in modes), default=0)
        md += (
            "\n**Peak memory over the target**: the peak is the largest of the 20 ms samples "
            "over all the rollouts under one load (minutes, hundreds of new workers), the "
            f"steady state {'the largest sum' if steady_max else 'a median'} over 3 s; a Node "
            "worker's heap grows and shrinks with the "
            "load (see the steady states before and after), so one sample of workers that "
            "happened to be large at once can pass the bound. What the surge bounds, the "
            f"number of workers alive, never exceeded {most} under graceful-run (4 plus "
            "--max-surge 1).\n"
        )
    slow_close = [(srv, t) for srv, mode, t in slow if mode == "close"]
    if slow_close:
        def count(srv, text):
            counts = res[srv]["graceful-run"].get("log_counts")
            if counts is not None:
                return counts.get(text, 0)
            return sum(text in line for line in res[srv]["graceful-run"].get("log", []))
        md += (
            "\n**Slow rollouts under new connections**: "
            + "; ".join(
                f"{srv} {t:.0f} s at the median, graceful-run logging 'a look at its "
                f"processes in /proc took longer than 200ms' {count(srv, 'took longer than')} "
                f"times and 'not waiting for connections ... 5s after it started' "
                f"{count(srv, 'not waiting for connections')} times"
                for srv, t in slow_close)
            + " (over both loads). On the loaded machine a new worker takes "
            "seconds to reach its accept loop (uvicorn's Python imports), and the looks in "
            "/proc that `--ready auto` uses to see it waiting time out and are retried with a "
            "backoff; each of the 4 workers of a rollout waits for that in turn (--max-surge "
            "1). The second warning suggests a server that binds its own port, which uvicorn "
            "does not do here: it was only slow.\n"
        )
    md += (
        "\n**Throughput** (requests per second, wrk alone, 16 connections, 1 thread, "
        "no restart, 4 s each), at 1 and at 4 workers. The machine has 2 cores, shared with "
        "wrk itself and with other work, so 4 workers cannot be 4 times faster here, and "
        "other helpers' load moves these numbers most of all:\n\n"
    )
    md += _table(["server, tool", "keep-alive, 1 worker", "keep-alive, 4 workers",
                  "new connections, 1 worker", "new connections, 4 workers"], thr_rows)
    uv = res.get("uvicorn", {}).get("graceful-run")
    if uv and uv["throughput_1"]["keepalive"] < uv["throughput_1"]["close"] / 2:
        md += (
            "\n**Why uvicorn under graceful-run is slow with keep-alive** "
            f"({uv['throughput_1']['keepalive']:,.0f} requests/s against "
            f"{uv['throughput_1']['close']:,.0f} on new connections): `uvicorn --fd 3` wraps "
            "the inherited socket with `socket.fromfd(fd, AF_UNIX, ...)` whatever its real "
            "family, so asyncio takes the accepted TCP connections for unix ones and never "
            "sets `TCP_NODELAY` on them; uvicorn writes a response's head and body in two "
            "sends, and the body waits for the client's delayed ACK (about 40 ms: 16 "
            "connections / 40 ms ≈ 400 requests/s). uvicorn's own bug, also reported by "
            "sglang (sgl-project/sglang#20421), not graceful-run's: under gunicorn, the "
            "UvicornWorker gets a socket that gunicorn created as TCP.\n"
        )
    md += (
        "\n**Balance across the 4 workers**: which pid answered, over 800 requests on new "
        "connections (8 client threads) and over 32 keep-alive connections opened one after "
        "the other (each stays with the worker that accepted it), most-loaded first. "
        "graceful-run's workers share their generation's listening socket (one accept "
        "queue; each worker's event loop takes what it is woken for); pm2's cluster mode "
        "has its master accept and hand out connections round-robin; gunicorn's workers "
        "share one socket too:\n\n"
    )
    md += _table(["server, tool", "requests on new connections per worker",
                  "keep-alive connections per worker"], bal_rows)
    md += (
        f"\nRun: {data['date']}, load average {' '.join(load[0])} before and "
        f"{' '.join(load[1])} after (1, 5, 15 min), on the 2 cores shared with other "
        "helpers' builds and tests: throughput and rollout times move with that load (a "
        "loaded machine also makes graceful-run's looks in /proc slower, and the drain "
        "longer); failed requests and memory much less.\n"
    )
    summary = [
        ("12. failed requests, rolling restarts of 4 workers, new connections (Node, uvicorn)",
         "0", f"{nc}", ", ".join(p for p in peer_failed if "new conn" in p),
         _verdict(nc == 0)),
        ("12. failed requests, rolling restarts of 4 workers, keep-alive, servers as they are "
         "(Node exiting at once, uvicorn; wrk never retries)",
         "0", ", ".join(f"{srv} {f} in {n}" for srv, f, n in plain),
         ", ".join(p for p in peer_failed if "keep-alive" in p), _verdict(ka_plain == 0)),
    ]
    if has_graceful:
        summary.append(
            ("12. failed requests, rolling restarts of 4 workers, keep-alive, Node with a "
             "graceful stop (Connection: close after TERM)",
             "0", f"{ka_graceful} in {graceful_rollouts}", "", _verdict(ka_graceful == 0)))
    summary.append(("12. peak RSS during rollouts", "≤ steady + 1 worker", "; ".join(gr_mem),
                    "", _verdict(mem_ok)))
    return md, summary


def triggers_section(raw):
    data = json.load(open(os.path.join(raw, TRIGGERS_JSON)))
    trig = data["triggers"]
    expect = {
        "health": ("≤ 1 s (the next check) + start", 1000),
        "memory": ("≤ 3 s (3 samples over the limit in a row, 1 a second) + start", 3000),
        "watchdog": ("1 s after the last ping (0.5–1 s after the trigger) + start", 1000),
        "lifetime": ("2.7–3 s (90–100 % of 3 s) + start", 3000),
    }
    rows = []
    all_ok = True
    for name, t in trig.items():
        runs = t["runs"]
        to = [r["to_serving_ms"] for r in runs]
        dec = [r["decision_ms"] for r in runs if r["decision_ms"] is not None]
        d2s = [r["decision_to_serving_ms"] for r in runs if r["decision_to_serving_ms"] is not None]
        what, bound = expect[name]
        trigger = {"health": "`GET /break` answered (then /health says 500)",
                   "memory": "`GET /grow` answered (100 MiB allocated, limit 64M)",
                   "watchdog": "`GET /hang` answered (pings stop)",
                   "lifetime": "the generation first answered"}[name]
        # Each trigger must act within its own period plus a second for the new generation.
        ok = max(to) <= bound + 1000
        if name == "watchdog" and t.get("watchdog_usec", "unset") == "unset":
            # No WATCHDOG_USEC: the server never pinged, and was replaced for that alone.
            ok = False
            what += " (**invalid: the generation got no WATCHDOG_USEC, so it never pinged**)"
        all_ok = all_ok and ok
        rows.append([
            f"`{' '.join(t['flags'])}`", trigger,
            f"{_med(to):.0f} ms [{min(to):.0f}–{max(to):.0f}]",
            f"{_med(dec):.0f} ms" if dec else "–",
            f"{_med(d2s):.0f} ms" if d2s else "–",
            what, _verdict(ok)])
    idle = data["idle"]
    window = idle["window_s"]
    irows = []
    base = next(r for r in idle["rows"] if r["name"] == "none")
    mem = next(r for r in idle["rows"] if r["name"] == "max-memory 1G")
    mem4 = next(r for r in idle["rows"] if r["name"] == "max-memory 1G, -w 4")
    none_ok = base["switches"] == 0
    for r in idle["rows"]:
        per = f"{r['switches'] / r['events']:.1f}" if r["events"] else "–"
        irows.append([r["name"], r["expected"], str(r["switches"]), per,
                      str(r.get("switches_live_threads", r["switches"])),
                      f"{r['cpu_ns'] / 1e6:.2f} ms", str(r["ticks"])])
    health = next((r for r in idle["rows"] if r["name"].startswith("health-http, default")), None)
    per_min = lambda r: (r["cpu_ns"] - base["cpu_ns"]) / 1e6 * 60 / window
    md = "## 13. Restart triggers: time to act, and what they cost idle\n\n"
    md += (
        "`bench/triggers.py` (issue 18). A small Python HTTP server (`http.server` on "
        "graceful-run's fd 3, answering its pid; it pings `WATCHDOG=1` every half of "
        "`WATCHDOG_USEC` when that is set) is made to trigger a replacement "
        f"{data['repeats']} times per flag; the time runs from the trigger to the first answer "
        "from a new pid (a client polling every 10 ms on new connections), and, in the "
        "next columns, to and from the moment graceful-run logs its decision (its stderr read "
        "as it comes). 'start' is the new Python generation's own start (about 0.1–0.3 s "
        "here).\n\n"
    )
    md += _table(["flags", "trigger at", "trigger → new pid serving, median [min–max]",
                  "trigger → logged decision", "decision → serving", "expected",
                  "within expected + 1 s"], rows)
    md += (
        f"\n**Idle cost.** One graceful-run per flag set, each with the idle server, side by "
        f"side for one window of {window:.0f} s: context switches and CPU time (task-clock) "
        "of graceful-run, every thread counted, from `perf stat -p` (graceful-run runs some "
        "looks in /proc on a short-lived thread, which figure 3's way, summing "
        "`/proc/PID/task/*/status` at both ends, cannot see: its count is beside), and "
        "/proc/PID/stat's utime+stime ticks (10 ms, exited threads included). The expected "
        "count is the number of events the flag implies; each event costs a few switches "
        "(a health check connects, writes, reads and closes).\n\n"
    )
    md += _table(["flags", "expected events in the window", "context switches (perf)",
                  "switches per event", "switches of the threads alive at both ends",
                  "CPU time (perf)", "ticks"], irows)
    md += (
        f"\n**Memory sampling cost**: with `--max-memory` set, graceful-run used "
        f"{per_min(mem):.2f} ms of CPU per minute more than with no flag "
        f"({per_min(mem4):.2f} ms with 4 workers, each sampled on its own), reading "
        "smaps_rollup once a second.\n"
    )
    dog = next((r for r in idle["rows"] if r["name"].startswith("watchdog")), None)
    if trig.get("watchdog", {}).get("watchdog_usec", "unset") == "unset":
        md += (
            "\n**The watchdog rows are invalid**: the graceful-run measured gave its "
            "generations no WATCHDOG_USEC, so the server never pinged and was replaced as "
            "hung after each --watchdog period (perf, which follows new processes, then "
            "counts a Python start too).\n"
        )
    elif dog and dog["events"] and dog["switches"] / dog["events"] > 8:
        md += (
            f"\n**The watchdog costs more than it should**: {dog['switches']} context switches "
            f"and {dog['cpu_ns'] / 1e6:.1f} ms of CPU for {dog['events']:.0f} `WATCHDOG=1` "
            f"pings ({dog['switches'] / dog['events']:.0f} switches and "
            f"{dog['cpu_ns'] / 1e6 / dog['events']:.1f} ms per ping), against about "
            f"{health['switches'] / max(health['events'], 1):.0f} switches per health check: "
            "each ping seems to do far more than read one datagram and re-arm a timer.\n"
        )
    md += (
        f"\nRun: {data['date']}, load average {' '.join(data['loadavg_start'])} before and "
        f"{' '.join(data.get('loadavg_end', ['?'] * 3))} after (1, 5, 15 min), on 2 cores "
        "shared with other helpers' builds and tests: the times to act include waiting for a "
        "CPU (the new Python generation's start most of all); the idle counts do not depend "
        "on the load (a sleeping process is not woken by others).\n"
    )
    summary = [
        ("13. trigger → new generation serving (health, memory, watchdog, lifetime)",
         "period + start, ≤ +1 s",
         ", ".join(f"{n} {_med([r['to_serving_ms'] for r in t['runs']]) / 1000:.2f} s"
                   for n, t in trig.items()), "", _verdict(all_ok)),
        ("13. idle wakeups per minute: no flag; --max-memory; --health-http (30s)", "0; 60; 2 checks",
         f"{base['switches'] * 60 / window:.0f}; {mem['switches'] * 60 / window:.0f}; "
         f"{health['switches'] * 60 / window:.0f}" if health else "",
         f"memory sampling {per_min(mem):.1f} ms CPU/min", _verdict(none_ok)),
    ]
    return md, summary

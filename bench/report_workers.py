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


def workers_section(raw):
    data = json.load(open(os.path.join(raw, WORKERS_JSON)))
    res = data["results"]
    rows, thr_rows, bal_rows = [], [], []
    gr_failed, gr_restarts, peer_failed, mem_ok = 0, 0, [], True
    gr_mem = []
    for server, tools in res.items():
        for tool, r in tools.items():
            w = r["wrk"]
            times = r["rollout_s"]
            steady, peak = r["steady_kib"], r["peak_kib"]
            per_worker = steady / max(r["steady_workers"], 1)
            # Steady state plus one worker (--max-surge 1); the sampled sum includes any
            # process the tool keeps beside its workers (pm2's none; gunicorn's master).
            bound = steady + per_worker
            ok_mem = peak <= bound
            label = f"{server} under {tool}"
            failed = w["close"]["failed"] + w["keepalive"]["failed"]
            if tool == "graceful-run":
                gr_failed += failed
                gr_restarts += r["restarts"]
                mem_ok = mem_ok and ok_mem
                gr_mem.append(f"{server} {peak / MIB:.1f} MiB ≤ {bound / MIB:.1f}")
            else:
                peer_failed.append(f"{tool} {failed} in {r['restarts']}")

            def fails(x):
                parts = [f"{k} {x[k]}" for k in ("connect", "read", "write", "timeout", "non2xx")
                         if x[k]]
                return f"{x['failed']} of {x['requests']:,}" + (f" ({', '.join(parts)})"
                                                               if parts else "")
            rows.append([
                label,
                f"{r['restarts']}" + (f" (+{r['restart_failed_count']} failed)"
                                      if r["restart_failed_count"] else "")
                + f" in {r['load_seconds_used']:.0f} s",
                fails(w["close"]), fails(w["keepalive"]),
                f"{_med(times):.2f} s [{min(times):.2f}–{max(times):.2f}]" if times else "–",
                f"{steady / MIB:.1f} MiB",
                f"{peak / MIB:.1f} MiB (≤ {bound / MIB:.1f}: {'yes' if ok_mem else 'no'}), "
                f"{r['max_processes']} processes at most",
            ])
            t1, t4 = r["throughput_1"], r["throughput_4"]
            thr_rows.append([label, f"{t1['keepalive']:,.0f}", f"{t4['keepalive']:,.0f}",
                             f"{t1['close']:,.0f}", f"{t4['close']:,.0f}"])
            b = r["balance"]
            bal_rows.append([label, _balance(b["close_requests"]),
                             _balance(b["keepalive_connections"])])
    load = data["loadavg_start"], data.get("loadavg_end", ["?"] * 3)
    md = "## 12. Workers: rolling restarts of 4 workers under load\n\n"
    md += (
        "`bench/workers.py` (issue 17). A Node `http` server (`node server.js`, listening on "
        "fd 3 under graceful-run, on `PORT` under pm2) and a uvicorn app (`uvicorn --fd 3`; "
        "under gunicorn, `-k uvicorn.workers.UvicornWorker`), each answering its own pid, run "
        "as 4 workers: `graceful-run -w 4` (defaults: --max-surge 1, --max-unavailable 0, "
        "--handover steer, --ready auto), against `pm2 start -i 4` + `pm2 reload` for Node "
        "and `gunicorn -w 4` + HUP for uvicorn, in the same run. Two wrk instances run at "
        "once during the restarts (1 thread, 8 connections each, 5 s timeout): one sends "
        "`Connection: close` (a new connection per request), one keeps its connections "
        f"alive. graceful-run is asked for {data['restarts_asked']} rolling restarts "
        f"(`ctl restart --wait` in a loop, at most {data['bound_s']:.0f} s), the baselines "
        f"for {data['baseline_restarts_asked']} (at most {data['baseline_bound_s']:.0f} s: "
        "each `pm2 reload` or HUP rollout takes seconds, and the figure must fit in a few "
        "minutes); the table says how many ran. A failed request is anything wrk counts "
        "as an error: connect, read, write, timeout, or a non-2xx answer. The rollout time "
        "is `ctl restart --wait`'s, `pm2 reload`'s, and for gunicorn from HUP until none of "
        "the old workers is left. Memory is VmRSS summed over every process below the tool "
        "(graceful-run's workers; pm2's daemon's workers; gunicorn's workers), sampled every "
        "20 ms: the steady state is the median over 3 s under the same load before the first "
        "restart, the peak the largest sum during the restarts, and the target the steady "
        "state plus one worker (the surge).\n\n"
    )
    md += _table(["server, tool", "rolling restarts", "failed, new connections",
                  "failed, keep-alive", "rollout time, median [min–max]", "steady RSS",
                  "peak RSS during the rollouts"], rows)
    md += (
        "\n**Throughput** (requests per second, wrk alone, 16 connections, 1 thread, "
        "no restart), at 1 and at 4 workers. The machine has 2 cores, shared with wrk itself "
        "and with other work, so 4 workers cannot be 4 times faster here:\n\n"
    )
    md += _table(["server, tool", "keep-alive, 1 worker", "keep-alive, 4 workers",
                  "new connections, 1 worker", "new connections, 4 workers"], thr_rows)
    gr_runs = [(server, tools["graceful-run"]) for server, tools in res.items()
               if "graceful-run" in tools]
    ka = sum(r["wrk"]["keepalive"]["failed"] for _, r in gr_runs)
    nc = sum(r["wrk"]["close"]["failed"] for _, r in gr_runs)
    slow = [(server, r) for server, r in gr_runs if r["rollout_s"] and _med(r["rollout_s"]) > 5]
    if ka or slow:
        md += (
            "\n**Why the targets are missed.** "
            f"Under graceful-run, {nc} requests failed on new connections and {ka} on "
            "keep-alive connections. wrk sends a keep-alive connection's next request the "
            "moment the previous answer arrives, and those connections stay with the old "
            "worker after the steering change (steering moves new connections only), so "
            "the old worker's connections are busy at nearly every look and its drain lasts "
            "until a look happens to fall between two requests on every connection, or "
            "until --drain-timeout (30 s) runs out. That is what makes these rollouts last "
            + ", ".join(f"{_med(r['rollout_s']):.0f} s ({server})" for server, r in slow)
            + " at the median instead of the 1 s (Node) and 2.2 s (uvicorn) that a trial of "
            "the same script measured at load average 9, and why fewer than "
            f"{data['restarts_asked']} fit in the time bound. Then the stop signal cuts "
            "what is in flight: Node's default on TERM is to exit at once, uvicorn's "
            "shutdown closes each keep-alive connection after its answer, and wrk, which "
            "has already sent the next request on it and never retries, counts a read error "
            "(HTTP/1.1 lets a client retry an idempotent request on a keep-alive "
            "connection the server closed, and browsers and proxies do). The baselines lose "
            "more, new connections included for gunicorn. Losing nothing here needs the "
            "server to answer its last request with `Connection: close` before exiting, "
            "which graceful-run cannot do from outside.\n"
        )
    over = [(server, r) for server, r in gr_runs
            if r["peak_kib"] > r["steady_kib"] * (1 + 1 / max(r["steady_workers"], 1))]
    if over:
        md += (
            "\n**Peak memory.** "
            + "; ".join(f"{server}: at most {r['max_processes']} worker processes alive at "
                        f"once (4 + the surge of 1)" for server, r in over)
            + ": the rollout never stacked workers, so the peak above the steady state plus "
            "one worker is the workers' own growth over minutes of load (Node's heap grows "
            "under wrk), against a steady state sampled in the first 3 s of that load. "
            "bench/workers.py should sample the steady state again after the rollouts "
            "(not done in this run).\n"
        )
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
        "helpers' builds and tests: throughput and rollout times move with that load; "
        "failed requests and memory much less.\n"
    )
    summary = [
        (f"12. failed requests, rolling restarts of 4 workers (Node, uvicorn)", "0",
         f"{gr_failed} ({gr_restarts} rollouts)", ", ".join(peer_failed), _verdict(gr_failed == 0)),
        ("12. peak RSS during rollouts", "≤ steady + 1 worker", "; ".join(gr_mem), "",
         _verdict(mem_ok)),
    ]
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
                      f"{r['cpu_ns'] / 1e6:.2f} ms", str(r["ticks"])])
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
        f"side for one window of {window:.0f} s: context switches summed over all of "
        "graceful-run's threads (each wakeup is at least one; figure 3 counts them the same "
        "way) and CPU time from `/proc/PID/task/*/schedstat` (ns), with /proc/PID/stat's "
        "utime+stime ticks (10 ms) beside it. The expected count is the number of events "
        "the flag implies; each event costs a few switches (a health check connects, "
        "writes, reads and closes).\n\n"
    )
    md += _table(["flags", "expected events in the window", "context switches",
                  "switches per event", "CPU time", "ticks"], irows)
    md += (
        f"\n**Memory sampling cost**: with `--max-memory` set, graceful-run used "
        f"{per_min(mem):.2f} ms of CPU per minute more than with no flag "
        f"({per_min(mem4):.2f} ms with 4 workers, each sampled on its own), reading "
        "smaps_rollup once a second.\n"
    )
    md += (
        f"\nRun: {data['date']}, load average {' '.join(data['loadavg_start'])} before and "
        f"{' '.join(data.get('loadavg_end', ['?'] * 3))} after (1, 5, 15 min), on 2 cores "
        "shared with other helpers' builds and tests: the times to act include waiting for a "
        "CPU (the new Python generation's start most of all); the idle counts do not depend "
        "on the load (a sleeping process is not woken by others).\n"
    )
    health = next((r for r in idle["rows"] if r["name"].startswith("health-http, default")), None)
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

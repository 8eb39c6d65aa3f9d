#!/usr/bin/env python3
"""The chaos soak's judge. `ci/soak.sh` drives the runs, the janitors and the faults and leaves a
world of result files behind; this program reads that world and checks the invariants of
docs/reliability.md. It starts nothing and touches no docker object: all it knows is in the world
dir (plus whether the lockfiles there are free).

    ci/soak_check.py check WORLD    print the invariants with counts; exit 0, or 1 on any violation
    ci/soak_check.py left REPORT    what a `ccci janitor --json` report still had to do (a count,
                                    or nothing when the sweep found nothing to do)
    ci/soak_check.py ports N        N free local TCP ports, one a line
    ci/soak_check.py --self-test    judge synthetic worlds: a clean one must pass, and every planted
                                    violation must be flagged (a checker that cannot fail is a defect)

The world, as ci/soak.sh writes it:
    meta                key=value: tag, suffix, seed, runs, parallel, schedule (hash)
    schedule.tsv        one row per run (its header names the columns: id, app, kind, fault, via, ...)
    res/<run id>        key=value lines from the driver: exit status, times, fault evidence
    err/<run id>        the run's stderr
    runs/<run id>/      ccci's run dir: run.log, results.json, run.lock (<id>.<n>: a later attempt)
    logs/calls.log      "<epoch s> <caller> <stage> abra|docker <args...>": every abra call and
                        every docker removal, by a run (its id) or a janitor (its role)
    jan/<role>-<n>.{json,rc,err}   sweeps of the janitor loops (role jan1, jan2) and the final ones
    watch.jsonl, watch.rc, watch.err   the `ccci janitor --watch` process
    victims/<run id>    the file a `hardlink` run found linked at its lock path
    lock/               the app lock dir as the soak left it
    leftovers.txt, locks.json, procs.txt   docker objects, `ccci locks --json`, processes at the end
"""

import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from datetime import datetime, timezone

FAULTS = ["kill9", "term", "dronekill", "int2", "deadline", "wedged", "foreign", "hardlink", "dlmax", "dlcap"]
EXIT_OF = {"pass": {0, 4}, "fail": {1}, "error": {70}, "infra": {69}, "lock-timeout": {75},
           "cancelled": {130, 143}, "deadline": {142}}
SIGNAL_OUTCOME = {"term": ("cancelled", 143), "dronekill": ("cancelled", 143), "int2": ("cancelled", 130),
                  "deadline": ("deadline", 142)}
REQUIRED = ["schema", "recipe", "run_id", "attempt", "finished", "stages", "outcome", "exit_code", "teardown",
            "domain", "flags", "rungs", "level", "started", "duration_ms", "provenance"]
# What ccci keeps in the lock dir for the whole host: never a leftover (it is checked to be free).
HOST_FILES = {"cc-ci-host.lock"}
LOCKFILE = "cc-ci-app-{}.lock"
DESTRUCTIVE_ABRA = (["app", "new"], ["app", "deploy"], ["app", "undeploy"], ["app", "remove"])


def kv(path):
    """key=value lines, or None when the file does not exist."""
    try:
        with open(path, errors="replace") as f:
            return dict(line.rstrip("\n").partition("=")[::2] for line in f if "=" in line)
    except FileNotFoundError:
        return None


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return default


def to_int(s):
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


def ts(s):
    """A run.log timestamp in epoch seconds."""
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def is_free(path):
    """Whether nobody holds a flock on the file (None: cannot tell)."""
    try:
        with open(path) as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:
                return False
    except OSError:
        return None


def file_state(path):
    """(sha1 of the content, mtime in ns) of a file, or None when it is gone."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).hexdigest(), os.stat(path).st_mtime_ns
    except OSError:
        return None


def work_left(report):
    """What a janitor report shows still to do: apps, lockfiles and stragglers it acted on."""
    return len(report["apps"]) + len(report["lockfiles"]) + len(report["stragglers"])


def fmt(d):
    return "{" + ",".join(f"{k}:{n}" for k, n in d.items()) + "}"


def bump(d, k, n=1):
    d[k] = d.get(k, 0) + n


class Judge:
    def __init__(self, world):
        self.w = world
        self.meta = kv(f"{world}/meta") or {}
        self.suffix = self.meta.get("suffix", "")
        self.ns = self.suffix.replace(".", "_")
        self.tag = self.meta.get("tag", "")
        self.violations = []
        with open(f"{world}/schedule.tsv") as f:
            rows = [line.rstrip("\n").split("\t") for line in f]
        self.head = rows[0]
        self.sched = [dict(zip(self.head, r)) for r in rows[1:]]
        self.happened = {f: 0 for f in FAULTS}
        self.scheduled = {f: 0 for f in FAULTS + ["none"]}
        self.late = {f: 0 for f in FAULTS}
        self.outcomes, self.teardowns, self.exits = {}, {}, {}
        self.holds = {}  # domain -> [(t0, t1, run id)]
        self.waited = self.runs_checked = self.killed = 0
        self.panics = 0
        self.foreign = {"probes": 0, "refused": 0, "host_lock": 0, "run_lock": 0, "run_dir_closed": 0}
        self.hardlink = {"runs": 0, "victims_intact": 0, "sweeps_during": 0, "skips_reported": 0}
        self.refused_params = 0
        self.hardlink_domains = set()

    def v(self, msg):
        self.violations.append(msg)

    # ---- one run ---------------------------------------------------------------------------------
    def run_dirs(self, rid):
        first = f"{self.w}/runs/{rid}"
        later = sorted(glob.glob(f"{self.w}/runs/{glob.escape(rid)}.*"))
        return ([first] if os.path.isdir(first) else []) + [d for d in later if re.fullmatch(r"\.\d+", d[len(first):])]

    def calls_of(self, caller):
        return [c for c in self.calls if c["caller"] == caller]

    def hold_interval(self, rid, rdir):
        """(lock acquired, lock released) in epoch seconds, and whether it waited for the lock. The
        release is ccci's "app lock released" line, logged just after the lockfile is closed (the
        reports are written after it); without that line (a run killed before it), the last
        run.log line stands for it."""
        t_acq = t_last = t_rel = None
        waited = False
        for line in read(f"{rdir}/run.log").splitlines():
            m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) ", line)
            if not m:
                continue
            t_last = ts(m.group(1))
            if "app lock held:" in line and t_acq is None:
                t_acq = t_last
            if "app lock released:" in line and t_acq is not None and t_rel is None:
                t_rel = t_last
            if "is in flight" in line:
                waited = True
        t_end = t_rel if t_rel is not None else t_last
        return (t_acq, t_end) if t_acq is not None and t_end is not None else None, waited

    def check_run(self, s):
        rid, fault, kind = s["id"], s["fault"], s["kind"]
        dom = s["app"] + "." + self.suffix
        if fault not in self.scheduled:
            self.v(f"{rid}: unknown fault {fault!r} in the schedule (ci/soak.sh and ci/soak_check.py disagree)")
            return
        self.scheduled[fault] += 1
        res = kv(f"{self.w}/res/{rid}")
        if res is None:
            self.v(f"{rid}: the run never reported (soak aborted?)")
            return
        rc = to_int(res.get("rc"))
        err = read(f"{self.w}/err/{rid}")
        if rc == 101 or "panicked" in err:
            self.panics += 1
            self.v(f"{rid}: ccci panicked (exit {rc}): {err.strip()[-300:]}")
        if not res.get("cpid"):
            self.v(f"{rid}: the soak never found the run's ccci process (no fault could be injected)")
        if res.get("overran") == "1":
            self.v(f"{rid}: overran its bound and was SIGKILLed (fault {fault})")
        if res.get("leak"):
            self.v(f"{rid}: processes of the run outlived it: {res['leak']}")
        dirs = self.run_dirs(rid)
        if len(dirs) > 1:
            self.v(f"{rid}: {len(dirs)} attempt dirs for a run id the soak used once: {dirs}")
        if fault in ("dlmax", "dlcap"):
            return self.check_refused_param(s, res, rc, err, dirs)
        if not dirs:
            if not (fault == "kill9" and res.get("injected") == "1" and rc == 137):
                last = (err.strip().splitlines() or ["(no stderr)"])[-1][-300:]
                self.v(f"{rid}: no run dir (fault {fault}, exit {rc}): {last}")
            return
        rdir = dirs[0]
        hold, waited = self.hold_interval(rid, rdir)
        self.waited += waited
        if hold:
            self.holds.setdefault(dom, []).append((hold[0], hold[1], rid))
        if fault == "foreign":
            self.check_foreign(rid, res, hold)
        injected = res.get("injected")
        if fault == "kill9" and injected == "1" and rc == 137:
            self.happened["kill9"] += 1
            self.killed += 1
            bump(self.outcomes, "killed")
            return
        if fault == "kill9" and injected == "1":
            self.late["kill9"] += 1  # the SIGKILL met a ccci that was already exiting
        self.runs_checked += 1
        try:
            with open(f"{rdir}/results.json") as f:
                r = json.load(f)
        except Exception as e:
            self.v(f"{rid}: no complete results.json ({e.__class__.__name__}); fault {fault}, exit {rc}")
            return
        missing = [k for k in REQUIRED if k not in r]
        if missing or len(r.get("stages", [])) != 5 or "result" not in r.get("teardown", {}):
            self.v(f"{rid}: incomplete results.json (missing {missing})")
            return
        out, code, td = r["outcome"], r["exit_code"], r["teardown"]["result"]
        bump(self.outcomes, out)
        bump(self.teardowns, td)
        bump(self.exits, code)
        if r["run_id"] != rid or r["domain"] != dom or r["attempt"] != 1:
            self.v(f"{rid}: results.json names run {r['run_id']} attempt {r['attempt']} / domain {r['domain']}, "
                   f"expected {rid} attempt 1 / {dom}")
        if code not in EXIT_OF.get(out, set()):
            self.v(f"{rid}: outcome {out} with exit_code {code}")
        if out == "pass" and (code == 0) != (td == "clean"):
            self.v(f"{rid}: outcome pass, exit {code}, teardown {td}")
        if fault == "dronekill":
            if rc != 137:
                self.v(f"{rid}: the SIGKILLed wrapper exited {rc} (expected 137)")
        elif rc != code:
            self.v(f"{rid}: exited {rc} but results.json says exit_code {code} (fault {fault}, via {s['via']})")
        if fault == "hardlink":
            return self.check_hardlink(s, res, r, rc)
        natural = "pass" if kind == "hello" else "fail"
        natural_code = 0 if kind == "hello" else 1
        if fault == "wedged":
            want = 4 if kind == "hello" else 1
            if out != natural or td != "abandoned" or code != want:
                self.v(f"{rid}: wedged teardown: expected {natural}/abandoned/exit {want}, got {out}/{td}/exit {code}")
            else:
                self.happened["wedged"] += 1
            return
        if fault in SIGNAL_OUTCOME and (out, code) == SIGNAL_OUTCOME[fault]:
            self.happened[fault] += 1
            return
        # No signal landed (none scheduled, a probe that must not disturb the run, or a signal
        # too late to matter): the recipe's natural verdict — a live run that lost its app to a
        # janitor would fail here.
        if fault in SIGNAL_OUTCOME or fault == "kill9":
            self.late[fault] += 1
        if (out, code) != (natural, natural_code) or (kind == "hello" and td != "clean"):
            self.v(f"{rid}: fault {fault} ({'landed' if injected == '1' else 'not injected'}): expected {natural}/exit "
                   f"{natural_code}{'/clean' if kind == 'hello' else ''}, got {out}/exit {code}/teardown {td}")

    def check_refused_param(self, s, res, rc, err, dirs):
        """An absurd --deadline: exit 2 with a message naming it, nothing created, no abra call."""
        rid, fault = s["id"], s["fault"]
        ok = True
        if rc != 2:
            ok = False
            self.v(f"{rid}: --deadline {s['deadline']} ({fault}) exited {rc}, expected 2")
        if "deadline" not in err:
            ok = False
            self.v(f"{rid}: --deadline {s['deadline']} refused without naming it: {err.strip()[:200]!r}")
        if dirs:
            ok = False
            self.v(f"{rid}: --deadline {s['deadline']} ({fault}) created a run dir: {dirs}")
        if self.calls_of(rid):
            ok = False
            self.v(f"{rid}: --deadline {s['deadline']} ({fault}) still called {self.calls_of(rid)[0]['text']}")
        if ok:
            self.happened[fault] += 1
            self.refused_params += 1

    def check_foreign(self, rid, res, hold):
        """Another uid tried to read the run's lockfiles while it held its app lock."""
        if not res.get("probe_t"):
            self.late["foreign"] += 1  # the run ended before its trigger
            return
        self.foreign["probes"] += 1
        proven = False
        for what, key in (("app lock", "probe_app"), ("host lock", "probe_host"), ("run.lock", "probe_run")):
            # stat's exit:the mode it saw:cat's exit:cat's stderr (stat needs only the dirs' x bit,
            # so a failing stat means the probe could not tell anything about the file)
            stat_rc, mode, cat_rc, cat_err = (res.get(key, "").split(":", 3) + ["", "", "", ""])[:4]
            if cat_rc == "0":
                self.v(f"{rid}: uid 65534 read the {what} ({res.get(key + '_path', '?')}, mode {mode})")
            if stat_rc == "0" and mode != "600":
                self.v(f"{rid}: the {what} has mode {mode}, not 600")
            if what == "run.lock" and stat_rc not in ("", "0"):
                self.foreign["run_dir_closed"] += 1  # the run dir (0750) already keeps it out
            if not (stat_rc == "0" and cat_rc not in ("", "0") and "Permission denied" in cat_err):
                continue
            if what == "host lock":
                self.foreign["host_lock"] += 1
            elif what == "run.lock":
                self.foreign["run_lock"] += 1
            elif hold and hold[0] * 1000 <= int(res["probe_t"]) <= hold[1] * 1000:
                proven = True
        if proven:
            self.foreign["refused"] += 1
            self.happened["foreign"] += 1
        else:
            self.late["foreign"] += 1  # the lockfile was gone or the hold over: nothing proven

    def check_hardlink(self, s, res, r, rc):
        """A hard link at the lock path: the run fails without touching the linked file, and no
        janitor truncates, unlinks or reaps through it."""
        rid = s["id"]
        self.hardlink["runs"] += 1
        ok = True
        reason = " ".join(str(st.get("reason", "")) for st in r["stages"])
        if (rc, r["outcome"], r["teardown"]["result"]) != (1, "fail", "skipped") or "hard link" not in reason:
            ok = False
            self.v(f"{rid}: a hard link at its lock path: expected fail/exit 1/teardown skipped naming the hard "
                   f"link, got {r['outcome']}/exit {rc}/teardown {r['teardown']['result']}: {reason[:200]!r}")
        before = (res.get("victim_sum"), to_int(res.get("victim_mtime_ns")))
        for when, state in (("when the run ended", (res.get("victim_sum_after"), to_int(res.get("victim_mtime_ns_after")))),
                            ("at the end of the soak", file_state(f"{self.w}/victims/{rid}"))):
            if state is None or tuple(state) != before or not before[0]:
                ok = False
                self.v(f"{rid}: the file linked at the lock path changed {when}: {before} -> {state}")
        dom = s["app"] + "." + self.suffix
        for c in self.calls_of(rid):
            # Its run-start janitor may legitimately reap another domain's orphan: only a call on
            # the hard-linked domain itself means the run went on.
            if c["destructive"] and dom in c["domains"]:
                ok = False
                self.v(f"{rid}: went on past a hard-linked lockfile: {c['text']}")
        if res.get("link_intact") != "1":
            ok = False
            self.v(f"{rid}: the hard link at its lock path was gone or replaced before the soak removed it")
        if res.get("link_removed") != "1":
            ok = False
            self.v(f"{rid}: the soak could not remove the hard link it planted")
        sweeps = to_int(res.get("link_sweeps")) or 0
        self.hardlink["sweeps_during"] += sweeps
        if ok:
            self.hardlink["victims_intact"] += 1
            if sweeps > 0:
                self.happened["hardlink"] += 1
            else:
                self.late["hardlink"] += 1  # no janitor loop swept while the link was there

    # ---- every caller's removals -----------------------------------------------------------------
    def read_calls(self):
        self.calls = []
        for line in read(f"{self.w}/logs/calls.log").splitlines():
            p = line.split()
            if len(p) < 5:
                continue
            t, caller, stage, prog, args = float(p[0]), p[1], p[2], p[3], p[4:]
            destructive = prog == "docker" or (prog == "abra" and args[:2] in DESTRUCTIVE_ABRA)
            doms = set()
            for a in args:
                if a.endswith("." + self.suffix):
                    doms.add(a)
                m = re.match(r"([a-z0-9]{1,4}-[0-9a-f]{6})_" + re.escape(self.ns), a)
                if m:
                    doms.add(m.group(1) + "." + self.suffix)
            self.calls.append({"t": t, "caller": caller, "stage": stage, "prog": prog, "args": args,
                               "destructive": destructive, "domains": doms, "text": f"{prog} {' '.join(args)}"})

    def check_removals(self):
        """Nothing of a run app is removed by anyone but its holder while a live run holds its lock."""
        self.removals = {}
        under = 0
        for c in self.calls:
            if not c["destructive"] or c["args"][:2] in (["app", "new"], ["app", "deploy"]):
                continue
            role = c["caller"] if not c["caller"].startswith(self.tag + "-") else "runs"
            bump(self.removals, role)
            for d in c["domains"]:
                for (t0, t1, rid) in self.holds.get(d, []):
                    if rid != c["caller"] and t0 < c["t"] < t1:
                        under += 1
                        self.v(f"{c['caller']} ran `{c['text']}` at {c['t']:.3f} while {rid} held the lock of {d} "
                               f"({t0:.3f}..{t1:.3f})")
        return under

    # ---- janitors --------------------------------------------------------------------------------
    def check_janitors(self):
        j = {"sweeps": 0, "reaped": 0, "unlinked": 0, "stragglers": 0, "nonzero": 0}
        self.jan_errors = []
        final = []
        for f in sorted(glob.glob(f"{self.w}/jan/*.json")):
            base = f[:-5]
            name = os.path.basename(base)
            rc = to_int(read(base + ".rc").strip())
            err = read(base + ".err")
            if rc == 101 or "panicked" in err:
                self.panics += 1
                self.v(f"janitor {name} panicked (exit {rc}): {err.strip()[-300:]}")
            try:
                with open(f) as fh:
                    r = json.load(fh)
            except Exception as e:
                j["nonzero"] += 1
                self.jan_errors.append(f"{name}: exit {rc}, unreadable report ({e.__class__.__name__}): {err.strip()[-200:]}")
                continue
            j["sweeps"] += 1
            if name.startswith("final-"):
                final.append((to_int(name[6:]), rc, work_left(r)))
            j["reaped"] += sum(1 for a in r["apps"] if a["action"] == "reaped")
            j["unlinked"] += sum(1 for lf in r["lockfiles"] if lf["action"] == "unlinked")
            j["stragglers"] += sum(1 for s in r["stragglers"] if s["action"] in ("terminated", "killed"))
            for e in r["apps"] + r["lockfiles"]:
                if e["domain"] in self.hardlink_domains:
                    if e["action"] == "skipped" and "hard link" in (e.get("reason") or ""):
                        if not name.startswith("final-"):
                            self.hardlink["skips_reported"] += 1
                    else:
                        self.v(f"janitor {name}: {e['action']} the hard-linked lock path of {e['domain']}: {e.get('reason')}")
            if rc != 0:
                j["nonzero"] += 1
                errs = r["errors"] + [f"{a['domain']}: {a['reason']}" for a in r["apps"] if a["action"] == "failed"]
                self.jan_errors.append(f"{name}: exit {rc}: {'; '.join(errs)[:300]}")
        final.sort()
        if not any(rc == 0 and left == 0 for _, rc, left in final):
            self.v(f"the final janitor sweeps never came out clean (exit 0 with nothing to do): {final}")
        return j

    def check_watch(self):
        w = {"sweeps": 0, "released": 0, "reaped": 0, "decided": 0, "stragglers": 0}
        if not os.path.exists(f"{self.w}/watch.rc"):
            self.v("the janitor --watch process never reported (it did not run?)")
            return w
        rc = to_int(read(f"{self.w}/watch.rc").strip())
        err = read(f"{self.w}/watch.err")
        if rc == 101 or "panicked" in err:
            self.panics += 1
            self.v(f"janitor --watch panicked (exit {rc}): {err.strip()[-300:]}")
        elif rc != 0:
            self.v(f"janitor --watch exited {rc} at SIGTERM (expected 0): {err.strip()[-300:]}")
        events = []
        for line in read(f"{self.w}/watch.jsonl").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                self.v(f"janitor --watch printed a line that is not JSON: {line[:200]!r}")
        kinds = [e.get("event") for e in events]
        if "started" not in kinds or "stopped" not in kinds:
            self.v(f"janitor --watch: no started/stopped line (events: {sorted(set(map(str, kinds)))})")
        for e in events:
            if e.get("event") == "sweep":
                w["sweeps"] += 1
            elif e.get("event") == "released":
                w["released"] += 1
            elif e.get("event") == "decided":
                w["decided"] += 1
                w["reaped"] += e.get("action") == "reaped"
                w["stragglers"] += e.get("stragglers") or 0
                if e.get("domain") in self.hardlink_domains:
                    self.v(f"janitor --watch decided {e.get('action')} on the hard-linked lock path of {e['domain']}")
        return w

    # ---- the end state ---------------------------------------------------------------------------
    def check_end_state(self):
        left = [x.strip() for x in read(f"{self.w}/leftovers.txt").splitlines() if x.strip()]
        server_dir = f"{self.w}/abra/servers/default"
        server_files = sorted(os.listdir(server_dir)) if os.path.isdir(server_dir) else []
        envs = [f for f in server_files if f.endswith(".env")]
        # The fixture abra keeps a private marker `<domain>.env.fixture-first` next to the .env
        # (real abra has no such file); the janitor's docker routine deletes the .env only.
        markers = [f for f in server_files if f not in envs]
        for x in left:
            self.v(f"docker leftover: {x}")
        for e in envs:
            self.v(f"app .env leftover: {e}")
        lock_dir = f"{self.w}/lock"
        lockfiles = sorted(f for f in os.listdir(lock_dir) if f not in HOST_FILES) if os.path.isdir(lock_dir) else []
        for f in lockfiles:
            self.v(f"lockfile left: {f}")
        for f in HOST_FILES:
            if os.path.exists(f"{lock_dir}/{f}") and is_free(f"{lock_dir}/{f}") is False:
                self.v(f"{f} still held")
        held = []
        try:
            held = [x["domain"] for x in json.loads(read(f"{self.w}/locks.json"))["locks"] if x["state"] != "free"]
        except Exception as e:
            self.v(f"ccci locks --json failed: {e.__class__.__name__}: {read(self.w + '/locks.err').strip()[:200]}")
        for h in held:
            self.v(f"app lock still held: {h}")
        runlocks_held = 0
        for p in glob.glob(f"{self.w}/runs/*/run.lock"):
            if is_free(p) is False:
                runlocks_held += 1
                self.v(f"run.lock still held: {p}")
        procs = [x.strip() for x in read(f"{self.w}/procs.txt").splitlines() if x.strip()]
        for p in procs:
            self.v(f"process of the soak left: {p}")
        return left, envs, markers, lockfiles, held, runlocks_held, procs

    # ---- all -------------------------------------------------------------------------------------
    def judge(self):
        self.read_calls()
        self.hardlink_domains = {s["app"] + "." + self.suffix for s in self.sched if s["fault"] == "hardlink"}
        for s in self.sched:
            self.check_run(s)
        under = self.check_removals()
        jan = self.check_janitors()
        watch = self.check_watch()
        left, envs, markers, lockfiles, held, runlocks_held, procs = self.check_end_state()
        if self.hardlink["runs"] and not self.hardlink["skips_reported"]:
            self.v("no janitor loop ever reported skipping a hard-linked lock path")
        for f, n in self.happened.items():
            if n == 0:
                self.v(f"fault type {f} never happened")
        leaks = sum(1 for s in self.sched if (kv(f"{self.w}/res/{s['id']}") or {}).get("leak"))
        calls = sum(self.removals.values())
        return [
            "soak: invariants",
            f"  run apps left (stacks/containers/volumes/secrets/configs/networks): {len(left)}; .env left: {len(envs)}"
            + (f" (fixture-only marker files left: {len(markers)})" if markers else ""),
            f"  processes of soak runs left: {len(procs)}; runs whose processes outlived them: {leaks}",
            f"  app locks held: {len(held)}; lockfiles left: {len(lockfiles)}; run.lock held: {runlocks_held}",
            f"  runs checked (not SIGKILLed): {self.runs_checked}; killed: {self.killed}; refused at the start: "
            f"{self.refused_params}; outcomes {fmt(self.outcomes)}; teardown {fmt(self.teardowns)}; "
            f"exit codes {fmt(dict(sorted(self.exits.items())))}",
            f"  removals under a live holder: {under} (of {calls} removal calls checked: {fmt(self.removals)})",
            f"  faults scheduled {fmt(self.scheduled)}; happened {fmt(self.happened)}; "
            f"landed too late to matter {fmt(self.late)}",
            f"  foreign uid: probes {self.foreign['probes']}, app lock refused while held {self.foreign['refused']}, "
            f"host lock refused {self.foreign['host_lock']}, run.lock refused {self.foreign['run_lock']} "
            f"(not even reached: {self.foreign['run_dir_closed']})",
            f"  hard links: runs {self.hardlink['runs']}, victims intact {self.hardlink['victims_intact']}, "
            f"janitor-loop sweeps during a link {self.hardlink['sweeps_during']}, reports skipping it "
            f"{self.hardlink['skips_reported']}",
            f"  panics (exit 101) of runs, janitors and the watch: {self.panics}",
            f"  same-domain lock waits: {self.waited}",
            f"  janitor sweeps: {jan['sweeps']} (apps reaped {jan['reaped']}, lockfiles unlinked {jan['unlinked']}, "
            f"stragglers stopped {jan['stragglers']}, non-zero exits {jan['nonzero']})",
            f"  janitor --watch: {watch['sweeps']} backstop sweeps, {watch['released']} holders seen dying, "
            f"{watch['decided']} decisions, {watch['reaped']} reaped, {watch['stragglers']} stragglers stopped",
        ] + [f"    janitor: {e}" for e in self.jan_errors[:10]]

    def evidence(self):
        """What each run named in a violation did (the world is removed unless SOAK_KEEP=1)."""
        out = []
        named = sorted({m for x in self.violations for m in re.findall(re.escape(self.tag) + r"-\d+", x)},
                       key=lambda r: int(r.rsplit("-", 1)[1]))
        for rid in named[:8]:
            s = next((s for s in self.sched if s["id"] == rid), None)
            if s:
                out.append(f"  -- {rid}: " + " ".join(f"{k}={s[k]}" for k in self.head[2:]))
            out.append(f"     result: {read(self.w + '/res/' + rid, '-').strip().replace(chr(10), ' ')}")
            lines = read(f"{self.w}/runs/{rid}/run.log").splitlines()
            keep = [x for x in lines if " WARN " in x or " ERROR " in x or "====" in x or "app lock" in x][-25:]
            out += [f"     | {x[:220]}" for x in keep + lines[-3:]]
        return out


def check(world):
    j = Judge(world)
    lines = j.judge()
    print("\n".join(lines))
    if j.violations:
        print(f"soak: {len(j.violations)} violation(s):")
        print("\n".join(f"  VIOLATION {x}" for x in j.violations))
        print("\n".join(j.evidence()))
    m = j.meta
    print(f"soak: seed={m.get('seed')} runs={m.get('runs')} passed={j.outcomes.get('pass', 0)} "
          f"faults={fmt(j.happened)} violations={len(j.violations)}")
    return 1 if j.violations else 0


# ---- the self-test: synthetic worlds ------------------------------------------------------------

def synthetic_world(d):
    """A world in which every fault happened and every invariant holds."""
    tag, suffix = "sk1", "sk1.soak.test"
    for sub in ("res", "err", "runs", "logs", "jan", "victims", "lock", "abra/servers/default"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    with open(f"{d}/meta", "w") as f:
        f.write(f"tag={tag}\nsuffix={suffix}\nseed=7\nruns={len(FAULTS) + 1}\nparallel=3\nschedule=0\n")
    head = ["i", "id", "key", "recipe", "app", "kind", "stages", "fault", "forced", "via", "trig", "delay_ms", "deadline"]
    rows = []
    t0 = 1_700_000_000.0
    calls = []
    for i, fault in enumerate(["none"] + FAULTS):
        rid = f"{tag}-{i}"
        app = "hard-00000a" if fault == "hardlink" else f"hell-{i:06x}"
        dom = f"{app}.{suffix}"
        deadline = {"dlmax": "18446744073709551615", "dlcap": "601"}.get(fault, "150")
        rows.append([str(i), rid, str(i), "hello", app, "hello", "install", fault, "1", "direct", "-", "0", deadline])
        start, end = t0 + 100 * i, t0 + 100 * i + 30
        res = {"id": rid, "cpid": str(1000 + i), "wpid": "", "t_start": str(int(start * 1000)), "injected": "0",
               "overran": "0", "leak": "", "t_end": str(int(end * 1000))}
        outcome, code, td = "pass", 0, "clean"
        if fault in ("dlmax", "dlcap"):
            res["rc"] = "2"
            with open(f"{d}/err/{rid}", "w") as f:
                f.write(f'ccci: invalid deadline (from --deadline) "{deadline}": must be an integer from 1 to 600\n')
            with open(f"{d}/res/{rid}", "w") as f:
                f.write("".join(f"{k}={v}\n" for k, v in res.items()))
            continue
        if fault == "kill9":
            res.update(injected="1", rc="137")
        elif fault in SIGNAL_OUTCOME:
            outcome, code = SIGNAL_OUTCOME[fault]
            td = "clean"
        elif fault == "wedged":
            code, td = 4, "abandoned"
        elif fault == "hardlink":
            outcome, code, td = "fail", 1, "skipped"
            victim = f"{d}/victims/{rid}"
            with open(victim, "w") as f:
                f.write("a file the soak owns\n")
            state = file_state(victim)
            res.update(victim_sum=state[0], victim_mtime_ns=str(state[1]), victim_sum_after=state[0],
                       victim_mtime_ns_after=str(state[1]), link_intact="1", link_removed="1", link_sweeps="2")
        elif fault == "foreign":
            res.update(probe_t=str(int((start + 5) * 1000)),
                       probe_app="0:600:1:/bin/cat: x: Permission denied", probe_app_path=f"{d}/lock/x",
                       probe_host="0:600:1:/bin/cat: y: Permission denied",
                       probe_run="0:600:1:/bin/cat: z: Permission denied")
        res.setdefault("rc", str(code))
        if fault in ("term", "int2", "deadline", "dronekill"):
            res["injected"] = "1"
        if fault == "dronekill":
            res["rc"] = "137"
        with open(f"{d}/res/{rid}", "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in res.items()))
        rdir = f"{d}/runs/{rid}"
        os.makedirs(rdir)
        open(f"{rdir}/run.lock", "w").close()

        def stamp(t):
            return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        log = [f"{stamp(start)} INFO ==== fetch"]
        if fault == "hardlink":
            # Its run-start janitor reaps an orphan of another domain (nobody holds it then).
            calls.append(f"{start + 0.5:.3f} {rid} - abra app remove -n -o -f hell-000001.{suffix}")
        if fault != "hardlink":
            log.append(f"{stamp(start + 1)} INFO app lock held: {d}/lock/{LOCKFILE.format(dom)} (after 0s)")
            calls.append(f"{start + 2:.3f} {rid} install abra app new hello -D {dom}")
            calls.append(f"{end - 2:.3f} {rid} teardown abra app undeploy -n {dom}")
            if fault != "kill9":
                log.append(f"{stamp(end - 1)} INFO app lock released: {d}/lock/{LOCKFILE.format(dom)}")
            if fault == "wedged":
                # An abandoned teardown leaves the app; a janitor may reap it once the lock is
                # released, while the run is still writing its reports: not a violation.
                calls.append(f"{end - 0.5:.3f} jan1 - docker service rm {app}_{suffix.replace('.', '_')}_app")
        log.append(f"{stamp(end)} INFO ==== done")
        with open(f"{rdir}/run.log", "w") as f:
            f.write("\n".join(log) + "\n")
        if fault == "kill9":
            calls.append(f"{end + 10:.3f} jan1 - docker service rm {app}_{suffix.replace('.', '_')}_app")
            continue
        reason = "app lock x: has 2 hard links (a lockfile has one)" if fault == "hardlink" else ""
        results = {k: 1 for k in REQUIRED}
        results.update(run_id=rid, attempt=1, domain=dom, outcome=outcome, exit_code=code, teardown={"result": td},
                       stages=[{"name": n, "reason": reason} for n in ("install", "upgrade", "backup", "restore", "custom")])
        with open(f"{rdir}/results.json", "w") as f:
            json.dump(results, f)
    with open(f"{d}/schedule.tsv", "w") as f:
        f.write("\n".join("\t".join(r) for r in [head] + rows) + "\n")
    with open(f"{d}/logs/calls.log", "w") as f:
        f.write("\n".join(calls) + "\n")
    empty = {"apps": [], "lockfiles": [], "stragglers": [], "errors": []}
    loop = dict(empty, lockfiles=[{"domain": f"hard-00000a.{suffix}", "action": "skipped",
                                   "reason": "has 2 hard links (a lockfile has one; another file may be linked here)"}])
    for name, report in (("jan1-1", loop), ("jan2-1", empty), ("final-1", empty)):
        with open(f"{d}/jan/{name}.json", "w") as f:
            json.dump(report, f)
        with open(f"{d}/jan/{name}.rc", "w") as f:
            f.write("0\n")
    with open(f"{d}/watch.jsonl", "w") as f:
        f.write('{"event":"started"}\n{"event":"sweep"}\n{"event":"stopped"}\n')
    with open(f"{d}/watch.rc", "w") as f:
        f.write("0\n")
    open(f"{d}/lock/cc-ci-host.lock", "w").close()
    with open(f"{d}/locks.json", "w") as f:
        json.dump({"locks": []}, f)
    for name in ("leftovers.txt", "procs.txt"):
        open(f"{d}/{name}", "w").close()


def edit_res(key, value, run):
    def f(d):
        p = f"{d}/res/sk1-{run}"
        with open(p, "a") as fh:
            fh.write(f"{key}={value}\n")
    return f


def append(rel, text):
    def f(d):
        with open(f"{d}/{rel}", "a") as fh:
            fh.write(text)
    return f


def edit_json(rel, change):
    def f(d):
        with open(f"{d}/{rel}") as fh:
            r = json.load(fh)
        change(r)
        with open(f"{d}/{rel}", "w") as fh:
            json.dump(r, fh)
    return f


def self_test():
    run = {f: i for i, f in enumerate(["none"] + FAULTS)}
    hardlink_victim = f"victims/sk1-{run['hardlink']}"
    cases = [
        ("a foreign uid reads the app lock", edit_res("probe_app", "0:600:0:", run["foreign"]), "uid 65534 read the app lock"),
        ("a foreign uid reads the host lock", edit_res("probe_host", "0:600:0:", run["foreign"]), "uid 65534 read the host lock"),
        ("a lockfile with mode 644", edit_res("probe_app", "0:644:1:Permission denied", run["foreign"]), "mode 644"),
        ("the foreign probe never reached a held lockfile", edit_res("probe_app", "1:::", run["foreign"]),
         "fault type foreign never happened"),
        ("the hard-link victim changed", append(hardlink_victim, "truncated and rewritten\n"), "linked at the lock path changed"),
        ("the hard-link run deployed", append("logs/calls.log", f"1700000905.000 sk1-{run['hardlink']} install abra app deploy -n hard-00000a.sk1.soak.test\n"),
         "went on past a hard-linked lockfile"),
        ("the hard-link run passed", edit_res("rc", "0", run["hardlink"]), "a hard link at its lock path"),
        ("a janitor unlinked the hard link", edit_json("jan/jan2-1.json", lambda r: r["lockfiles"].append(
            {"domain": "hard-00000a.sk1.soak.test", "action": "unlinked", "reason": None})), "the hard-linked lock path"),
        ("someone unlinked the hard link", edit_res("link_intact", "0", run["hardlink"]), "gone or replaced"),
        ("no janitor swept while the link was there", edit_res("link_sweeps", "0", run["hardlink"]),
         "fault type hardlink never happened"),
        ("--deadline u64::MAX panics", edit_res("rc", "101", run["dlmax"]), "panicked"),
        ("--deadline above the cap is accepted", edit_res("rc", "0", run["dlcap"]), "exited 0, expected 2"),
        ("a refused run made a run dir", lambda d: os.makedirs(f"{d}/runs/sk1-{run['dlcap']}"), "created a run dir"),
        ("a refused run called abra", append("logs/calls.log", f"1700000001.000 sk1-{run['dlmax']} - abra app ls -m\n"),
         "still called"),
        ("a janitor panics", append("jan/jan1-1.err", "thread 'main' panicked at src/janitor/plan.rs\n"), "janitor jan1-1 panicked"),
        ("the watch exits 101", lambda d: open(f"{d}/watch.rc", "w").write("101\n"), "--watch panicked"),
        ("the watch never ran", lambda d: os.remove(f"{d}/watch.rc"), "--watch process never reported"),
        ("a janitor removes a live run's app", append("logs/calls.log", "1700000010.000 watch - docker service rm hell-000000_sk1_soak_test_app\n"),
         "while sk1-0 held the lock"),
        ("a janitor removes an app just before its lock is released", append("logs/calls.log",
            f"{1_700_000_000 + 100 * run['wedged'] + 28.5:.3f} jan2 - docker service rm hell-{run['wedged']:06x}_sk1_soak_test_app\n"),
         f"while sk1-{run['wedged']} held the lock"),
        ("a live run loses its app", edit_json("runs/sk1-0/results.json", lambda r: r.update(outcome="fail", exit_code=1)),
         "expected pass/exit 0/clean"),
        ("SIGTERM ends in a pass", edit_json(f"runs/sk1-{run['term']}/results.json", lambda r: r.update(outcome="pass", exit_code=0)),
         "fault type term never happened"),
        ("a lockfile is left", lambda d: open(f"{d}/lock/cc-ci-app-x.lock", "w").close(), "lockfile left"),
        ("a docker object is left", append("leftovers.txt", "service hell-000000_sk1_soak_test_app\n"), "docker leftover"),
        ("the final sweep never came out clean", lambda d: open(f"{d}/jan/final-1.rc", "w").write("1\n"), "never came out clean"),
        ("a second attempt dir", lambda d: os.makedirs(f"{d}/runs/sk1-0.2"), "attempt dirs"),
        ("a run wrote no results.json", lambda d: os.remove(f"{d}/runs/sk1-0/results.json"), "no complete results.json"),
        ("a fault the checker does not know", lambda d: open(f"{d}/schedule.tsv", "a").write(
            "\t".join(["99", "sk1-99", "0", "hello", "hell-000063", "hello", "install", "oops", "0", "direct", "-", "0", "150"]) + "\n"),
         "unknown fault"),
    ]
    failures = []
    with tempfile.TemporaryDirectory(prefix="soak-check-") as tmp:
        clean = f"{tmp}/clean"
        synthetic_world(clean)
        j = Judge(clean)
        j.judge()
        if j.violations:
            failures.append(f"the clean synthetic world has violations: {j.violations}")
        for name, mutate, want in cases:
            d = f"{tmp}/case"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(clean, d)
            mutate(d)
            j = Judge(d)
            j.judge()
            if not any(want in x for x in j.violations):
                failures.append(f"{name}: no violation containing {want!r}; got {j.violations}")
    for f in failures:
        print(f"self-test: FAIL: {f}")
    print(f"self-test: {'ok' if not failures else 'FAILED'} (a clean world and {len(cases)} planted violations)")
    return 1 if failures else 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) == 3 and argv[1] == "check":
        return check(argv[2])
    if len(argv) == 3 and argv[1] == "left":
        try:
            with open(argv[2]) as f:
                n = work_left(json.load(f))
        except Exception as e:
            print(f"unreadable report ({e.__class__.__name__})")
            return 0
        print(n if n else "")
        return 0
    if len(argv) == 3 and argv[1] == "ports" and argv[2].isdigit():
        socks = []
        for _ in range(int(argv[2])):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        print("\n".join(str(s.getsockname()[1]) for s in socks))
        return 0
    sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))

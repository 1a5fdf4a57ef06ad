"""Benchmark: N generated cases through the whole CaseBridge pipeline, with the I/O floor measured alongside.

    python benchmarks/run.py --cases 1000 --jobs 1 [--json]

1. Generates N synthetic cases (``benchmarks/gen.py``, seeded) into a temporary folder as one NDJSON file
   (or one JSON file per case with ``--format json``). Not timed.
2. Times ``converter.run.convert`` on them, in this process (``--jobs 2``: its process pool): load, map,
   FHIR build, FHIR validate, SDTM build, SDTM validate and write — per-case bundles, the SDTM study
   assembled, validated and written as XPT + Dataset-JSON + define.xml, report.json.
3. Measures the I/O floor in this same process on the same data: read + ``orjson.loads`` of every input
   record, plus ``orjson.dumps`` of every JSON document the run produced (bundles, NDJSON lines,
   Dataset-JSON, report). ``floor_ratio`` = conversion wall time / floor.
4. Prints cases/s, resources/s, SDTM rows/s, the time per stage, peak RSS and the floor. With ``--json``
   the last line of stdout is one JSON object (``cases_per_s``, ``floor_ratio``, ``peak_rss_mb``,
   ``stages`` and more).

Peak RSS: ``resource.getrusage`` for this process (exact high-water mark) and its workers; with psutil
the whole process tree (main + workers) is also sampled every 20 ms and summed (its list of descendants
refreshed every 0.5 s; shared copy-on-write pages of forked workers are counted once per process, so the
sum overstates a little).

``--memory-trend 1000,5000`` runs this script again in fresh processes with ``--fhir-ndjson`` for each N
(FHIR only, then FHIR + SDTM) and prints the peak RSS against N, so that growth with N is measured, not
assumed. ``--profile FILE`` runs the conversion under cProfile (jobs 1) and prints the hottest functions.

The targets (docs/performance.md) are measured here and never asserted: CI runs ``--cases 200`` as a
smoke test only.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

try:  # the installed package first (CI: pip install '.[test]'); a source checkout otherwise
    import converter  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the script is run
    sys.path.insert(0, str(ROOT))
    import converter  # noqa: F401

import orjson  # noqa: E402  (a dependency of converter)

if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import gen  # noqa: E402

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the [test] extra
    psutil = None

STAGES = ("load", "map", "fhir_build", "fhir_validate", "sdtm_build", "sdtm_validate", "write")
SEED_SAMPLE = ROOT / "samples" / "lcnec-cadonilimab-anlotinib.yaml"


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------

def seed_case() -> dict[str, Any] | None:
    """The seed case as a checked document, or None when the samples are not beside the script."""
    if not SEED_SAMPLE.is_file():
        return None
    from converter.case.loader import load_case

    return load_case(SEED_SAMPLE).data


def seed_copies(n: int, seed_doc: dict[str, Any]):
    """``n`` copies of the seed case, each with its own case_id (for 'seed-size cases/s' exactly)."""
    body = orjson.dumps(seed_doc)
    for i in range(n):
        doc = orjson.loads(body)
        doc["case_id"] = f"seed-copy-{i:07d}"
        yield doc


def make_inputs(n: int, seed: int, fmt: str, folder: Path, kind: str) -> tuple[list[Path], dict[str, float]]:
    """Write the inputs; returns the paths and the mean shape of the cases."""
    totals: dict[str, float] = {}

    def counted(docs):
        for doc in docs:
            for k, v in gen.shape(doc).items():
                totals[k] = totals.get(k, 0) + v
            yield doc

    if kind == "seed":
        doc = seed_case()
        if doc is None:
            raise SystemExit(f"--input seed needs {SEED_SAMPLE}")
        docs = seed_copies(n, doc)
    else:
        docs = gen.generate(n, seed)
    paths = gen.write_cases(counted(docs), folder, fmt)
    return paths, {k: round(v / max(n, 1), 2) for k, v in totals.items()}


# --------------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------------

def _maxrss_mb(who: int) -> float:
    r = resource.getrusage(who).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / (1024 * 1024)


class GcTimer:
    """Wall time this process spends in garbage collection, per generation (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.counts = [0, 0, 0]
        self._start = 0.0

    def __enter__(self) -> "GcTimer":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._start
            self.counts[info["generation"]] += 1


class TreeSampler(threading.Thread):
    """Samples the RSS of this process plus all its descendants; keeps the peak of the sum.

    Finding the descendants reads every process's ``/proc/PID/stat`` (psutil), which is costly on a busy
    host, and this thread shares the converting process's CPU: the list of descendants is refreshed every
    ``rescan`` seconds, their RSS sampled every ``interval``.
    """

    def __init__(self, interval: float = 0.02, rescan: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.rescan = rescan
        self.peak = 0
        self.peak_workers = 0
        self._stop_event = threading.Event()
        self.proc = psutil.Process() if psutil else None
        self._children: list[Any] = []
        self._scanned = float("-inf")

    def sample(self, rescan: bool = False) -> None:
        if self.proc is None:
            return
        try:
            now = time.monotonic()
            if rescan or now - self._scanned >= self.rescan:
                self._children, self._scanned = self.proc.children(recursive=True), now
            total = self.proc.memory_info().rss
            workers = 0
            for child in self._children:
                try:
                    workers += child.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            total += workers
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return
        self.peak = max(self.peak, total)
        self.peak_workers = max(self.peak_workers, workers)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample(rescan=True)


def current_rss_mb() -> float | None:
    if psutil is None:
        return None
    return psutil.Process().memory_info().rss / 2**20


# --------------------------------------------------------------------------------------------------------
# The I/O floor
# --------------------------------------------------------------------------------------------------------

_FLOOR_WHOLE_LIMIT = 256 << 20  # bytes: larger JSON documents are costed at the dump rate measured on the others


def io_floor(inputs: list[Path], out: Path) -> dict[str, Any]:
    """orjson load of every input record + orjson dump of every JSON document produced, timed here.

    A document over 256 MB (a Dataset-JSON file or report.json of a 100k-case run) would need many GB to
    decode; its dump is costed at the bytes-per-second rate measured on the other documents
    (``floor_estimated_mb`` says how much was).
    """
    clock = time.perf_counter
    load_s = 0.0
    n_in = 0
    for path in inputs:
        t0 = clock()
        if path.suffix == ".ndjson":  # streamed, as convert reads it: memory independent of the file size
            with path.open("rb") as handle:
                for line in handle:
                    if line.strip():
                        orjson.loads(line)
                        n_in += 1
        else:
            orjson.loads(path.read_bytes())
            n_in += 1
        load_s += clock() - t0
    dump_s = 0.0
    n_out = 0
    out_bytes = 0
    estimated_bytes = 0  # documents too large to decode whole (100k-case Dataset-JSON, report.json)
    for path in sorted(out.rglob("*")):
        if not path.is_file() or path.suffix not in (".json", ".ndjson"):
            continue
        if path.suffix == ".ndjson":  # reading the produced output back is not part of the floor
            with path.open("rb") as handle:  # a line at a time: NDJSON of 100k cases is many GB
                for line in handle:
                    if not line.strip():
                        continue
                    doc = orjson.loads(line)
                    t0 = clock()
                    out_bytes += len(orjson.dumps(doc)) + 1
                    dump_s += clock() - t0
                    n_out += 1
            continue
        size = path.stat().st_size
        if size > _FLOOR_WHOLE_LIMIT:  # a document of GBs cannot be decoded whole: costed at the measured rate
            estimated_bytes += size
            n_out += 1
            continue
        raw = path.read_bytes()  # reading the produced output back is not part of the floor
        indent = raw[:2] in (b"{\n", b"[\n")
        doc = orjson.loads(raw)
        t0 = clock()
        out_bytes += len(orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)) + 1
        dump_s += clock() - t0
        n_out += 1
        del raw
    if estimated_bytes:
        dump_s += estimated_bytes * dump_s / out_bytes if out_bytes else 0.0
        out_bytes += estimated_bytes
    return {"floor_s": load_s + dump_s, "load_s": load_s, "dump_s": dump_s, "input_records": n_in,
            "output_documents": n_out, "output_json_mb": round(out_bytes / 2**20, 1),
            "floor_estimated_mb": round(estimated_bytes / 2**20, 1)}


# --------------------------------------------------------------------------------------------------------
# One benchmark run
# --------------------------------------------------------------------------------------------------------

def _seed_yield(mappings: str | None, to: tuple[str, ...]) -> tuple[int, int] | None:
    """Resources and SDTM rows the seed case alone becomes (to express generated cases in seed sizes)."""
    doc = seed_case()
    if doc is None:
        return None
    from converter.run import convert

    with tempfile.TemporaryDirectory(prefix="cb-bench-seed-") as tmp:
        folder = Path(tmp)
        gen.write_cases([doc], folder / "in", "json")
        report = convert([str(folder / "in")], folder / "out", mappings=Path(mappings) if mappings else None, to=to)
        if report.converted != 1:
            return None
        return sum(report.resource_counts.values()), sum(report.domain_counts.values())


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from converter.run import convert

    to = tuple(t for t in ("fhir", "sdtm") if t in args.to.split(","))
    work = Path(tempfile.mkdtemp(prefix="cb-bench-", dir=args.workdir))
    result: dict[str, Any] = {}
    try:
        t0 = time.perf_counter()
        inputs, mean_shape = make_inputs(args.cases, args.seed, args.format, work / "in", args.input)
        gen_s = time.perf_counter() - t0
        input_mb = sum(p.stat().st_size for p in inputs) / 2**20
        out = work / "out"
        gc.collect()
        rss_before = current_rss_mb()
        sampler = TreeSampler()
        sampler.start()
        cpu0 = os.times()
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        with GcTimer() as gc_timer:
            report = convert([str(p) for p in inputs], out, mappings=Path(args.mappings) if args.mappings else None,
                             to=to, fhir_ndjson=args.fhir_ndjson, jobs=args.jobs, sdtm_memory_mb=args.sdtm_memory)
        wall = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        cpu1 = os.times()
        sampler.stop()
        peak_main = _maxrss_mb(resource.RUSAGE_SELF)
        peak_worker = _maxrss_mb(resource.RUSAGE_CHILDREN) if args.jobs > 1 else 0.0
        peak_tree = sampler.peak / 2**20 if sampler.peak else None
        floor = io_floor(inputs, out)
        resources = sum(report.resource_counts.values())
        rows = sum(report.domain_counts.values())
        stage_s = {name: float(report.timings.get(name, 0.0)) for name in STAGES}
        staged = sum(stage_s.values())
        n = max(args.cases, 1)
        stages = {name: {"s": round(v, 4), "ms_per_case": round(1000 * v / n, 3),
                         "share": round(v / staged, 4) if staged else 0.0} for name, v in stage_s.items()}
        cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system) + (cpu1.children_user - cpu0.children_user) \
            + (cpu1.children_system - cpu0.children_system)
        issue_counts: dict[str, int] = dict(getattr(report, "issue_counts", None) or {})
        if not issue_counts:  # reports that keep every issue in memory
            for issue in report.issues:
                key = f"{issue.severity}:{issue.rule}"
                issue_counts[key] = issue_counts.get(key, 0) + 1
        result = {
            "cases": args.cases, "jobs": args.jobs, "seed": args.seed, "input": args.input, "format": args.format,
            "to": list(to), "fhir_ndjson": args.fhir_ndjson,
            "converted": report.converted, "quarantined": report.failed,
            "wall_s": round(wall, 3), "cases_per_s": round(args.cases / wall, 1) if wall else None,
            "resources": resources, "resources_per_s": round(resources / wall, 1) if wall else None,
            "sdtm_rows": rows, "sdtm_rows_per_s": round(rows / wall, 1) if wall else None,
            "resources_per_case": round(resources / n, 1), "sdtm_rows_per_case": round(rows / n, 1),
            "stages": stages,
            "stage_total_s": round(staged, 3),
            # jobs 1: the part of the wall time outside the timed stages (reading inputs, compiling the mapping
            # set, report.json, orchestration); jobs > 1 the stages run in parallel, so this is not meaningful
            "unstaged_s": round(wall - staged, 3) if args.jobs == 1 else None,
            "cpu_s": round(cpu_s, 3), "cpu_utilisation": round(cpu_s / wall, 2) if wall else None,
            # this process alone (with --jobs > 1: reading inputs, placing files, SDTM rows, the end of the run)
            "cpu_main_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 3),
            # garbage collection in this process: seconds and collections per generation
            "gc_main_s": [round(s, 3) for s in gc_timer.seconds], "gc_main_collections": gc_timer.counts,
            "peak_rss_mb": round(max(peak_main, peak_tree or 0.0), 1),
            "peak_rss_main_mb": round(peak_main, 1), "peak_rss_worker_mb": round(peak_worker, 1),
            "peak_rss_tree_mb": round(peak_tree, 1) if peak_tree else None,
            "rss_before_mb": round(rss_before, 1) if rss_before else None,
            "floor_s": round(floor["floor_s"], 4), "floor_load_s": round(floor["load_s"], 4),
            "floor_dump_s": round(floor["dump_s"], 4),
            "floor_ratio": round(wall / floor["floor_s"], 1) if floor["floor_s"] else None,
            "output_json_mb": floor["output_json_mb"], "floor_estimated_mb": floor["floor_estimated_mb"],
            "input_mb": round(input_mb, 1),
            "generate_s": round(gen_s, 2), "mean_case_shape": mean_shape,
            "issues": dict(sorted(issue_counts.items(), key=lambda kv: -kv[1])[:12]),
            "python": sys.version.split()[0], "cpu_count": os.cpu_count(), "converter": str(Path(converter.__file__).parent),
        }
        if args.input == "generated" and not args.no_seed_compare:
            seed_yield = _seed_yield(args.mappings, to)
            if seed_yield and (seed_yield[0] + seed_yield[1]):
                # per converted case (quarantined cases produce nothing)
                size = (resources + rows) / max(report.converted, 1) / (seed_yield[0] + seed_yield[1])
                result["seed_resources"], result["seed_sdtm_rows"] = seed_yield
                # a generated case is this fraction of the seed, counted in resources + SDTM rows produced
                result["seed_size_ratio"] = round(size, 3)
                result["seed_size_cases_per_s"] = round(result["cases_per_s"] * size, 1) if result["cases_per_s"] else None
        if profiler is not None:
            result["profile"] = _profile_summary(profiler, args.profile, wall)
    finally:
        if args.keep:
            print(f"kept inputs and output in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def _profile_summary(profiler: Any, path: str, wall: float) -> dict[str, Any]:
    import pstats

    profiler.dump_stats(path)
    stats = pstats.Stats(profiler)
    total = stats.total_tt or 1.0
    rows = []
    for (file, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():
        rows.append((tt, ct, nc, f"{_short(file)}:{line}:{func}"))
    top_self = sorted(rows, reverse=True)[:25]
    top_cum = sorted(((ct, tt, nc, name) for tt, ct, nc, name in rows if "converter" in name), reverse=True)[:25]
    return {"file": path, "profiled_total_s": round(total, 3),
            "top_self": [{"fn": name, "self_s": round(tt, 3), "self_share": round(tt / total, 4), "cum_s": round(ct, 3),
                          "calls": nc} for tt, ct, nc, name in top_self],
            "top_cumulative_converter": [{"fn": name, "cum_s": round(ct, 3), "cum_share": round(ct / total, 4),
                                          "self_s": round(tt, 3), "calls": nc} for ct, tt, nc, name in top_cum]}


def _short(file: str) -> str:
    for marker in ("/converter/", "/site-packages/", "/lib/python"):
        if marker in file:
            return (marker.strip("/") + "/" if marker == "/converter/" else "") + file.split(marker, 1)[1]
    return file


# --------------------------------------------------------------------------------------------------------
# Memory trend: fresh processes, two or more N
# --------------------------------------------------------------------------------------------------------

def memory_trend(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.memory_trend.split(",") if s.strip()]
    out: dict[str, Any] = {"sizes": sizes, "series": {}}
    for label, to in (("fhir_ndjson_only", "fhir"), ("fhir_ndjson_and_sdtm", "fhir,sdtm")):
        points = []
        for n in sizes:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--cases", str(n), "--jobs", str(args.jobs), "--json",
                   "--fhir-ndjson", "--to", to, "--seed", str(args.seed), "--format", args.format, "--no-seed-compare"]
            if args.mappings:
                cmd += ["--mappings", args.mappings]
            if args.sdtm_memory:
                cmd += ["--sdtm-memory", str(args.sdtm_memory)]
            if args.workdir:
                cmd += ["--workdir", args.workdir]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"memory-trend run failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
            last = orjson.loads(proc.stdout.strip().splitlines()[-1])
            points.append({"cases": n, "peak_rss_mb": last["peak_rss_mb"], "peak_rss_main_mb": last["peak_rss_main_mb"],
                           "rss_before_mb": last["rss_before_mb"], "cases_per_s": last["cases_per_s"]})
            print(f"  memory trend {label:22s} N={n:>7d}: peak RSS {last['peak_rss_mb']:8.1f} MB "
                  f"(before conversion {last['rss_before_mb']} MB), {last['cases_per_s']} cases/s", file=sys.stderr)
        slope = None
        if len(points) >= 2 and points[-1]["cases"] != points[0]["cases"]:
            slope = (points[-1]["peak_rss_mb"] - points[0]["peak_rss_mb"]) / (points[-1]["cases"] - points[0]["cases"]) * 1000
        out["series"][label] = {"points": points, "mb_per_1k_cases": round(slope, 2) if slope is not None else None,
                                "extrapolated_1m_cases_mb": round(points[-1]["peak_rss_mb"] + slope * (1_000_000 - points[-1]["cases"]) / 1000, 0)
                                if slope is not None else None}
    return out


# --------------------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------------------

def print_human(r: dict[str, Any]) -> None:
    p = print
    p(f"CaseBridge benchmark: {r['cases']} {r['input']} case(s), jobs={r['jobs']}, to={'+'.join(r['to'])}"
      f"{', FHIR NDJSON' if r['fhir_ndjson'] else ''} (python {r['python']}, {r['cpu_count']} CPUs)")
    p(f"  inputs: {r['input_mb']} MB {r['format']}, generated in {r['generate_s']} s (not timed); mean shape {r['mean_case_shape']}")
    p(f"  converted {r['converted']}, quarantined {r['quarantined']}")
    p(f"  wall {r['wall_s']} s   {r['cases_per_s']} cases/s   {r['resources_per_s']} resources/s   {r['sdtm_rows_per_s']} SDTM rows/s")
    if r.get("seed_size_ratio") is not None:
        p(f"  a generated case = {r['seed_size_ratio']} seed cases (resources + rows; seed: {r['seed_resources']} resources, "
          f"{r['seed_sdtm_rows']} rows)  ->  {r['seed_size_cases_per_s']} seed-size cases/s")
    p(f"  per case: {r['resources_per_case']} resources, {r['sdtm_rows_per_case']} SDTM rows")
    p("  stages (summed over cases{}):".format("; CPU time of the workers, in parallel" if r["jobs"] > 1 else ""))
    for name, s in r["stages"].items():
        p(f"    {name:14s} {s['s']:9.3f} s  {s['ms_per_case']:8.3f} ms/case  {100 * s['share']:5.1f} %")
    if r.get("unstaged_s") is not None:
        p(f"    {'(outside)':14s} {r['unstaged_s']:9.3f} s  reading inputs, compiling mappings, report, orchestration")
    p(f"  CPU {r['cpu_s']} s ({r['cpu_utilisation']} cores busy on average)")
    p(f"  peak RSS {r['peak_rss_mb']} MB (main {r['peak_rss_main_mb']} MB, largest worker {r['peak_rss_worker_mb']} MB, "
      f"process tree sampled {r['peak_rss_tree_mb']} MB; {r['rss_before_mb']} MB before conversion)")
    p(f"  I/O floor {r['floor_s']} s (orjson load {r['floor_load_s']} s + dump {r['floor_dump_s']} s of "
      f"{r['output_json_mb']} MB JSON) -> conversion is {r['floor_ratio']}x the floor"
      + (f"; {r['floor_estimated_mb']} MB of it in documents too large to decode whole, costed at the measured rate"
         if r["floor_estimated_mb"] else ""))
    if r["issues"]:
        p(f"  most frequent issues: {r['issues']}")
    if "profile" in r:
        prof = r["profile"]
        p(f"  cProfile ({prof['file']}, {prof['profiled_total_s']} s profiled): top self time")
        for row in prof["top_self"][:15]:
            p(f"    {100 * row['self_share']:5.1f} %  {row['self_s']:8.3f} s  {row['calls']:>9d}  {row['fn']}")
        p("  top cumulative (converter/)")
        for row in prof["top_cumulative_converter"][:15]:
            p(f"    {100 * row['cum_share']:5.1f} %  {row['cum_s']:8.3f} s  {row['fn']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes of convert (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--input", choices=("generated", "seed"), default="generated",
                        help="generated cases (default) or N copies of the seed sample")
    parser.add_argument("--format", choices=("ndjson", "json"), default="ndjson",
                        help="input layout: one NDJSON file (default) or one JSON file per case")
    parser.add_argument("--to", default="fhir,sdtm", help="fhir, sdtm or fhir,sdtm (default)")
    parser.add_argument("--fhir-ndjson", action="store_true", help="also stream FHIR NDJSON (convert --fhir-ndjson)")
    parser.add_argument("--mappings", help="a mapping folder (default: the shipped one)")
    parser.add_argument("--sdtm-memory", type=int, metavar="MB",
                        help="MB of SDTM rows held before they spill to disk (convert --sdtm-memory; default its default)")
    parser.add_argument("--workdir", help="where to put the temporary inputs and output (default: the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary inputs and output")
    parser.add_argument("--profile", metavar="FILE", help="run the conversion under cProfile and write pstats to FILE")
    parser.add_argument("--memory-trend", metavar="N1,N2", help="peak RSS with --fhir-ndjson for each N, in fresh processes")
    parser.add_argument("--no-seed-compare", action="store_true", help="do not convert the seed to express sizes in seed cases")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a generated case is quarantined")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error("--cases must be >= 1")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    if args.profile and args.jobs != 1:
        parser.error("--profile needs --jobs 1 (cProfile sees only this process)")
    if args.memory_trend:
        trend = memory_trend(args)
        print(orjson.dumps(trend, option=orjson.OPT_INDENT_2).decode(), file=sys.stderr)
    result = benchmark(args)
    if args.memory_trend:
        result["memory_trend"] = trend
    print_human(result)
    if args.json:  # the last line of stdout
        print(orjson.dumps(result).decode(), flush=True)
    if args.strict and result["quarantined"]:
        print(f"error: {result['quarantined']} generated case(s) were quarantined", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

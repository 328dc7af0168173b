"""`twinloop bench` / `make bench`: run the benchmarks, write <out>/bench.json and <out>/bench.md.

Each case below produces a known list of entry names; `only` (name prefixes) selects the cases that can
produce a matching name and then keeps only the matching entries. A case that fails still appears in the
output, with value null and an "error" field, and makes the exit status 1.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twinloop.benchmarks import (
    image_transport,
    lerobot_encode,
    memcpy,
    recording_throughput,
    twin_node_speed,
    twin_speed,
)
from twinloop.benchmarks.common import ENTRY_KEYS, entry, progress


@dataclass(frozen=True)
class Case:
    names: tuple[str, ...]  # the entry names this case produces
    units: tuple[str, ...]
    run: Callable[[], list[dict]]


def _cases() -> list[Case]:
    cases = [
        Case(
            (f"{memcpy.NAME}.p50_ms", f"{memcpy.NAME}.p99_ms"),
            ("ms", "ms"),
            memcpy.bench_memcpy,
        ),
        Case(
            tuple(name for name, _ in twin_speed.names()),
            tuple(unit for _, unit in twin_speed.names()),
            twin_speed.bench_twin,
        ),
        Case(
            tuple(name for name, _ in twin_node_speed.lockstep_names()),
            tuple(unit for _, unit in twin_node_speed.lockstep_names()),
            twin_node_speed.bench_lockstep,
        ),
        Case(
            tuple(name for name, _ in twin_node_speed.realtime_names()),
            tuple(unit for _, unit in twin_node_speed.realtime_names()),
            twin_node_speed.bench_realtime,
        ),
        Case(
            tuple(name for name, _ in recording_throughput.names()),
            tuple(unit for _, unit in recording_throughput.names()),
            recording_throughput.bench_recording,
        ),
        Case(
            tuple(name for name, _ in lerobot_encode.names()),
            tuple(unit for _, unit in lerobot_encode.names()),
            lerobot_encode.bench_lerobot_encode,
        ),
    ]
    # best effort first (the cameras' QoS), each with the profile before the defaults; last, the profile
    # with glibc's malloc tuned (a candidate improvement, see README.md)
    pairs = [(t, r) for r in ("best_effort", "reliable") for t in ("profile", "default")]
    pairs.append(("profile_malloc_tuned", "best_effort"))
    for transport, reliability in pairs:
        cases.append(
            Case(
                tuple(image_transport.case_names(transport, reliability)),
                ("ms", "ms", "%"),
                lambda t=transport, r=reliability: image_transport.bench_image_transport(t, r),
            )
        )
    return cases


def all_names() -> list[str]:
    return [name for case in _cases() for name in case.names]


def _wanted(name: str, only: Sequence[str] | None) -> bool:
    return not only or any(name.startswith(prefix) for prefix in only)


def resolve_ratios(entries: list[dict]) -> None:
    """Fill `ratio` = value / baseline's value; a baseline that was not measured becomes null."""
    values = {e["name"]: e["value"] for e in entries}
    for e in entries:
        base = e.get("baseline")
        if base is None:
            e["ratio"] = None
            continue
        if base not in values:
            e["baseline"] = None
            e["ratio"] = None
            continue
        base_value = values[base]
        ok = e["value"] is not None and base_value not in (None, 0.0)
        e["ratio"] = e["value"] / base_value if ok else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.2f}"
    return f"{value:.4f}"


def to_markdown(entries: list[dict], header: str = "") -> str:
    lines = [header, ""] if header else []
    lines += ["| name | value | unit | baseline | ratio | notes |", "|---|---:|---|---|---:|---|"]
    for e in entries:
        notes = e.get("error") and f"ERROR: {e['error'].splitlines()[0]}" or e.get("notes", "")
        notes = notes.replace("|", "\\|")
        ratio = "—" if e["ratio"] is None else f"{e['ratio']:.2f}"
        lines.append(
            f"| {e['name']} | {_fmt(e['value'])} | {e['unit']} | {e['baseline'] or '—'} | {ratio} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def check_schema(entries: list[dict]) -> None:
    """Raise ValueError if an entry misses one of the five required keys or has a wrong type."""
    for e in entries:
        missing = [k for k in ENTRY_KEYS if k not in e]
        if missing:
            raise ValueError(f"bench entry {e.get('name')!r} lacks {missing}")
        if not isinstance(e["name"], str) or not isinstance(e["unit"], str):
            raise ValueError(f"bench entry {e['name']!r}: name and unit must be strings")
        for key in ("value", "ratio"):
            if e[key] is not None and not isinstance(e[key], float):
                raise ValueError(f"bench entry {e['name']!r}: {key} must be a number or null")


def write_outputs(entries: list[dict], out: str | Path, header: str = "") -> tuple[Path, Path]:
    check_schema(entries)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "bench.json", out_dir / "bench.md"
    json_path.write_text(json.dumps(entries, indent=2) + "\n")
    md_path.write_text(to_markdown(entries, header))
    return json_path, md_path


def main(only: list[str] | None = None, out: str = "benchmarks/out") -> int:
    only = [p for p in (only or []) if p] or None
    cases = [c for c in _cases() if any(_wanted(n, only) for n in c.names)]
    if not cases:
        raise ValueError(
            f"no benchmark matches --only {' '.join(only or [])}; names: {', '.join(all_names())}"
        )
    started = time.perf_counter()
    entries: list[dict] = []
    failed = 0
    for case in cases:
        try:
            produced = case.run()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # report, keep going with the other cases
            failed += 1
            message = str(exc) or type(exc).__name__
            progress(f"FAILED {case.names[0].rsplit('.', 1)[0]}: {message}")
            if not isinstance(exc, image_transport.BenchError):
                traceback.print_exc()
            produced = [
                entry(name, None, unit, error=message)
                for name, unit in zip(case.names, case.units, strict=True)
            ]
        entries += [e for e in produced if _wanted(e["name"], only)]
    resolve_ratios(entries)
    total = time.perf_counter() - started
    header = f"twinloop bench: {len(entries)} entries in {total:.0f} s" + (
        f", {failed} FAILED" if failed else ""
    )
    json_path, md_path = write_outputs(entries, out, header)
    print()
    print(md_path.read_text(), end="")
    print(f"\n[bench] wrote {json_path} and {md_path} ({total:.0f} s)", flush=True)
    return 1 if failed else 0

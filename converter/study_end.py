"""The end of a run: the SDTM study checked and written a dataset at a time, by several processes with --jobs.

Once every case is in, the datasets are independent: each is assembled (or read a part at a time when it
spilled), given the study-level checks (:class:`StudyCheck`) and encoded and staged (:class:`StudyWriter`).
With ``jobs`` > 1, forked processes take some of the datasets (the largest first, each to the least loaded
process) and send back what each dataset's check and writer found; everything is then merged in name order,
so the issues, define.xml and the files are those of one process doing every dataset in turn.
"""

from __future__ import annotations

import multiprocessing
import sys
from contextlib import closing
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple

from converter.mapping.terminology import Terminology
from converter.sdtm.build import DatasetParts, StudyBuilder
from converter.sdtm.model import Dataset, Study
from converter.validate.issues import Issue, dataset_of
from converter.validate.sdtm import CheckFound, StudyCheck
from converter.write import StudyWriter, WriterFound, dataset_paths
from converter.write.atomic import temporaries


class _Done(NamedTuple):
    """One dataset finished: what its check found, whether it was refused, what its writer staged."""

    found: CheckFound
    refused: bool
    written: WriterFound


class _Settings(NamedTuple):
    """What every dataset is finished with."""

    terminology: Terminology
    study: Study
    out: Path
    formats: set[str]
    stamp: datetime


def write_study_end(builder: StudyBuilder, out: Path, terminology: Terminology, formats: set[str], stamp: datetime,
                    jobs: int = 1) -> tuple[list[Path], list[Issue]]:
    """Check and write every dataset of ``builder`` (emptied), plus define.xml; the paths written and the issues.

    Memory holds one dataset (or one part of a spilled one) per process at a time. ``jobs`` > 1 shares the
    datasets among that many processes where the platform can fork; the output is the same byte for byte.
    """
    settings = _Settings(terminology, Study(builder.study_id, ct_version=builder.ct_version), out, formats, stamp)
    check = StudyCheck(terminology)
    with StudyWriter(settings.study, out, terminology, formats, stamp) as writer, closing(builder):
        shares = _shares(builder.sizes(), jobs if "fork" in multiprocessing.get_all_start_methods() else 1)
        done: dict[str, _Done] = {}
        retried: list[Issue] = []
        children = [_Child(builder, share, settings) for share in shares[1:]]
        try:
            for name in shares[0]:
                done[name] = _finish(builder.dataset(name, release=True, parts=True), settings)
            for child in children:
                got, failure = child.result()
                if failure:
                    retried.append(Issue("warning", "run.retried", f"the process writing {', '.join(child.names)} "
                                         f"failed ({failure}); the main process wrote them instead", ""))
                for name in child.names:
                    if name in got:
                        builder.release(name)
                        done[name] = got[name]
                    else:  # the process failed: this one finishes its datasets (their rows are still here)
                        done[name] = _finish(builder.dataset(name, release=True, parts=True), settings)
        except BaseException:
            for finished in done.values():  # what was staged goes with the writer's own files
                writer.merge(finished.written)
            for child in children:  # and what a process still working staged is removed once it is stopped
                child.discard(out)
            raise
        finally:
            for child in children:
                child.stop()
        refused: list[str] = []
        for name in sorted(done):
            finished = done.pop(name)
            check.merge(finished.found)
            writer.merge(finished.written)
            if finished.refused:
                refused.append(name)
        issues = check.finish()
        issues += [Issue("error", "sdtm.refused", f"dataset {name} not written: it failed validation", name)
                   for name in refused]
        paths, write_issues = writer.finish()
    return paths, retried + issues + write_issues


def _shares(sizes: dict[str, int], processes: int) -> list[list[str]]:
    """The dataset names per process, each list in name order: the largest dataset first to the least loaded.

    The first list is the calling process's; empty lists are left out (never the first).
    """
    shares: list[list[str]] = [[] for _ in range(max(1, min(processes, len(sizes))))]
    loads = [0] * len(shares)
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        least = loads.index(min(loads))
        shares[least].append(name)
        loads[least] += sizes[name]
    return [sorted(shares[0])] + [sorted(share) for share in shares[1:] if share]


def _finish(dataset: Dataset | DatasetParts, settings: _Settings) -> _Done:
    """Check, encode and stage one dataset with a check and a writer of its own."""
    check = StudyCheck(settings.terminology)
    with StudyWriter(settings.study, settings.out, settings.terminology, settings.formats, settings.stamp) as writer:
        refused = _check_and_write(dataset, check, writer)
        return _Done(check.found(), refused, writer.written())


def _check_and_write(dataset: Dataset | DatasetParts, check: StudyCheck, writer: StudyWriter) -> bool:
    """Check one dataset and write it unless an error refuses it (True)."""
    if isinstance(dataset, DatasetParts):  # spilled: checked and written a part at a time when it can be
        with dataset:
            mark = check.mark()
            found = check.add_parts(dataset.parts(ordered=True)) if dataset.mergeable else None
            if found is not None and _failed(dataset.shell.name, found):
                return True
            if found is not None and writer.add_parts(dataset):
                return False
            check.rollback(mark)
            dataset = dataset.assemble()  # a problem to report by row: the whole dataset, as in memory
    if _failed(dataset.name, check.add(dataset)):
        return True
    writer.add(dataset)
    return False


def _failed(name: str, found: list[Issue]) -> bool:
    return any(i.severity == "error" and dataset_of(i.location) == name for i in found)


class _Child:
    """A forked process finishing some of the datasets; :meth:`result` what it finished, by name."""

    def __init__(self, builder: StudyBuilder, names: list[str], settings: _Settings):
        self.names = names
        context = multiprocessing.get_context("fork")
        self.receive, send = context.Pipe(duplex=False)
        for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice by the child
            stream.flush()
        self.process = context.Process(target=_child_main, args=(builder, names, settings, send), daemon=True)
        self.process.start()
        send.close()

    def result(self) -> tuple[dict[str, _Done], str]:
        """Every dataset the process finished, and why it failed ("" when it did not; when it did, the dict is empty)."""
        try:
            got = self.receive.recv()
        except (EOFError, OSError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            return {}, f"it ended with exit code {code}" if code is not None else "it closed its pipe without ending"
        return (got, "") if isinstance(got, dict) else ({}, str(got))

    def discard(self, out: Path) -> None:
        """Stop the process and remove the files it staged (the parent failed while it was working)."""
        self.stop(wait=0)
        for name in self.names:
            for path in dataset_paths(Path(out) / "sdtm", name).values():
                for staged in temporaries(path):
                    staged.unlink(missing_ok=True)

    def stop(self, wait: float = 5) -> None:
        """Wait ``wait`` seconds for the process (then stop it if it is still running) and close the pipe."""
        self.process.join(timeout=wait)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.receive.close()


def _child_main(builder: StudyBuilder, names: list[str], settings: _Settings, send: Connection) -> None:
    """In the forked process: finish ``names`` and send them back at once (staged files are the parent's now)."""
    done: dict[str, _Done] = {}
    try:
        for name in names:
            done[name] = _finish(builder.dataset(name, release=True, parts=True), settings)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which finishes the datasets itself
        for finished in done.values():
            for temporary, _ in finished.written.staged:
                temporary.unlink(missing_ok=True)
        send.send(f"{type(exc).__name__}: {exc}")
    else:
        send.send(done)
    finally:
        send.close()

"""The static pass of a large checkpoint on every core: a pool of worker processes.

Each worker opens the checkpoint's files itself and analyses the tensors it is sent by name:
it builds its reader from the graph's :class:`~initaudit.loaders.shards.TensorSource`, small
picklable data (paths, names, byte offsets). What crosses the process boundary is initaudit's own
data (the source and :class:`~initaudit.graph.Param` descriptions one way,
:class:`~initaudit.analysis.TensorAnalysis` summaries the other), never a tensor and never bytes
from the file, so the security model is that of the serial path, in every process:

- safetensors shards are read by safetensors (no pickle);
- zip ``.pt`` checkpoints are read as raw bytes of the storage records the caller located (after
  its allow-list scan) and checked against the archive's own directory: a worker unpickles nothing;
- distributed checkpoints: each worker reads ``.metadata`` again through the restricted
  unpickler and every chunk through the allow-list scan and ``torch.load(weights_only=True)``.

Work goes out in batches of about ``BATCH_BYTES`` in storage order with at most two batches per
worker in flight (a bounded queue), so every file is read front to back and memory stays bounded
by a few tensors per worker; a worker closes what it opened after each batch.

Small checkpoints (under ``PARALLEL_MIN_BYTES``) and live modules are analysed in the calling
process: starting workers costs more than it saves there, and a module's tensors live in memory.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from initaudit.analysis import AnalysisOptions, TensorAnalysis
from initaudit.graph import Param
from initaudit.loaders.shards import TensorSource

#: Checkpoints smaller than this (bytes as stored) are analysed serially.
PARALLEL_MIN_BYTES = 256 << 20
#: Bytes of tensors per batch sent to a worker (many small tensors share one message).
BATCH_BYTES = 64 << 20
_IN_FLIGHT_PER_WORKER = 2

#: Upper bound on worker processes, set by ``initaudit files --jobs N`` (its workers analyse
#: serially: one process per core in all). None: one per available core.
max_workers: int | None = None


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(total_bytes: int) -> int:
    """Workers for a checkpoint of ``total_bytes``: 0 (serial) when small or one core is all."""
    cores = available_cores() if max_workers is None else min(max_workers, available_cores())
    return cores if cores >= 2 and total_bytes >= PARALLEL_MIN_BYTES else 0


def pool_context() -> Any:
    """fork on Linux (a worker starts in milliseconds with torch already imported, as DataLoader
    workers do), else spawn (fork is unsafe on macOS, absent on Windows)."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def _batches(params: list[Param], sizes: Callable[[Param], int]) -> Iterator[list[Param]]:
    batch: list[Param] = []
    size = 0
    for p in params:
        batch.append(p)
        size += sizes(p)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# --- in the worker ------------------------------------------------------------------------------

_source: Any = None
_reader: Any = None
_options: AnalysisOptions | None = None


def start_single_core_worker() -> None:
    """Set up a worker process that is one of one-per-core: one torch thread (more would only
    contend, and a forked child must not use the thread pool its parent left behind: as in
    DataLoader workers) and no pool of its own."""
    global max_workers
    import torch

    torch.set_num_threads(1)
    max_workers = 1


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for a run of small ops (a 256 x 512 sample): each op on two threads
    waits at a barrier for the second one, and on a loaded machine that thread is often not
    scheduled (the weight spectra of a 1B checkpoint took 0.1 s of CPU on one thread, 1.2-2.1 s
    and 3.6-10.6 s of wall time on two, load 11)."""
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start_worker(source: TensorSource, options: AnalysisOptions) -> None:
    global _source, _options
    start_single_core_worker()
    _source, _options = source, options


def _open_reader() -> Any:
    """The worker's reader, opened with its first batch (not in the initializer: an error there
    breaks the pool without its message; raised from a batch, it reaches the caller)."""
    global _reader
    if _reader is None:
        _reader = _source.open()
    return _reader


def _analyze_batch(params: list[Param]) -> list[tuple[str, TensorAnalysis]]:
    from initaudit.analysis import analyze

    reader = _open_reader()
    out = []
    for p in params:
        tensor = reader(p.name)
        out.append((p.name, analyze(tensor, p, _options)))
        del tensor
    reader.close()  # what the batch opened is released before the next batch opens any
    return out


# --- in the caller ------------------------------------------------------------------------------


def analyze_in_workers(params: list[Param], source: TensorSource, options: AnalysisOptions, workers: int,
                       sizes: Callable[[Param], int],
                       on_result: Callable[[str, TensorAnalysis], None]) -> None:
    """Analyse ``params`` (each in ``source.names``) in ``workers`` processes; each result goes
    to ``on_result`` as it arrives. A worker's exception (a file that changed or went bad since
    the caller read it: one clear line) is raised here."""
    batches = _batches(params, sizes)
    pending: set[Future] = set()
    with ProcessPoolExecutor(max_workers=workers, mp_context=pool_context(), initializer=_start_worker,
                             initargs=(source, options)) as pool:
        for batch in batches:
            pending.add(pool.submit(_analyze_batch, batch))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                _deliver(done, on_result)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            _deliver(done, on_result)


def _deliver(done: set[Future], on_result: Callable[[str, TensorAnalysis], None]) -> None:
    for future in done:
        for name, analysis in future.result():
            on_result(name, analysis)

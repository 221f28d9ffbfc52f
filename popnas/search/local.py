"""``LocalExecutor``: trains candidates in a pool of local worker processes.

Each worker is a separate process, started with ``spawn`` so that TensorFlow state is never
forked. Its TensorFlow thread pools are sized so that concurrent trainers share the cores instead
of oversubscribing them, because oversubscription distorts the training times the time predictor
learns from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from popnas.results import CandidateResult
from popnas.search.executor import Candidate
from popnas.spec import NASSearch

logger = logging.getLogger(__name__)


def default_parallelism() -> int:
    """Return the default trainer count: one per two CPU cores, at least one."""
    return max(1, (os.cpu_count() or 1) // 2)


def _initialize_worker(threads: int) -> None:
    # TensorFlow's C++ start-up notices and its Python deprecation warnings (from the FLOPs
    # profiler) give a user watching a search nothing to act on.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from popnas.train.runtime import configure_threads

    configure_threads(threads)


def _train(search: NASSearch, cell_text: str, key: str) -> CandidateResult:
    from popnas.space import Cell
    from popnas.train.proxy import train_candidate

    return train_candidate(search, Cell.parse(cell_text), key=key)


class LocalExecutor:
    """Trains candidates of one search in ``workers`` local processes.

    A worker that dies (out of memory, a crash in native code) breaks the pool. The candidates it
    was running are then retried in a fresh pool up to ``retries`` times, and returned as failed
    after that.
    """

    def __init__(self, search: NASSearch, *, workers: int | None = None, retries: int = 1) -> None:
        from popnas.train.runtime import device_class

        # Workers run on this machine, so they see the devices this process sees.
        self.device_class = device_class()
        self.search = search
        self.workers = workers or search.spec.trainers.parallelism or default_parallelism()
        self.retries = retries
        self.threads = max(1, (os.cpu_count() or 1) // self.workers)
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[Future[CandidateResult], tuple[Candidate, int, ProcessPoolExecutor]] = {}

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            logger.debug("starting %d trainer processes with %d threads each", self.workers, self.threads)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context("spawn"),
                initializer=_initialize_worker,
                initargs=(self.threads,),
            )
        return self._pool

    def _submit_one(self, candidate: Candidate, attempt: int) -> None:
        pool = self._ensure_pool()
        future = pool.submit(_train, self.search, str(candidate.cell), candidate.key)
        self._pending[future] = (candidate, attempt, pool)

    def submit(self, candidates: Sequence[Candidate]) -> None:
        for candidate in candidates:
            self._submit_one(candidate, attempt=0)

    def as_completed(self) -> Iterator[CandidateResult]:
        while self._pending:
            done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
            for future in done:
                candidate, attempt, pool = self._pending.pop(future)
                result = self._collect(future, candidate, attempt, pool)
                if result is not None:
                    yield result

    def _collect(
        self, future: Future[CandidateResult], candidate: Candidate, attempt: int, pool: ProcessPoolExecutor
    ) -> CandidateResult | None:
        try:
            return future.result()
        except BrokenProcessPool as error:
            # Every candidate running in the pool fails with this error, not only the one whose
            # process died, so each gets its retry in a fresh pool.
            if pool is self._pool:
                self._discard_pool()
            if attempt < self.retries:
                logger.warning(
                    "trainer process died while training %s (attempt %d of %d); retrying in a new process",
                    candidate.key,
                    attempt + 1,
                    self.retries + 1,
                )
                self._submit_one(candidate, attempt + 1)
                return None
            reason = f"trainer process died after {attempt + 1} attempts: {error}"
        except Exception as error:  # a pickling or import error in the worker: report it as the result
            reason = f"{type(error).__name__}: {error}"
        logger.error("candidate %s %s failed: %s", candidate.key, candidate.cell, reason)
        return CandidateResult.failure(
            key=candidate.key, cell=str(candidate.cell), reason=reason, device_class=self.device_class
        )

    def _discard_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        pool, self._pool = self._pool, None
        self._pending.clear()
        if pool is None:
            return
        # ProcessPoolExecutor has no public way to stop running tasks; ending the worker processes
        # is what an interrupted search needs, so reach for its process table.
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)

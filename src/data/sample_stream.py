"""Shared machinery of the training data pipelines: shard streams per (rank, worker), skip guard, exact batch counts.

`ShardSampleDataset` streams raw webdataset samples (dicts of bytes) from shards and turns each into a
training sample with the subclass's `process(raw, rng)`. Bad samples are skipped, logged and counted per
reason in the next yielded sample's "skipped" field ({reason: count}): the batches are the one channel from
DataLoader worker processes back to training, where src.trainers.skipped_samples sums them over ranks.
Each (rank, worker) draws shards itself (resampled, the training default) or takes a disjoint slice of them
(resampled=False); webdataset's `single_node_only` splitter is never used, and `ExactBatchLoader` yields exactly `batches_per_epoch` batches per rank, so
DDP ranks never hang waiting for each other. Layouts are the subclasses' (they state them).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from src.data.decoded_cache import DecodedVideoCache

__all__ = [
    "ExactBatchLoader",
    "IterState",
    "SampleError",
    "ShardSampleDataset",
    "SkipGuard",
    "TooManySkips",
    "collate_skips",
    "get_rank_and_world_size",
    "require_entries",
    "shuffled",
    "stream_settings",
]

_log = logging.getLogger(__name__)


class SampleError(ValueError):
    """A shard sample that cannot be used (missing entry, mismatch, too short); it gets skipped.

    `reason` is the short category the skip is counted under (`skip_counts`), e.g. "pose_length"."""

    def __init__(self, message: str, reason: str = "bad_sample") -> None:
        super().__init__(message)
        self.reason = reason


def require_entries(raw: dict[str, Any], entries: Sequence[str]) -> None:
    """Raise SampleError (counted as "missing_<entry>") unless the raw shard sample has every entry."""
    for entry in entries:
        if entry not in raw:
            raise SampleError(
                f"missing '{entry}' entry (has {sorted(k for k in raw if not k.startswith('__'))})",
                reason=f"missing_{entry}",
            )


def skip_reason(exc: BaseException) -> str:
    """The category a failed sample is counted under: the error's `reason` (SampleError, VideoDecodeError,
    ClipTooShort carry one), else the exception's type name (an unexpected failure, still named)."""
    return str(getattr(exc, "reason", None) or type(exc).__name__)


def collate_skips(samples: Sequence[dict[str, Any]]) -> list[dict[str, int]]:
    """A batch's "skipped" entry: one {reason: count} per sample (a list, so a rank's slice of a global batch
    keeps exactly its samples' skips; src.trainers.skipped_samples sums them)."""
    return [{str(k): int(v) for k, v in (s.get("skipped") or {}).items()} for s in samples]


class TooManySkips(RuntimeError):
    """Every recent sample failed: the shards are unusable, so stop instead of looping forever."""


def get_rank_and_world_size() -> tuple[int, int]:
    """Rank and world size from torch.distributed if initialised, else RANK/WORLD_SIZE, else SLURM."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank_var, size_var in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_var in os.environ and size_var in os.environ:
            rank, size = int(os.environ[rank_var]), int(os.environ[size_var])
            if not 0 <= rank < size:
                raise ValueError(f"{rank_var}={rank} is not in [0, {size_var}={size})")
            return rank, size
    return 0, 1


def shuffled(items: Iterator[Any], buffer_size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Buffered shuffle: keep `buffer_size` items, emit a random one as each new item arrives."""
    if buffer_size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = int(rng.integers(len(buffer)))
        yield buffer[index]
        buffer[index] = item
    order = rng.permutation(len(buffer))
    for index in order:
        yield buffer[index]


class SkipGuard:
    """Counts skips since the last yield; raises TooManySkips when nothing usable turns up.

    `hint` ends the TooManySkips message: what to check for this kind of shard.
    """

    def __init__(
        self,
        limit: int,
        shards: Sequence[str],
        buffered: int = 0,
        *,
        logger: logging.Logger | None = None,
        hint: str = "check the shards and the data config",
        entries: str = "'mp4'",
        counts: Counter[str] | None = None,
    ) -> None:
        self.limit = limit
        self.buffered = buffered
        self.shards = shards
        self.logger = logger or _log
        self.hint = hint
        self.entries = entries
        self.pending: Counter[str] = Counter()  # skips since the last yield, per reason
        self.consecutive = 0
        self.shard_opens = 0
        self.last_reasons: list[str] = []
        self.counts: Counter[str] = counts if counts is not None else Counter()

    def skip(self, key: str, reason: str, category: str = "bad_sample") -> None:
        self.logger.warning("skipping sample %s: %s", key, reason)
        self.counts[category] += 1
        self.pending[category] += 1
        self.consecutive += 1
        self.last_reasons = (self.last_reasons + [f"{key}: {reason}"])[-3:]
        if self.consecutive >= self.limit:
            raise TooManySkips(
                f"{self.consecutive} consecutive samples failed in shards {list(self.shards)[:3]}"
                f"{' ...' if len(self.shards) > 3 else ''}; last reasons: {self.last_reasons}. {self.hint}"
            )

    def tar_error(self, exc: Exception) -> bool:
        """webdataset handler: a broken or missing tar counts as a skip; keep going."""
        self.skip("<tar>", f"{type(exc).__name__}: {exc}", "bad_tar")
        return True

    def opened_shard(self) -> None:
        self.shard_opens += 1
        if self.shard_opens > max(self.limit, 2 * len(self.shards)) + self.buffered:
            raise TooManySkips(
                f"{self.shard_opens} shards were read without one usable sample (shards "
                f"{list(self.shards)[:3]}); they may be empty or hold no {self.entries} entries"
            )

    def processed(self) -> None:
        """A sample was usable: the shards are not hopeless."""
        self.consecutive = self.shard_opens = 0

    def yielded(self) -> dict[str, int]:
        """The skips since the previous call, per reason (they ride on a sample being yielded); resets."""
        pending, self.pending = dict(self.pending), Counter()
        return pending


@dataclass
class IterState:
    """What one iteration of a dataset depends on besides its seed; fixed by the loader in the main process.

    `lanes`/`own_lanes`: the raw stream is dealt into `lanes` lanes (raw sample k goes to lane k % lanes) and this
    iteration processes only the lanes in `own_lanes` (a range), yielding one sample per owned lane per round.
    `resume`: per (worker, lane), how many raw samples of that stream were already consumed (skipped unread).
    `worker_offset`: DataLoader worker i plays stream worker (i + offset) % workers, so a resumed DataLoader, whose
    first batch always comes from worker 0, continues the round-robin where the interrupted one stopped."""

    epoch: int = 0
    pass_index: int = 0
    rank: int | None = None
    world_size: int | None = None
    lanes: int = 1
    own_lanes: tuple[int, int] = (0, 1)
    resume: dict[tuple[int, int], int] = field(default_factory=dict)
    worker_offset: int = 0


def stream_settings(data: Any, seed: int) -> dict[str, Any]:
    """`ShardSampleDataset`'s stream keywords from a `data:` config; `seed` is per rank."""
    return {
        "seed": seed,
        "resampled": bool(data.get("resampled", True)),
        "shuffle_buffer": data.shuffle_buffer,
        "decoded_cache_mb": data.get("decoded_cache_mb", 0),
    }


class ShardSampleDataset(IterableDataset):
    """Iterable of processed samples from webdataset shards; subclasses implement `process(raw, rng)`.

    The raw stream (shard order, shuffle buffer) draws from a numpy Generator seeded by (seed, rank, worker id,
    epoch, pass); `process` gets its own Generator seeded by that and the sample's raw position in the stream, so
    a raw sample can be passed over unread (a resumed run, another rank's lane) without shifting any later draw.
    `process` raises on any defect; the sample is then skipped, logged and counted. Each yielded sample carries
    "stream_position" = (worker, lane, raw samples consumed), which the loader turns into its resume state.
    """

    #: logger the skip warnings go to (subclasses set their module's logger)
    logger: logging.Logger = _log
    #: the end of a TooManySkips message: what to check
    skip_hint: str = "check the shards and the data config"
    #: the entries a usable sample has, for the "no usable sample" message
    required_entries: str = "'mp4'"
    #: None: `process` draws (crop, clip, stride) afresh per stream position. An int (`data.augmentation_seed`):
    #: one frozen draw per video, keyed on (this seed, the sample's key), whatever epoch, rank or position reads
    #: it; what a latent cache stores (src.data.cache), so an uncached run can train exactly like a cached one.
    augmentation_seed: int | None = None

    def __init__(
        self,
        shards: Sequence[str],
        *,
        seed: int = 0,
        resampled: bool = True,
        shuffle_buffer: int = 64,
        max_consecutive_skips: int = 1000,
        decoded_cache_mb: int = 0,
    ) -> None:
        super().__init__()
        if not shards:
            raise ValueError(
                f"{type(self).__name__} needs at least one shard; see src.data.shards.list_shards"
            )
        self.shards = list(shards)
        self.seed = int(seed)
        self.resampled = bool(resampled)
        self.shuffle_buffer = int(shuffle_buffer)
        self.max_consecutive_skips = int(max_consecutive_skips)
        self.state = IterState()
        self.cache = DecodedVideoCache(int(decoded_cache_mb) * 2**20)
        #: skipped samples per reason, in this process (each DataLoader worker keeps its own copy)
        self.skip_counts: Counter[str] = Counter()

    def set_state(
        self,
        *,
        epoch: int,
        pass_index: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        lanes: int = 1,
        own_lanes: tuple[int, int] = (0, 1),
        resume: dict[tuple[int, int], int] | None = None,
        worker_offset: int = 0,
    ) -> None:
        """Fix the epoch (and pass, rank, lanes, resume point) for the next iteration; the loader calls this in
        the main process."""
        if not 0 <= own_lanes[0] < own_lanes[1] <= lanes:
            raise ValueError(f"own_lanes={own_lanes} is not a range inside [0, lanes={lanes})")
        self.state = IterState(
            epoch,
            pass_index,
            rank,
            world_size,
            lanes,
            tuple(own_lanes),
            dict(resume or {}),
            int(worker_offset),
        )

    def set_epoch(self, epoch: int) -> None:
        self.state = IterState(epoch, 0, self.state.rank, self.state.world_size)

    def process(self, raw: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """One raw shard sample (bytes per entry, `__key__`, `__url__`) -> one training sample; raise if bad."""
        raise NotImplementedError

    def sample_rng(self, base: list[int], position: int, key: str) -> np.random.Generator:
        """The Generator `process` draws from for one sample (see `augmentation_seed`)."""
        if self.augmentation_seed is None:
            return np.random.default_rng([*base, position])
        return np.random.default_rng([int(self.augmentation_seed), zlib.crc32(key.encode("utf-8"))])

    # -- stream construction -------------------------------------------------------------------
    def _slot(self) -> tuple[int, int, int, int]:
        rank, world = self.state.rank, self.state.world_size
        if rank is None or world is None:
            rank, world = get_rank_and_world_size()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank, world, (worker + self.state.worker_offset) % workers, workers

    def _urls(self, rng: np.random.Generator, slot: int, slots: int, guard: SkipGuard) -> Iterator[dict]:
        if self.resampled:
            while True:
                guard.opened_shard()
                yield {"url": self.shards[int(rng.integers(len(self.shards)))]}
        order_rng = np.random.default_rng([self.seed, self.state.epoch, self.state.pass_index])
        shards = [self.shards[i] for i in order_rng.permutation(len(self.shards))]
        mine = shards[slot::slots] if len(shards) >= slots else shards
        for url in mine:
            guard.opened_shard()
            yield {"url": url}

    def _raw_samples(self, rng: np.random.Generator, guard: SkipGuard) -> Iterator[dict]:
        rank, world, worker, workers = self._slot()
        slot, slots = rank * workers + worker, world * workers
        samples = tarfile_samples(self._urls(rng, slot, slots, guard), handler=guard.tar_error)
        if not self.resampled and len(self.shards) < slots:
            # fewer shards than (rank, worker) slots: every slot reads all shards, keeps every slots-th sample
            samples = (s for i, s in enumerate(samples) if i % slots == slot)
        return shuffled(samples, self.shuffle_buffer, rng)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, world, worker, _ = self._slot()
        state = self.state
        base = [self.seed, rank, worker, state.epoch, state.pass_index]
        guard = SkipGuard(
            self.max_consecutive_skips,
            self.shards,
            buffered=max(self.shuffle_buffer, 0),
            logger=self.logger,
            hint=self.skip_hint,
            entries=self.required_entries,
            counts=self.skip_counts,
        )
        first, last = state.own_lanes
        queues: dict[int, deque] = {lane: deque() for lane in range(first, last)}
        carried: dict[int, Counter[str]] = {}  # per lane: skips not yet on a sample
        stream_skips: Counter[str] = Counter()  # broken tars: met by every rank reading this stream
        for position, raw in enumerate(self._raw_samples(np.random.default_rng(base), guard)):
            stream_skips.update(guard.yielded())
            lane = position % state.lanes
            if lane not in queues or position < state.resume.get((worker, lane), 0):
                continue  # another rank's lane, or consumed before the checkpoint: never decoded
            key = str(raw.get("__key__", "<no key>"))
            try:
                sample = self.process(raw, self.sample_rng(base, position, key))
            except Exception as exc:  # a bad sample must never stop the epoch; TooManySkips bounds this
                guard.skip(
                    f"{key} ({raw.get('__url__', '?')})", f"{type(exc).__name__}: {exc}", skip_reason(exc)
                )
                carried.setdefault(lane, Counter()).update(guard.yielded())
                continue
            guard.processed()
            # the skips ride on the next usable sample of the lane they happened in: a checkpoint that holds
            # this sample's position also holds theirs, so a resume neither recounts nor loses them (the
            # stream's own skips ride with the rank holding lane 0, so N ranks report a broken tar once)
            own = carried.pop(lane, Counter())
            sample["skipped"] = dict(own + stream_skips if first == 0 else own)
            stream_skips = Counter()
            sample["stream_position"] = (worker, lane, position + 1)
            queues[lane].append(sample)
            if len(queues[lane]) > self.max_consecutive_skips:
                raise TooManySkips(
                    f"lane {lane} of {state.lanes} is {len(queues[lane])} samples ahead of another lane whose samples "
                    f"all fail; check the shards {list(self.shards)[:3]}. {self.skip_hint}"
                )
            while all(queues.values()):  # one round: a sample per owned lane, in lane order
                for queue in queues.values():
                    yield queue.popleft()
        unreported = stream_skips + Counter(guard.yielded()) if first == 0 else Counter()
        for counts in carried.values():
            unreported.update(counts)
        for queue in queues.values():
            for sample in queue:
                unreported.update(sample["skipped"])
        if unreported:
            self.logger.warning(
                "%d skipped samples at the end of a finite pass were not reported in a batch: %s",
                sum(unreported.values()),
                dict(unreported),
            )


class _CollateWithPositions:
    """The dataset's collate, with the samples' "stream_position" moved out of the samples into a list."""

    def __init__(self, collate_fn: Callable[[Sequence[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        positions = [s.pop("stream_position", None) for s in samples]
        batch = self.collate_fn(samples)
        batch["stream_position"] = positions
        return batch


def _gather_per_rank(mine: dict[str, int], rank: int) -> dict[int, dict[str, int]]:
    """Every rank's resume positions (each rank reads its own stream); a collective when several ranks run, which
    is safe because Lightning builds a checkpoint's contents on every rank."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return {rank: mine}
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (rank, mine))
    return dict(gathered)


class ExactBatchLoader:
    """Yields exactly `batches_per_epoch` collated batches per rank and epoch (so DDP ranks stay in step).

    Each epoch builds a fresh DataLoader after fixing the dataset's epoch, rank, world size and lanes in the main
    process. A finite (resampled=False) stream that runs dry is restarted as a new pass.

    `split_global_batch`: every rank reads the raw stream a single process would read, dealt into G = batch_size
    x world size lanes; rank r decodes only lanes [r*b, (r+1)*b), so each rank decodes only its own slice of the
    global batch, and a bad sample is replaced by the next sample of its own lane, whatever the world size. So N
    ranks x b train on exactly the global batches of one process x N*b.

    Resume: the loader's state records, per rank, (DataLoader worker, lane) -> raw samples consumed; a resumed
    loader passes over those raw samples in the tar reader without decoding them and yields what the
    uninterrupted loader would have yielded next.
    """

    def __init__(
        self,
        dataset: ShardSampleDataset,
        *,
        collate_fn: Callable[[Sequence[dict[str, Any]]], dict[str, Any]],
        batch_size: int,
        num_workers: int,
        batches_per_epoch: int,
        seed: int,
        pin_memory: bool = False,
        split_global_batch: bool = False,
    ) -> None:
        if batch_size < 1 or batches_per_epoch < 1 or num_workers < 0:
            raise ValueError(
                f"need batch_size >= 1, batches_per_epoch >= 1 and num_workers >= 0, got {batch_size}, "
                f"{batches_per_epoch}, {num_workers}"
            )
        self.dataset = dataset
        self.collate_fn = collate_fn
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.pin_memory = pin_memory
        self.split_global_batch = bool(split_global_batch)
        self.epoch = 0
        # what a checkpoint stores: epoch, batches yielded in it, the pass, and the raw positions per (worker, lane)
        self._position: tuple[int, int, int, int] = (0, 0, 0, 0)  # + batches yielded in the pass
        self._consumed: dict[tuple[int, int], int] = {}
        self._resume: tuple[int, int, dict[tuple[int, int], int] | None] | None = None

    @classmethod
    def from_config(
        cls,
        dataset: ShardSampleDataset,
        data: Any,
        seed: int,
        collate_fn: Callable[[Sequence[dict[str, Any]]], dict[str, Any]],
    ) -> ExactBatchLoader:
        """The training loader from a `data:` config (batch_size, num_workers, batches_per_epoch,
        split_global_batch); `seed` is per rank."""
        return cls(
            dataset,
            collate_fn=collate_fn,
            batch_size=data.batch_size,
            num_workers=data.num_workers,
            batches_per_epoch=data.batches_per_epoch,
            seed=seed,
            split_global_batch=bool(data.get("split_global_batch", False)),
        )

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch of the next iteration (e.g. when resuming); otherwise it counts up."""
        self.epoch = int(epoch)

    def stream_slot(self, rank: int, world: int) -> tuple[int, int]:
        """The (rank, world size) whose sample stream this rank reads: its own, or with `split_global_batch`
        the single stream a one-process run reads."""
        return (0, 1) if self.split_global_batch else (rank, world)

    def lanes(self, rank: int, world: int) -> tuple[int, tuple[int, int]]:
        """(lanes, owned lane range) of this rank: one lane of its own stream, or with `split_global_batch` the
        rank's `batch_size` lanes out of the global batch's."""
        if not self.split_global_batch:
            return 1, (0, 1)
        return self.batch_size * world, (rank * self.batch_size, (rank + 1) * self.batch_size)

    def rank_slice(
        self, batch: dict[str, Any], rank: int, world: int, epoch: int, index: int
    ) -> dict[str, Any]:
        """The batch plus each sample's global index, "sample_index" (int64, `(batch_size,)`), and the first of
        them as a Python int, "first_sample_index" (read on the host without a device sync).

        Samples are numbered in the order of the epoch's global batches: batch `index` of epoch `epoch` holds
        indices `(epoch * batches_per_epoch + index) * G + [0, G)` with G = batch_size x world size, rank r the
        r-th `batch_size` of them. With `split_global_batch` that is each sample's position in the one stream a
        single process reads, whatever the world size; the model keys its noise, timesteps and dropout on it
        (src.trainers.sample_draws), and a resumed loader replays the same numbering."""
        lo = rank * self.batch_size
        first = (epoch * self.batches_per_epoch + index) * self.batch_size * world + lo
        out = dict(batch)
        out["sample_index"] = torch.arange(first, first + self.batch_size, dtype=torch.int64)
        out["first_sample_index"] = first
        return out

    def state_dict(self) -> dict[str, Any]:
        """The stream's position; Lightning saves it in checkpoints so a resumed run continues the same batches
        without decoding the samples already used."""
        epoch, batches, pass_index, in_pass = self._position
        rank, _ = get_rank_and_world_size()
        mine = {f"{w}:{lane}": n for (w, lane), n in self._consumed.items()}
        return {
            "epoch": epoch,
            "batches": batches,
            "pass": pass_index,
            "pass_batches": in_pass,
            "positions": _gather_per_rank(mine, rank),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at a saved position: the next iteration starts in the saved pass and passes over the raw
        samples already used without decoding them (or, for a state without this rank's positions, from an
        older format or another world size, replays the epoch's stream and drops the batches already used).

        A position at the end of an epoch stays in that epoch: its iteration yields nothing, and the next epoch's
        stream starts whole at the iteration after. (Lightning, resumed from a checkpoint written on an epoch's
        last batch, may first ask for that epoch's remainder; rolling over to the next epoch here made that one
        request take the next epoch's first batch and the following iteration start the epoch after.)"""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        rank, _ = get_rank_and_world_size()
        positions = state.get("positions", {}).get(rank)
        resume = (
            None
            if positions is None
            else {tuple(int(x) for x in key.split(":")): int(n) for key, n in positions.items()}
        )
        pass_index = int(state.get("pass", 0)) if resume is not None else 0
        in_pass = int(state.get("pass_batches", batches)) if resume is not None else 0
        self.epoch = epoch
        self._resume = (batches, pass_index, in_pass, resume)

    def _pass(
        self,
        epoch: int,
        pass_index: int,
        rank: int,
        world: int,
        resume: dict[tuple[int, int], int],
        in_pass: int = 0,
    ) -> DataLoader:
        stream_rank, stream_world = self.stream_slot(rank, world)
        lanes, own = self.lanes(rank, world)
        self.dataset.set_state(
            epoch=epoch,
            pass_index=pass_index,
            rank=stream_rank,
            world_size=stream_world,
            lanes=lanes,
            own_lanes=own,
            resume=resume,
            worker_offset=in_pass % max(self.num_workers, 1),
        )
        state = np.random.SeedSequence([self.seed, stream_rank, epoch, pass_index]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_CollateWithPositions(self.collate_fn),
            drop_last=True,
            pin_memory=self.pin_memory,
            generator=generator,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch
        self.epoch += 1
        skip, pass_index, in_pass, resume = self._resume or (0, 0, 0, {})
        self._resume = None
        self._position = (epoch, skip, pass_index, in_pass)
        self._consumed = dict(resume or {})
        if skip >= self.batches_per_epoch:
            return  # resumed at the end of this epoch: nothing of it is left (and nothing to replay)
        # without positions for this rank (an older checkpoint, another world size): decode and drop `skip` batches
        replay = 0 if resume is not None else skip
        produced = skip if resume is not None else 0
        rank, world = get_rank_and_world_size()
        while produced < self.batches_per_epoch:
            batches = iter(self._pass(epoch, pass_index, rank, world, self._consumed, in_pass))
            got = 0
            try:
                for batch in batches:
                    positions = batch.pop("stream_position")
                    produced += 1
                    got += 1
                    in_pass += 1
                    if produced > replay:
                        self._consumed.update({(w, lane): n for w, lane, n in positions})
                        self._position = (epoch, produced, pass_index, in_pass)
                        yield self.rank_slice(batch, rank, world, epoch, produced - 1)
                    if produced == self.batches_per_epoch:
                        break
            finally:
                del batches  # shuts the workers of this pass down
            if got == 0:
                raise RuntimeError(
                    f"rank {rank} got no complete batch of {self.batch_size} from {len(self.dataset.shards)} "
                    f"shard(s) in a whole pass; use resampled=True, a smaller batch size, or more data"
                )
            pass_index += 1
            in_pass = 0
            self._consumed = {}
